"""Robust input at the executor's socket: a real unprivileged user (alice) sends frames no client
would, generated (Hypothesis, derandomized: the same examples every run) and hand-picked: wrong
types, deep nesting, NaN, Infinity, 1e308, whole numbers past 64 bits, huge arrays and strings,
bad UTF-8, lone surrogates, negative and huge numbers in every numeric field, every operation and
every field of a job request. Each gets an answer (ok, or an error with a reason and a message),
the executor logs no traceback, stays up, and the jobs that ran before the fuzzing (alice's own and
bob's) still run afterwards and end normally: none is lost.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import given

from jupyter_worker import protocol
from jupyter_worker.client import Client
from jupyter_worker.sandbox import LaunchSpec
from jupyter_worker.spec import JobStatus, Reason
from tests.executor.conftest import as_user, run_as, wait_for
from tests.security.conftest import Connector, exchange, is_answer, stop_and_see_them_end_normally
from tests.security.fuzzing import FUZZ, frame, raw, requests

ALICE, BOB = "jwtest-alice", "jwtest-bob"
# A job that ends of its own accord when stopped, and says so: "ends normally" is checkable.
POLITE = ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; while :; do sleep 0.1; done"]

# Frames that are not a request's JSON at all, or are, at the edges of what a frame may hold.
EXTREME_FRAMES = {
    "not JSON": frame(b"{op: hello"),
    "bad UTF-8": frame(b'{"op": "get", "job_id": "\xff\xfe"}'),
    "a lone surrogate": frame(b'{"op": "get", "job_id": "\\ud800"}'),
    "NaN": frame(b'{"op": "stop", "job_id": "0", "grace_s": NaN}'),
    "Infinity": frame(b'{"op": "stop", "job_id": "0", "grace_s": Infinity}'),
    "1e400": frame(b'{"op": "logs", "job_id": "0", "offset": 1e400}'),
    "a 5000-digit number": frame(b'{"op": "logs", "job_id": "0", "offset": ' + b"9" * 5000 + b"}"),
    "a JSON array": frame(b"[1, 2]"),
    "a JSON string": frame(b'"hello"'),
    "empty": frame(b""),
    "nested 100000 deep": frame(b'{"op": "run", "job": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "a 3 MiB string": raw({"op": "run", "job": {"command": ["echo", "x" * (3 << 20)]}}),
    "a 600000-item array": raw({"op": "run", "job": {"command": ["x"] * 600_000}}),
    "a 3 MiB id": raw({"op": "capabilities", "id": "i" * (3 << 20)}),
    "an id nested deep": raw({"op": "capabilities", "id": json.loads("[" * 15 + "]" * 15)}),
    "an unhashable op": raw({"op": ["get"], "job_id": "0"}),
    "a frame over the limit": protocol.LENGTH.pack(protocol.MAX_FRAME + 1),
    "a frame of 4 GiB": protocol.LENGTH.pack(0xFFFFFFFF),
}


@pytest.fixture(scope="module")
def fuzzed(logged_daemon, users):
    """The executor under fuzzing, with two jobs that run before it starts: bob's, which alice cannot
    touch, and alice's own, which her fuzzed requests may stop (then it ends STOPPED, never lost)."""
    daemon, drain = logged_daemon
    long_jobs = [run_as(daemon, BOB, {"command": POLITE}), run_as(daemon, ALICE, {"command": POLITE})]
    with daemon.client() as client:
        for job in long_jobs:
            wait_for(lambda job=job: client.get(job.id).status == JobStatus.RUNNING, what="the long jobs to run")
    alice = Connector(ALICE, daemon.socket)
    try:
        yield daemon, drain, alice, [job.id for job in long_jobs]
    finally:
        alice.close()


def unharmed(daemon, drain, long_jobs: list[str]) -> None:
    """The executor is up and logged no traceback; bob's long job still runs, alice's runs or was
    stopped by her; no job at all was lost."""
    assert daemon.process is not None and daemon.process.poll() is None, drain.text()
    assert "Traceback" not in drain.text(), drain.text()
    with daemon.client() as client:
        bobs, alices = (client.get(job_id) for job_id in long_jobs)
        assert bobs.status is JobStatus.RUNNING, bobs
        assert alices.status is JobStatus.RUNNING or alices.reason is Reason.STOPPED, alices
        jobs, _ = client.list(limit=1000)
        assert [job.id for job in jobs if job.reason is Reason.LOST] == []


def stop_fuzzed_jobs(daemon, long_jobs: list[str]) -> None:
    """Stop the jobs the fuzzing ran (they hold alice's slots), sparing the long jobs."""
    with daemon.client() as client:
        jobs, _ = client.list(status=["QUEUED", "RUNNING"], limit=1000)
        for job in jobs:
            if job.id not in long_jobs:
                client.stop(job.id, grace_s=0)
        wait_for(
            lambda: {j.id for j in client.list(status=["QUEUED", "RUNNING"], limit=1000)[0]} <= set(long_jobs),
            what="the fuzzed jobs to end",
        )


@pytest.mark.parametrize("name", sorted(EXTREME_FRAMES))
def test_an_extreme_frame_from_a_user_gets_an_error_reply_and_harms_nothing(fuzzed, name):
    daemon, drain, alice, long_jobs = fuzzed
    with alice.greeted() as sock:
        reply = exchange(sock, EXTREME_FRAMES[name])
    assert is_answer(reply) and reply["ok"] is False, reply
    unharmed(daemon, drain, long_jobs)


def test_fuzzed_requests_from_a_user_each_get_an_answer_and_harm_no_one(fuzzed):
    daemon, drain, alice, long_jobs = fuzzed
    answered: dict[str, int] = {}

    @FUZZ
    @given(requests(long_jobs))
    def one(request: dict[str, Any]) -> None:
        with alice.greeted() as sock:
            reply = exchange(sock, raw(request))
        assert is_answer(reply), (request, reply)
        key = "ok" if reply["ok"] else reply["error"]["reason"]
        answered[key] = answered.get(key, 0) + 1

    one()
    stop_fuzzed_jobs(daemon, long_jobs)
    # The fuzzing reached past the decoding: some requests were done, some refused for their values.
    assert answered.get("ok") and answered.get("bad_request") and answered.get("invalid"), answered
    unharmed(daemon, drain, long_jobs)


def test_a_request_before_hello_and_an_odd_hello_get_an_error_reply(fuzzed):
    daemon, drain, alice, long_jobs = fuzzed
    for request in (
        {"op": "get", "job_id": long_jobs[0]},
        {"op": "hello", "version": math.nan},
        {"op": "hello", "version": 2**64},
        {"op": "hello", "id": {"deep": [[[]]]}, "version": 1e308},
    ):
        with alice.connect() as sock:
            assert is_answer(reply := exchange(sock, raw(request))) and not reply["ok"], (request, reply)
    unharmed(daemon, drain, long_jobs)


@pytest.mark.parametrize("grace", [-1, -0.001, 3600.001, 1e308, 2**62, "5", [5], {"s": 5}, True])
def test_a_stop_with_a_grace_period_out_of_range_is_refused_and_the_job_runs_on(fuzzed, grace):
    daemon, drain, alice, long_jobs = fuzzed
    with alice.greeted() as sock:
        reply = exchange(sock, raw({"op": "stop", "id": 1, "job_id": long_jobs[1], "grace_s": grace}))
    assert reply is not None and reply["error"]["reason"] == "bad_request", reply
    assert "grace_s" in reply["error"]["message"]
    unharmed(daemon, drain, long_jobs)


def test_stops_with_the_extreme_grace_periods_allowed_end_the_jobs_normally(fuzzed):
    daemon, drain, alice, long_jobs = fuzzed
    stop_fuzzed_jobs(daemon, long_jobs)
    for grace in (0, 5e-324, -0.0, 0.25, 3600):
        job = run_as(daemon, ALICE, {"command": POLITE})
        with daemon.client() as client:
            wait_for(lambda job=job: client.get(job.id).status == JobStatus.RUNNING, what="the job to run")
            with alice.greeted() as sock:
                reply = exchange(sock, raw({"op": "stop", "id": 1, "job_id": job.id, "grace_s": grace}))
            assert is_answer(reply) and reply["ok"], reply
            ended = wait_for(lambda job=job: client.get(job.id).finished and client.get(job.id), what="the stop")
        assert (ended.status, ended.reason) == (JobStatus.STOPPED, Reason.STOPPED), (grace, ended)
    unharmed(daemon, drain, long_jobs)


@pytest.mark.parametrize("grace", [math.inf, math.nan, 1e308, -1.0, "soon"])
def test_a_supervisor_told_to_stop_with_a_grace_it_cannot_wait_still_stops_its_job(sandbox, grace):
    """The supervisor is a boundary of its own (the executor is its only client, but a job lost to
    an exception there is lost for good): whatever the grace period, the job is stopped, not lost."""
    with sandbox.launch(LaunchSpec(["sleep", "300"], stop_grace_s=1)) as job:
        assert next(job.events(timeout=10))["event"] == "started"
        job.stop(grace_s=grace)
        started = time.monotonic()
        outcome = job.wait(timeout=20)
    assert outcome is not None and outcome.reason is Reason.STOPPED, outcome
    assert time.monotonic() - started < 10


def test_a_user_cannot_stop_another_users_job_by_any_odd_id(fuzzed):
    """The fuzzing above sent alice's requests at bob's job too; here every shape of its id."""
    daemon, drain, _, long_jobs = fuzzed
    bob_job = long_jobs[0]
    for job_id in (bob_job, bob_job.upper(), bob_job[:8], bob_job.replace("-", ""), f" {bob_job}", bob_job + "\x00"):
        reply = as_user(ALICE, lambda job_id=job_id: _stop_reason(daemon.socket, job_id))
        assert reply in ("not_found", "bad_request"), (job_id, reply)
    unharmed(daemon, drain, long_jobs)


def _stop_reason(path: str, job_id: str) -> str:
    try:
        Client(path).stop(job_id, grace_s=0)
    except Exception as exc:  # the reason it was refused
        return getattr(getattr(exc, "reason", None), "value", repr(exc))
    return "stopped"


def test_the_jobs_that_ran_through_the_fuzzing_end_normally(fuzzed):
    """Last: the long jobs, stopped, run their TERM trap and end STOPPED (not lost)."""
    daemon, drain, _, long_jobs = fuzzed
    unharmed(daemon, drain, long_jobs)
    stop_and_see_them_end_normally(daemon, long_jobs)
    assert "Traceback" not in drain.text()
