"""Robust input at REST: request bodies. A JSON body is read once, strictly, by every route that takes
one (handlers.WorkerHandler.body): a key given twice (read as its last value by Python and as its first
by other parsers a proxy or a log reader may use) is 400 bad_request, and a field the route does not
take is refused, not ignored. Tried by a real user (alice) on her own Jupyter server, running as her,
against a real executor."""

from __future__ import annotations

import json

import pytest

from jupyter_worker.errors import ErrorReason
from jupyter_worker.spec import JobStatus
from tests.executor.conftest import wait_for
from tests.security.conftest import SERVER_ERROR, Rest, logged_user_server

ALICE = "jwtest-alice"


@pytest.fixture(scope="module")
def alices(logged_daemon, users):
    daemon, executor_log = logged_daemon
    with logged_user_server(ALICE, daemon.socket) as (server, server_log):
        yield executor_log, server_log, Rest(server)


def test_a_body_with_a_key_given_twice_is_refused_and_runs_nothing(alices):
    executor_log, server_log, rest = alices
    before = rest.call("GET", "jobs")[1]["jobs"]
    for body in (
        b'{"command": ["true"], "command": ["sh", "-c", "echo smuggled"]}',
        b'{"command": ["true"], "limits": {"memory_mb": 64, "memory_mb": 2048}}',
        b'{"command": ["true"], "mounts": [{"source": "/tmp", "destination": "/x", "destination": "/y"}]}',
    ):
        code, error = rest.call("POST", "jobs", body)
        assert (code, error["reason"]) == (400, ErrorReason.BAD_REQUEST.value), (body, error)
        assert "given twice" in error["message"], error
    assert rest.call("GET", "jobs")[1]["jobs"] == before
    for log in (executor_log.text(), server_log.text()):
        assert "Traceback" not in log and not SERVER_ERROR.search(log), log


def test_a_stop_with_a_field_it_does_not_take_or_a_key_twice_is_refused_and_the_job_runs_on(alices):
    _, _, rest = alices
    code, job = rest.call("POST", "jobs", json.dumps({"command": ["sleep", "300"]}).encode())
    assert code == 201, job
    try:
        for body, reason, words in (
            (b'{"grace_s": 0, "force": true}', ErrorReason.INVALID, "unknown field(s) 'force'"),
            (b'{"grace": 0}', ErrorReason.INVALID, "unknown field(s) 'grace'"),
            (b'{"grace_s": 3600, "grace_s": 0}', ErrorReason.BAD_REQUEST, "given twice"),
        ):
            code, error = rest.call("POST", f"jobs/{job['id']}/stop", body)
            assert (code, error["reason"]) == (reason.http_status, reason.value), (body, error)
            assert words in error["message"], error
        assert rest.call("GET", f"jobs/{job['id']}")[1]["status"] in (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
    finally:
        code, _ = rest.call("POST", f"jobs/{job['id']}/stop", b'{"grace_s": 0}')
        assert code == 200
    wait_for(lambda: rest.call("GET", f"jobs/{job['id']}")[1]["status"] == JobStatus.STOPPED.value, what="stop")
