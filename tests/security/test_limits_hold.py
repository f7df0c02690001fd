"""Limits always hold: whatever a request says or leaves out, through every door (the socket as an
unprivileged user, REST through a real Jupyter server, the CLI, the Python API, an admin naming an
owner, a held job), a job's limits are within the policy: absent or null means the default lowered
to the maximum, more than the maximum or a value that is not one is refused, and the cgroup the job
runs in holds what its record says."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_worker import jobs
from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from jupyter_worker.limits import BY_FIELD, LIMITS
from tests.executor.conftest import as_user, ask_as, started_daemon, wait_for

# Maxima for every limit that has one; each default the table gives is above it (memory 1024,
# CPU 100, processes 512, timeout 3600, /tmp 64, disk 1024), so the executor lowers them at start.
MAXIMA = {"memory_mb": 256, "cpu_percent": 50, "pids": 64, "timeout_s": 60.0, "tmp_mb": 16}
MAXIMA |= {"disk_mb": 256} if "disk_mb" in BY_FIELD else {}
POLICY = [
    *(f"--Policy.{BY_FIELD[name].max_setting}={value}" for name, value in MAXIMA.items()),
    "--Policy.max_net_limit=1M",
    "--Policy.user_limits={'jwtest-bob': {'max_memory_limit': 128}}",
]
# io_bps has no default (a host may have no block device to throttle) and cpuset no maximum: it
# only narrows where a job runs, its CPU limit caps how much.
EXPECTED = {**dict.fromkeys(row.field for row in LIMITS), **MAXIMA, "net_bps": 1 << 20}
HUGE = {name: BY_FIELD[name].high for name in MAXIMA}
NOT_VALUES = ["lots", "", "1e400", [], {"value": 1}, True, -1, "NaN"]
ALICE = "jwtest-alice"


@pytest.fixture(scope="module")
def guarded(users):
    """An executor whose admin set a maximum for every limit."""
    with started_daemon(POLICY) as daemon:
        yield daemon


def stored_limits(daemon, job_id: str) -> dict:
    """The limits as the executor keeps them (read back as root, not from the reply)."""
    with Client(daemon.socket) as client:
        return client.get(job_id).limits.to_dict()


@pytest.mark.parametrize("limits", [None, {}, dict.fromkeys(MAXIMA), dict.fromkeys(EXPECTED)])
def test_a_request_leaving_out_or_nulling_every_limit_still_gets_each_maximum_over_the_socket(guarded, limits):
    job = {"command": ["true"]} if limits is None else {"command": ["true"], "limits": limits}
    record = as_user(ALICE, lambda: Client(guarded.socket).run(job))
    assert record.limits.to_dict() == EXPECTED
    assert stored_limits(guarded, record.id) == EXPECTED


@pytest.mark.parametrize("field", sorted(MAXIMA))
def test_asking_above_a_maximum_over_the_socket_is_refused(guarded, field):
    for value in (HUGE[field], f"{HUGE[field]:g}", MAXIMA[field] * 2):
        asked = {"command": ["true"], "limits": {field: value}}
        assert ask_as(guarded, ALICE, "run", asked) == "refused: invalid"


@pytest.mark.parametrize("field", sorted(EXPECTED))
@pytest.mark.parametrize("value", NOT_VALUES)
def test_a_limit_that_is_not_a_value_over_the_socket_is_refused_not_dropped(guarded, field, value):
    answer = ask_as(guarded, ALICE, "run", {"command": ["true"], "limits": {field: value}})
    assert answer == "refused: invalid", (field, value, answer)


def test_a_limit_given_as_text_with_a_unit_is_taken_within_its_maximum(guarded):
    asked = {"memory_mb": "128M", "timeout_s": "30s", "tmp_mb": "8M", "pids": "32", "cpu_percent": "25%"}
    record = as_user(ALICE, lambda: Client(guarded.socket).run({"command": ["true"], "limits": asked}))
    assert stored_limits(guarded, record.id) == {
        **EXPECTED,
        "memory_mb": 128,
        "timeout_s": 30.0,
        "tmp_mb": 8,
        "pids": 32,
        "cpu_percent": 25,
    }
    too_much = {"command": ["true"], "limits": {"memory_mb": "1G"}}
    assert ask_as(guarded, ALICE, "run", too_much) == "refused: invalid"


def test_an_unknown_limit_cannot_smuggle_a_setting_past_the_merge(guarded):
    for name in ("memory", "max_memory_limit", "memory_mb ", "MEMORY_MB"):
        asked = {"command": ["true"], "limits": {name: 1 << 20}}
        assert ask_as(guarded, ALICE, "run", asked) == "refused: invalid"


def test_host_networking_cannot_shed_the_network_limit(guarded):
    """The admin's network maximum applies to every job; the host's network cannot hold it, so a
    request for it is refused rather than run without it, even from root (who may use host)."""
    with Client(guarded.socket) as client, pytest.raises(WorkerError, match="network limit") as refused:
        client.run({"command": ["true"], "network": "host"})
    assert refused.value.reason.value == "invalid"


def test_an_admin_naming_an_owner_gets_that_owners_maxima_not_more(guarded):
    with Client(guarded.socket) as client:
        for_bob = client.run({"command": ["true"], "owner": "jwtest-bob", "limits": {"memory_mb": None}})
        assert for_bob.limits.memory_mb == 128
        with pytest.raises(WorkerError, match="above the maximum of 128"):
            client.run({"command": ["true"], "owner": "jwtest-bob", "limits": {"memory_mb": 256}})
    mine = as_user("jwtest-bob", lambda: Client(guarded.socket).run({"command": ["true"]}))
    assert mine.limits.memory_mb == 128


def test_a_held_job_is_merged_like_any_other(guarded):
    """The merge comes before the holder is looked at: a holder never changes what a job gets."""
    asked = {"command": ["true"], "holder": "some-server", "limits": {"memory_mb": 1 << 20}}
    assert ask_as(guarded, ALICE, "run", asked) == "refused: invalid"


def test_the_cli_and_the_python_api_get_the_same_merge(guarded, users):
    """Both send what their flags and keywords make (flags.job_request); the merge is the executor's."""
    folder = os.path.join(guarded.folder, "alice")  # the daemon's own folder: 0755, removed with it
    os.mkdir(folder, 0o755)
    os.chown(folder, users[ALICE].pw_uid, users[ALICE].pw_gid)

    def python_api() -> tuple[dict, str]:
        job = jobs.run(["true"], socket=guarded.socket, cwd=folder)
        try:
            jobs.run(["true"], socket=guarded.socket, cwd=folder, memory_mb="4G")
        except WorkerError as exc:
            return job.record.limits.to_dict(), exc.reason.value
        return job.record.limits.to_dict(), "ran"

    limits, refusal = as_user(ALICE, python_api)
    assert (limits, refusal) == (EXPECTED, "invalid")
    cli = ["/opt/jupyter-worker/venv/bin/jupyter-worker", "--socket", guarded.socket, "run", "--json"]
    entry = users[ALICE]
    common = {"user": entry.pw_uid, "group": entry.pw_gid, "capture_output": True, "text": True, "cwd": folder}
    ran = subprocess.run([*cli, "--", "true"], check=False, **common)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["limits"] == EXPECTED
    refused = subprocess.run([*cli, "--max-pids", "100000", "--", "true"], check=False, **common)
    assert refused.returncode != 0 and "process limit" in refused.stderr


def test_the_kernel_enforces_the_lowered_defaults_of_a_job_that_asked_for_nothing(guarded):
    """Memory (an OOM kill at the 256 MiB maximum), /tmp (16 MiB) and processes (pids.max 64) of a
    job that asked for no limit at all."""
    grow = "x = []\nwhile True: x.append(bytearray(16 << 20))"
    hog = as_user(ALICE, lambda: Client(guarded.socket).run({"command": ["python3", "-c", grow]}))
    tmp = as_user(ALICE, lambda: Client(guarded.socket).run({"command": ["df", "-m", "--output=size", "/tmp"]}))
    sleeper = as_user(ALICE, lambda: Client(guarded.socket).run({"command": ["sleep", "30"]}))
    with Client(guarded.socket) as client:
        ended = wait_for(lambda: (j := client.get(hog.id)).finished and j, what="the memory hog's end")
        assert ended.reason.value == "oom"
        wait_for(lambda: client.get(tmp.id).finished, what="df")
        output = b"".join(chunk.data for chunk in client.logs(tmp.id)[0]).decode()
        assert output.split()[-1] == "16", output
        wait_for(lambda: client.get(sleeper.id).status == "RUNNING", what="the sleeper")
        # the job's processes and its init: the engine adds one (sandbox/cgroups.py ENFORCED)
        assert _pids_max(guarded, sleeper.id) == str(MAXIMA["pids"] + 1)
        client.stop(sleeper.id, grace_s=0)


def _pids_max(daemon, job_id: str) -> str:
    """pids.max of the job's cgroup, found by the name its supervisor wrote in the result file."""
    result = os.path.join(daemon.state_dir, "jobs", job_id, "result")

    def cgroup() -> str | None:
        try:
            with open(result) as f:
                return json.loads(f.read() or "{}").get("cgroup")
        except OSError:
            return None

    name = wait_for(cgroup, what="its cgroup")
    leaf = os.path.basename(str(name).rstrip("/"))
    for top, dirs, files in os.walk("/sys/fs/cgroup"):
        if os.path.basename(top) == leaf and "pids.max" in files:
            with open(os.path.join(top, "pids.max")) as f:
                return f.read().strip()
        if top.count("/") > 10:
            dirs.clear()
    raise AssertionError(f"no pids cgroup named {leaf}")


# ---- REST, through a real Jupyter server (in this process, as root: root's allowance is the global one)


@pytest.fixture(scope="module")
def executor_daemon(guarded):
    """The executor the Jupyter server under test talks to: the one with the maxima above."""
    return guarded


@pytest.fixture
def jp_server_config(executor_daemon):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_worker": True}, "allow_unauthenticated_access": False},
        "JupyterWorker": {"socket": executor_daemon.socket, "embedded_executor": False},
    }


async def post(jp_fetch, body: dict) -> tuple[int, dict]:
    try:
        response = await jp_fetch("api", "worker", "jobs", method="POST", body=json.dumps(body))
    except HTTPClientError as exc:
        return exc.code, json.loads(exc.response.body)
    return response.code, json.loads(response.body)


@pytest.mark.parametrize("limits", [None, {}, dict.fromkeys(MAXIMA), dict.fromkeys(EXPECTED)])
async def test_a_rest_request_leaving_out_or_nulling_every_limit_still_gets_each_maximum(
    jp_fetch, executor_daemon, limits
):
    body = {"command": ["true"]} if limits is None else {"command": ["true"], "limits": limits}
    code, job = await post(jp_fetch, body)
    assert code == 201, job
    assert job["limits"] == EXPECTED
    assert stored_limits(executor_daemon, job["id"]) == EXPECTED


@pytest.mark.parametrize("field", sorted(MAXIMA))
async def test_a_rest_request_above_a_maximum_or_not_a_value_is_refused(jp_fetch, field):
    for value in (HUGE[field], MAXIMA[field] * 2, *NOT_VALUES):
        code, error = await post(jp_fetch, {"command": ["true"], "limits": {field: value}})
        assert (code, error.get("reason")) == (400, "invalid"), (field, value, error)


async def test_a_rest_request_for_host_networking_cannot_shed_the_network_limit(jp_fetch):
    code, error = await post(jp_fetch, {"command": ["true"], "network": "host"})
    assert (code, error.get("reason")) == (400, "invalid"), error


def test_a_default_above_its_maximum_is_warned_of_at_start_and_no_job_gets_it(users):
    flags = ["--Policy.max_memory_limit=256", "--Policy.default_memory_limit=512"]
    flags.append("--Policy.user_limits={'jwtest-bob': {'max_memory_limit': 1024}}")
    with started_daemon(flags) as daemon:
        record = as_user(ALICE, lambda: Client(daemon.socket).run({"command": ["true"]}))
        assert record.limits.memory_mb == 256
        record = as_user("jwtest-bob", lambda: Client(daemon.socket).run({"command": ["true"]}))
        assert record.limits.memory_mb == 512  # bob's own maximum is higher: the default holds
        process = daemon.process
        daemon.stop()
        assert b"Policy.default_memory_limit (512 MiB) is above Policy.max_memory_limit" in process.stderr.read()
