"""Per-user policy: an admin gives users and groups their own job caps and limit maxima."""

from __future__ import annotations

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from tests.conftest import VIEWERS
from tests.executor.conftest import SLEEP, as_user, ask_as, refused_start, run_as

# carol is in the viewers group; bob has an entry of his own; alice gets the global settings.
ALLOWANCES = (
    "--Policy.max_jobs_per_user=1",
    "--Policy.max_memory_limit=256",
    f"--Policy.group_limits={{'{VIEWERS}': {{'max_memory_limit': 1024}}, 'jwtest-admins': {{'max_jobs': 3}}}}",
    "--Policy.user_limits={'jwtest-bob': {'max_jobs': 2, 'max_memory_limit': 512, 'max_job_timeout': 60}}",
)


@pytest.mark.executor_flags(*ALLOWANCES)
def test_each_user_gets_their_own_entry_else_their_groups_else_the_global_maxima(daemon, users):
    def memory_answer(user: str, mb: int) -> str:
        job = ask_as(daemon, user, "run", {"command": ["true"], "limits": {"memory_mb": mb}})
        return job if isinstance(job, str) else "ran"

    assert memory_answer("jwtest-alice", 256) == "ran"
    assert memory_answer("jwtest-alice", 512) == "refused: invalid"
    assert memory_answer("jwtest-bob", 512) == "ran"
    assert memory_answer("jwtest-bob", 1024) == "refused: invalid"
    assert ask_as(daemon, "jwtest-bob", "run", {"command": ["true"], "limits": {"timeout_s": 120}}) == (
        "refused: invalid"
    )


@pytest.mark.executor_flags(*ALLOWANCES)
def test_a_refusal_names_the_users_own_maximum(daemon, users):
    def refusal() -> str:
        try:
            # Above bob's 512 MiB and below any test host's RAM (the v2 VM has 2 GiB): the host's
            # figure is checked first and would be the one named.
            Client(daemon.socket).run({"command": ["true"], "limits": {"memory_mb": 768}})
        except WorkerError as exc:
            return str(exc)
        return "ran"

    assert as_user("jwtest-bob", refusal) == "memory limit: 768 MiB is above the maximum of 512 MiB"


@pytest.mark.executor_flags(*ALLOWANCES)
def test_defaults_are_capped_at_the_users_own_maximum(daemon, users):
    job = run_as(daemon, "jwtest-alice", {"command": ["true"]})
    assert job.limits.memory_mb == 256
    job = run_as(daemon, "jwtest-bob", {"command": ["true"], "limits": {}})
    assert job.limits.memory_mb == 512 and job.limits.timeout_s == 60


@pytest.mark.executor_flags(*ALLOWANCES)
def test_each_user_runs_as_many_jobs_at_once_as_their_cap_and_the_rest_wait(daemon, users):
    alice = [run_as(daemon, "jwtest-alice", SLEEP).status for _ in range(2)]
    bob = [run_as(daemon, "jwtest-bob", SLEEP).status for _ in range(3)]
    assert alice == ["RUNNING", "QUEUED"]
    assert bob == ["RUNNING", "RUNNING", "QUEUED"]


@pytest.mark.executor_flags(*ALLOWANCES)
def test_capabilities_show_each_caller_their_own_allowance_and_nobody_elses(daemon, users):
    bob = as_user("jwtest-bob", lambda: _capabilities(daemon))
    carol = as_user("jwtest-carol", lambda: _capabilities(daemon))
    alice = as_user("jwtest-alice", lambda: _capabilities(daemon))
    assert (bob["max_jobs_per_user"], bob["max_memory_limit"], bob["max_job_timeout"]) == (2, 512, 60)
    assert (carol["max_jobs_per_user"], carol["max_memory_limit"]) == (1, 1024)
    assert (alice["max_jobs_per_user"], alice["max_memory_limit"]) == (1, 256)
    assert "user_limits" not in alice and "group_limits" not in alice


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("--Policy.user_limits={'jwtest-bob': {'max_ram': 1}}", "unknown key 'max_ram'"),
        ("--Policy.group_limits={'staff': {'max_jobs': -1}}", "a whole number >= 0, or None for no maximum"),
        ("--Policy.group_limits={'staff': 4}", "a dict of max_jobs"),
        ("--Policy.default_network=wifi", "'wifi' is not none, host, isolated or auto"),
        ("--Policy.allowed_networks=['wifi']", "Policy.allowed_networks: 'wifi' is not a network mode"),
        ("--Policy.user_limits={'jwtest-bob': {'networks': []}}", "a list of network modes, at least one of"),
        ("--Policy.egress_deny=['10.0.0.0/8:99999']", "port out of range"),
    ],
)
def test_a_bad_policy_stops_the_executor_at_start_with_one_line(setting, message, tmp_path):
    result = refused_start(tmp_path, setting)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()


def _capabilities(daemon) -> dict:
    return Client(daemon.socket).capabilities()
