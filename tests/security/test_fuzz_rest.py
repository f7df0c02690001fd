"""Robust input at REST: a real unprivileged user (alice) sends her own Jupyter server, running as her,
requests no client would, generated (Hypothesis, derandomized) and hand-picked: every route and
method, job ids odd and other users', every query field (offset, max_bytes, limit, cursor, status,
order, path) with negative, huge, fractional and non-numeric values and bad UTF-8, bodies that are
not JSON, NaN and Infinity, deep nesting, huge arrays, every field of a job request. Each gets a
success or a 4xx with a message (never a 5xx), neither the server's log nor the executor's shows a
traceback, and the jobs that ran before (bob's and alice's) still run and end normally.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.spec import JobStatus, Reason
from tests.executor.conftest import run_as, wait_for
from tests.security.conftest import (
    REASONS,
    SERVER_ERROR,
    Rest,
    logged_user_server,
    stop_and_see_them_end_normally,
)
from tests.security.fuzzing import ANY, FUZZ, JOB, NUMBERS, NUMERIC, TEXTS

ALICE, BOB = "jwtest-alice", "jwtest-bob"
POLITE = ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; while :; do sleep 0.1; done"]
ROUTES = [
    "jobs",
    "jobs/{id}",
    "jobs/{id}/stop",
    "jobs/{id}/logs",
    "jobs/{id}/files",
    "jobs/{id}/files/download",
    "jobs/{id}/stream",
    "events",
    "capabilities",
]
QUERY_FIELDS = ["offset", "max_bytes", "limit", "cursor", "status", "order", "path"]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, allow_nan=True)


def query(fields: dict[str, Any]) -> str:
    """A query string; text that is not UTF-8 (a lone surrogate) goes as the bytes it would be."""
    return "&".join(
        f"{urllib.parse.quote(key)}={urllib.parse.quote(_text(value).encode(errors='surrogatepass'))}"
        for key, value in fields.items()
    )


def bodies() -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.none(),
        st.binary(max_size=64),  # not JSON, or not UTF-8
        st.one_of(JOB, ANY, st.fixed_dictionaries({}, optional={"grace_s": NUMERIC})).map(
            lambda value: json.dumps(value, allow_nan=True).encode()
        ),
    )


def calls(job_ids: list[str]) -> st.SearchStrategy[tuple[str, str, bytes | None]]:
    hex_ids = st.text("0123456789abcdef-", max_size=36)  # within the routes' pattern: a worker handler answers
    ids = st.one_of(st.sampled_from(job_ids), st.sampled_from([j[:6] for j in job_ids]), hex_ids)
    fields = st.dictionaries(st.sampled_from(QUERY_FIELDS), st.one_of(st.sampled_from(NUMBERS + TEXTS), ANY))
    return st.tuples(
        st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
        st.tuples(st.sampled_from(ROUTES), ids, fields).map(
            lambda parts: parts[0].replace("{id}", parts[1] or "0") + (f"?{query(parts[2])}" if parts[2] else "")
        ),
        bodies(),
    )


# Hand-picked: the edges the generated calls may not reach.
EXTREME_CALLS = {
    "a body of NaN": ("POST", "jobs", b'{"command": ["true"], "limits": {"memory_mb": NaN}}'),
    "a body of Infinity": ("POST", "jobs/{alice}/stop", b'{"grace_s": Infinity}'),
    "a grace of 1e308": ("POST", "jobs/{alice}/stop", b'{"grace_s": 1e308}'),
    "a grace of -1": ("POST", "jobs/{alice}/stop", b'{"grace_s": -1}'),
    "a body of 1e400": ("POST", "jobs", b'{"command": ["true"], "limits": {"pids": 1e400}}'),
    "a 5000-digit number": ("POST", "jobs", b'{"command": ["true"], "limits": {"pids": ' + b"9" * 5000 + b"}}"),
    "a body nested 50000 deep": ("POST", "jobs", b'{"command": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    "a lone surrogate": ("POST", "jobs", b'{"command": ["echo", "\\ud800"]}'),
    "bad UTF-8": ("POST", "jobs", b'{"command": ["echo", "\xff\xfe"]}'),
    "a 200 KiB command": ("POST", "jobs", json.dumps({"command": ["echo", "x" * (200 << 10)]}).encode()),
    "a body over 256 KiB": ("POST", "jobs", json.dumps({"command": ["x"] * 100_000}).encode()),
    "a JSON array": ("POST", "jobs", b"[]"),
    "an offset past 64 bits": ("GET", "jobs/{alice}/logs?offset=" + "9" * 30, None),
    "a negative offset": ("GET", "jobs/{alice}/logs?offset=-5", None),
    "a 5000-digit offset": ("GET", "jobs/{alice}/logs?offset=" + "9" * 5000, None),
    "a negative max_bytes": ("GET", "jobs/{alice}/logs?max_bytes=-1", None),
    "a huge cursor": ("GET", "jobs?cursor=" + "9" * 40, None),
    "a negative limit": ("GET", "jobs?limit=-1", None),
    "a stream offset past 64 bits": ("GET", "jobs/{alice}/stream?offset=" + "9" * 30, None),
    "a negative stream offset": ("GET", "jobs/{alice}/stream?offset=-1", None),
    "a download path of bad UTF-8": ("GET", "jobs/{alice}/files/download?path=%ff%fe", None),
    "a files path with NUL": ("GET", "jobs/{alice}/files?path=a%00b", None),
    "a status that is no status": ("GET", "jobs?status=%ff&status=RUNNING", None),
    "a wait_s twice": ("GET", "jobs/{alice}?wait_s=0&wait_s=300", None),
    "a wait_s in other digits": ("GET", "jobs/{alice}?wait_s=%D9%A5", None),
    "a query name of bad UTF-8": ("GET", "jobs?%ff%fe=1", None),
    "a frames twice": ("GET", "jobs/{alice}/stream?frames=text&frames=binary", None),
    "a body key twice": ("POST", "jobs", b'{"command": ["true"], "command": ["false"]}'),
    "a stop field it does not take": ("POST", "jobs/{alice}/stop", b'{"grace_s": 1, "now": true}'),
}


@pytest.fixture(scope="module")
def fuzzed(logged_daemon, users):
    """alice's own Jupyter server (running as her) on an executor whose log is kept; bob's long job
    and alice's, started before the fuzzing."""
    daemon, executor_log = logged_daemon
    with logged_user_server(ALICE, daemon.socket) as (server, server_log):
        rest = Rest(server)
        code, alices = rest.call("POST", "jobs", json.dumps({"command": POLITE}).encode())
        assert code == 201, alices
        long_jobs = [run_as(daemon, BOB, {"command": POLITE}).id, alices["id"]]
        with daemon.client() as client:
            for job_id in long_jobs:
                wait_for(lambda job_id=job_id: client.get(job_id).status == JobStatus.RUNNING, what="the long jobs")
        yield daemon, executor_log, server_log, rest, long_jobs


def unharmed(daemon, executor_log, server_log, long_jobs: list[str]) -> list[str]:
    """Both logs free of tracebacks and 5xx; bob's long job runs, alice's runs, or she stopped it
    (and may have deleted it then: the fuzzer calls as her); no job lost. Returns the long jobs
    still there."""
    for log in (executor_log.text(), server_log.text()):
        assert "Traceback" not in log, log
        assert not SERVER_ERROR.search(log), log
    assert daemon.process is not None and daemon.process.poll() is None
    with daemon.client() as client:
        bobs = client.get(long_jobs[0])
        assert bobs.status is JobStatus.RUNNING, bobs
        alices = None
        try:
            alices = client.get(long_jobs[1])
        except WorkerError as error:
            assert error.reason is ErrorReason.NOT_FOUND, error
        else:
            assert alices.status is JobStatus.RUNNING or alices.reason is Reason.STOPPED, alices
        assert [job.id for job in client.list(limit=1000)[0] if job.reason is Reason.LOST] == []
    return long_jobs if alices is not None else long_jobs[:1]


def refused_well(code: int, body: Any) -> bool:
    """A success, or a 4xx whose JSON body has a message and a reason (one of errors.ErrorReason);
    never a 5xx. The one 4xx in other words is tornado's to a websocket route asked without an
    upgrade, after the route's own checks passed."""
    if code < 400:
        return True
    if code == 400 and isinstance(body, str) and "Upgrade" in body:
        return True
    return code < 500 and isinstance(body, dict) and bool(body.get("message")) and body.get("reason") in REASONS


@pytest.mark.parametrize("name", sorted(EXTREME_CALLS))
def test_an_extreme_rest_request_gets_a_4xx_with_a_message_and_harms_nothing(fuzzed, name):
    daemon, executor_log, server_log, rest, long_jobs = fuzzed
    method, path, body = EXTREME_CALLS[name]
    code, reply = rest.call(method, path.replace("{alice}", long_jobs[1]), body)
    assert 400 <= code < 500 and refused_well(code, reply), (code, reply)
    unharmed(daemon, executor_log, server_log, long_jobs)


def test_fuzzed_rest_requests_each_get_an_answer_and_harm_no_one(fuzzed):
    daemon, executor_log, server_log, rest, long_jobs = fuzzed
    answered: dict[int, int] = {}

    @FUZZ
    @given(calls(long_jobs))
    def one(call: tuple[str, str, bytes | None]) -> None:
        code, reply = rest.call(*call)
        assert refused_well(code, reply), (call, code, reply)
        answered[code] = answered.get(code, 0) + 1

    one()
    assert answered.get(200) and answered.get(400) and answered.get(404), answered
    unharmed(daemon, executor_log, server_log, long_jobs)


def test_the_jobs_that_ran_through_the_rest_fuzzing_end_normally(fuzzed):
    """Last: bob's long job, stopped, runs its TERM trap and ends STOPPED; nothing was lost."""
    daemon, executor_log, server_log, _, long_jobs = fuzzed
    stop_and_see_them_end_normally(daemon, unharmed(daemon, executor_log, server_log, long_jobs))
    for log in (executor_log.text(), server_log.text()):
        assert "Traceback" not in log and not SERVER_ERROR.search(log), log
