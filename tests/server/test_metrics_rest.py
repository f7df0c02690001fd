"""Metric history, queue place and the host's figures through REST: two users' own Jupyter servers
on one real executor."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.executor.conftest import started_daemon
from tests.server.conftest import UserServer

USERS_2 = ("jwtest-alice", "jwtest-bob")


@pytest.fixture(scope="module")
def servers(users):
    """alice's and bob's servers on an executor with one running slot."""
    with started_daemon(["--Policy.max_concurrent_jobs=1", "--Policy.max_jobs_per_user=0"]) as executor:
        with contextlib.ExitStack() as stack:
            yield [stack.enter_context(contextlib.closing(UserServer(u, executor.socket))) for u in USERS_2]


def until(predicate, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_ended_jobs_history_is_served_to_its_owner_and_not_found_for_another_user(servers, conforms):
    alice, bob = servers
    code, job = alice.call("POST", "jobs", {"command": ["sleep", "2"], "limits": {"memory_mb": 128}})
    assert code == 201
    until(lambda: alice.call("GET", f"jobs/{job['id']}")[1]["status"] == "COMPLETED", "the job to end")
    code, history = alice.call("GET", f"jobs/{job['id']}/metrics")
    assert code == 200
    conforms(history, "MetricHistory")
    assert history["samples"] and history["memory_limit_bytes"] == 128 << 20
    assert history["cpu_limit_percent"] == 100.0
    code, error = bob.call("GET", f"jobs/{job['id']}/metrics")
    assert (code, error["reason"]) == (404, "not_found")
    code, error = alice.call("GET", "jobs/0123abcd/metrics")
    assert (code, error["reason"]) == (404, "not_found")


def test_a_queued_job_says_its_place_and_reason_over_rest(servers, conforms):
    alice, _ = servers
    running = alice.call("POST", "jobs", {"command": ["sleep", "300"]})[1]
    code, waiting = alice.call("POST", "jobs", {"command": ["sleep", "300"]})
    assert code == 201 and conforms(waiting, "Job")["status"] == "QUEUED"
    assert waiting["queue"] == {"position": 1, "reason": "1 of 1 running slots in use"}
    assert alice.call("GET", f"jobs/{waiting['id']}")[1]["queue"] == waiting["queue"]
    assert alice.call("GET", f"jobs/{running['id']}")[1]["queue"] is None
    for job in (waiting, running):
        alice.call("POST", f"jobs/{job['id']}/stop", {"grace_s": 0})


def test_more_memory_than_the_host_has_is_a_400_naming_it_and_capabilities_show_the_host(servers, conforms):
    alice, _ = servers
    code, error = alice.call("POST", "jobs", {"command": ["true"], "limits": {"memory_mb": 999999}})
    assert (code, error["reason"]) == (400, "invalid")
    assert error["message"].startswith("memory limit: 999999 MiB is more than this host has (")
    code, capabilities = alice.call("GET", "capabilities")
    policy = conforms(capabilities, "Capabilities")["policy"]
    memory = next(row for row in policy["limits"] if row["field"] == "memory_mb")
    assert memory["host"] == policy["host"]["memory_mb"] > 0
    assert memory["maximum"] <= memory["host"]
