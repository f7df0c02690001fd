"""Every reason a request can be refused for, as REST answers it: the reason's HTTP status and the
JSON body {"message", "reason"}, produced for real through a Jupyter server and an executor.

Forbidden needs a server running as a viewer (test_multi_user.py); version and busy cannot be made
through a working server, so their mapping is tested in tests/unit/test_rest_errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile

import pytest

from jupyter_worker.errors import ErrorReason
from jupyter_worker.server.handlers import MAX_BODY
from tests.executor.conftest import started_daemon
from tests.server.conftest import refusal


async def refused(call, reason: ErrorReason, conforms) -> str:
    """Assert the request is refused with this reason, as the API documents it; its message."""
    code, error = await refusal(call)
    assert (code, conforms(error, "Error")["reason"]) == (reason.http_status, reason.value), error
    assert error["message"]
    return error["message"]


def post_job(jp_fetch, body: bytes | dict):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return jp_fetch("api", "worker", "jobs", method="POST", body=data)


async def submitted(jp_fetch, job: dict) -> dict:
    response = await post_job(jp_fetch, job)
    assert response.code == 201
    return json.loads(response.body)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1]"],
)
async def test_a_body_that_is_not_a_json_object_is_a_bad_request(jp_fetch, conforms, body):
    await refused(post_job(jp_fetch, body), ErrorReason.BAD_REQUEST, conforms)


@pytest.mark.parametrize(
    "params",
    [{"limit": "many"}, {"cursor": "later"}, {"order": "sideways"}, {"status": "DONE"}],
)
async def test_bad_query_arguments_are_a_bad_request(jp_fetch, conforms, params):
    await refused(jp_fetch("api", "worker", "jobs", params=params), ErrorReason.BAD_REQUEST, conforms)


async def test_a_bad_log_offset_is_a_bad_request(jp_fetch, conforms):
    job = await submitted(jp_fetch, {"command": ["true"]})
    logs = jp_fetch("api", "worker", "jobs", job["id"], "logs", params={"offset": "start"})
    await refused(logs, ErrorReason.BAD_REQUEST, conforms)


@pytest.mark.parametrize(
    "job",
    [
        {"command": ["true"], "limits": {"memory_mb": "lots"}},
        {"command": ["true"], "limits": {"memory_mb": 4096}},
        {"command": ["true"], "limits": {"timeout_s": -1}},
        {"command": ["true"], "limits": {"gpus": 1}},
        {"command": ["true"], "gpu": 1},
        {"command": []},
        {"command": ["true"], "network": "wifi"},
        {"command": ["true"], "owner": "someone"},
        {"command": ["true"], "holder": "server-x"},
    ],
)
async def test_a_value_that_breaks_a_rule_is_invalid(jp_fetch, conforms, job):
    await refused(post_job(jp_fetch, job), ErrorReason.INVALID, conforms)


async def test_a_body_over_the_limit_is_too_large(jp_fetch, conforms):
    body = b"{" + b" " * MAX_BODY + b"}"
    assert "bytes" in await refused(post_job(jp_fetch, body), ErrorReason.TOO_LARGE, conforms)


async def test_a_job_that_does_not_exist_is_not_found_on_every_route(jp_fetch, conforms):
    for method, route in [("GET", []), ("DELETE", []), ("POST", ["stop"]), ("GET", ["logs"]), ("GET", ["files"])]:
        call = jp_fetch(
            "api", "worker", "jobs", "ffffffff", *route, method=method, body="{}" if method == "POST" else None
        )
        await refused(call, ErrorReason.NOT_FOUND, conforms)


async def test_a_prefix_shared_by_two_jobs_is_ambiguous(jp_fetch, conforms):
    """Of any 17 ids two share their first hex digit; the executor's jobs so far count too."""
    page = json.loads((await jp_fetch("api", "worker", "jobs", params={"limit": "1000"})).body)
    firsts = [job["id"][0] for job in page["jobs"]]
    while len(set(firsts)) == len(firsts):
        firsts.append((await submitted(jp_fetch, {"command": ["true"]}))["id"][0])
    shared = next(first for first in firsts if firsts.count(first) > 1)
    message = await refused(jp_fetch("api", "worker", "jobs", shared), ErrorReason.AMBIGUOUS, conforms)
    assert "more than one job" in message


async def test_deleting_a_running_job_is_a_conflict(jp_fetch, conforms):
    job = await submitted(jp_fetch, {"command": ["sleep", "300"]})
    try:
        message = await refused(
            jp_fetch("api", "worker", "jobs", job["id"], method="DELETE"), ErrorReason.CONFLICT, conforms
        )
        assert "stop it first" in message
    finally:
        await jp_fetch("api", "worker", "jobs", job["id"], "stop", method="POST", body=json.dumps({"grace_s": 0}))


async def test_limits_take_units_through_rest(jp_fetch):
    job = await submitted(jp_fetch, {"command": ["true"], "limits": {"memory_mb": "64M", "timeout_s": "2s"}})
    assert (job["limits"]["memory_mb"], job["limits"]["timeout_s"]) == (64, 2.0)
    again = json.loads((await jp_fetch("api", "worker", "jobs", job["id"])).body)
    assert (again["limits"]["memory_mb"], again["limits"]["timeout_s"]) == (64, 2.0)


@contextlib.contextmanager
def path_without_sbin():
    """While an executor starts: a PATH without the sbin folders, where nft lives."""
    saved = os.environ["PATH"]
    os.environ["PATH"] = ":".join(part for part in saved.split(":") if not part.rstrip("/").endswith("sbin"))
    try:
        yield
    finally:
        os.environ["PATH"] = saved


class TestAHostWithoutNftables:
    @pytest.fixture
    def executor_socket(self):
        """An executor that finds no nft (nftables 'not installed'): it cannot make isolated networks."""
        with contextlib.ExitStack() as stack:
            with path_without_sbin():
                daemon = stack.enter_context(started_daemon([]))
            yield daemon.socket

    async def test_a_job_asking_for_the_isolated_network_is_unsupported_not_a_server_error(self, jp_fetch, conforms):
        message = await refused(
            post_job(jp_fetch, {"command": ["true"], "network": "isolated"}), ErrorReason.UNSUPPORTED, conforms
        )
        assert "nftables" in message
        job = await submitted(jp_fetch, {"command": ["true"], "network": "none"})
        assert job["network"] == "none"


class TestAnExecutorWhoseRootRunsAsAMissingUser:
    @pytest.fixture
    def executor_socket(self):
        with started_daemon(["--root-runs-as=jwtest-nobody-at-all"]) as daemon:
            yield daemon.socket

    async def test_a_job_from_root_is_refused_as_the_executors_misconfiguration(self, jp_fetch, conforms):
        message = await refused(post_job(jp_fetch, {"command": ["true"]}), ErrorReason.MISCONFIGURED, conforms)
        assert "jwtest-nobody-at-all" in message


class TestNoExecutor:
    @pytest.fixture
    def executor_socket(self):
        with tempfile.TemporaryDirectory(prefix="jw-") as folder:
            yield os.path.join(folder, "executor.sock")

    async def test_every_job_route_is_unavailable_and_capabilities_says_why(self, jp_fetch, conforms):
        await refused(jp_fetch("api", "worker", "jobs"), ErrorReason.UNAVAILABLE, conforms)
        await refused(post_job(jp_fetch, {"command": ["true"]}), ErrorReason.UNAVAILABLE, conforms)
        await refused(jp_fetch("api", "worker", "jobs", "ffffffff"), ErrorReason.UNAVAILABLE, conforms)
        capabilities = json.loads((await jp_fetch("api", "worker", "capabilities")).body)
        assert capabilities["executor"]["available"] is False and capabilities["executor"]["problem"]


class TestAnExecutorThatGoesAway:
    @pytest.fixture
    def executor(self):
        with started_daemon([]) as daemon:
            yield daemon

    @pytest.fixture
    def executor_socket(self, executor):
        return executor.socket

    async def test_a_request_the_executor_leaves_unanswered_is_disconnected_and_the_next_reconnects(
        self, jp_fetch, conforms, executor
    ):
        assert (await jp_fetch("api", "worker", "jobs")).code == 200
        executor.stop()
        await refused(jp_fetch("api", "worker", "jobs"), ErrorReason.DISCONNECTED, conforms)
        await asyncio.get_running_loop().run_in_executor(None, executor.start)
        assert (await jp_fetch("api", "worker", "jobs")).code == 200


async def test_a_stream_refuses_before_the_upgrade_with_the_same_json(jp_ws_fetch):
    for params, reason in (({}, ErrorReason.NOT_FOUND), ({"offset": "start"}, ErrorReason.BAD_REQUEST)):
        code, error = await refusal(jp_ws_fetch("api", "worker", "jobs", "ffffffff", "stream", params=params))
        assert (code, error["reason"]) == (reason.http_status, reason.value) and error["message"]
