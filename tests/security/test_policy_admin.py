"""The policy an admin needs: which network modes each user may use, through every door (the socket
as the user, REST through the user's own Jupyter server, the CLI), and a policy that names users or
groups this host does not know refused at start rather than quietly granting nothing.

On this executor `host` is off for ordinary users (the default), the admin granted it to alice's
group, and the default mode is `host`: bob's jobs that name no mode fall back to one he may use."""

from __future__ import annotations

import grp
import subprocess
import sys

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import ErrorReason, WorkerError
from tests.executor.conftest import as_user, refused_start, started_daemon, wait_for
from tests.server.conftest import UserServer

ALICE, BOB = "jwtest-alice", "jwtest-bob"
HOST_JOB = {"command": ["true"], "network": "host"}


@pytest.fixture(scope="module")
def guarded(users):
    """host granted to alice's own group only, and made the default for everyone."""
    alices_group = grp.getgrgid(users[ALICE].pw_gid).gr_name
    flags = [
        f"--Policy.group_limits={{'{alices_group}': {{'networks': ['none', 'isolated', 'host']}}}}",
        "--Policy.default_network=host",
        # bob's fallback may be the isolated network: a bridge and documentation range of this test's own
        "--Policy.isolated_bridge=jwt-brpol",
        "--Policy.isolated_subnet=198.51.100.128/26",
    ]
    with started_daemon(flags) as daemon:
        yield daemon


def jobs_of(daemon, owner: str) -> list:
    with Client(daemon.socket) as root:
        return [job for job in root.list(limit=1000)[0] if job.owner == owner]


def test_a_user_asking_for_the_host_network_over_the_socket_is_forbidden_and_no_job_is_made(guarded):
    before = len(jobs_of(guarded, BOB))
    with pytest.raises(WorkerError) as refused:
        as_user(BOB, lambda: Client(guarded.socket).run(HOST_JOB))
    assert refused.value.reason is ErrorReason.FORBIDDEN
    assert "network 'host' is not allowed for jwtest-bob" in refused.value.message
    assert "Policy.allowed_networks" in refused.value.message
    assert len(jobs_of(guarded, BOB)) == before


def test_a_user_asking_for_the_host_network_through_their_jupyter_server_is_forbidden(guarded):
    server = UserServer(BOB, guarded.socket)
    try:
        before = len(jobs_of(guarded, BOB))
        code, error = server.call("POST", "jobs", HOST_JOB)
        assert (code, error["reason"]) == (403, "forbidden")
        assert "network 'host' is not allowed" in error["message"]
        assert "host" not in server.call("GET", "capabilities")[1]["policy"]["network_modes"]
        assert len(jobs_of(guarded, BOB)) == before
    finally:
        server.close()


def test_a_user_asking_for_the_host_network_with_the_cli_is_refused_with_the_reason(guarded):
    cli = [sys.executable, "-m", "jupyter_worker.cli", "--socket", guarded.socket]
    command = ["runuser", "-u", BOB, "--", *cli, "run", "--network", "host", "--", "true"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == ErrorReason.FORBIDDEN.exit_code
    assert "network 'host' is not allowed" in result.stderr and "Traceback" not in result.stderr


def test_a_user_whose_default_network_is_not_allowed_gets_one_that_is(guarded):
    job = as_user(BOB, lambda: Client(guarded.socket).run({"command": ["true"]}))
    assert job.network in ("none", "isolated")
    capabilities = as_user(BOB, lambda: Client(guarded.socket).capabilities())
    assert capabilities["allowed_networks"] == ["none", "isolated"]
    assert capabilities["default_network"] == job.network


def test_a_group_entry_granting_the_host_network_lets_its_members_use_it(guarded):
    job = as_user(ALICE, lambda: Client(guarded.socket).run(HOST_JOB))
    assert job.network == "host"
    with Client(guarded.socket) as root:
        final = wait_for(lambda: root.get(job.id).finished and root.get(job.id), what="alice's host job")
    assert (final.status, final.exit_code) == ("COMPLETED", 0)
    assert as_user(ALICE, lambda: Client(guarded.socket).run({"command": ["true"]})).network == "host"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "--Policy.user_limits={'jwtest-nosuch': {'max_jobs': 1}}",
            "Policy.user_limits names 'jwtest-nosuch', no user here",
        ),
        (
            "--Policy.group_limits={'jwtest-nogroup': {'networks': ['host']}}",
            "Policy.group_limits names 'jwtest-nogroup', no group here",
        ),
        ("--admin-group=jwtest-nogroup", "ExecutorApp.admin_group names 'jwtest-nogroup', no group here"),
        ("--viewer-group=jwtest-nogroup", "ExecutorApp.viewer_group names 'jwtest-nogroup', no group here"),
    ],
)
def test_a_policy_naming_an_unknown_user_or_group_stops_the_executor_at_start_with_one_line(setting, message, tmp_path):
    result = refused_start(tmp_path, setting)
    assert result.returncode == 2
    assert f"configuration: {message}" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "state").exists()
