"""GET jobs/{id}?wait_s=N: a REST client waits for a job's end in one request instead of polling.
Through a real Jupyter server and a real executor."""

from __future__ import annotations

import asyncio
import json
import time

from jupyter_worker.errors import ErrorReason
from jupyter_worker.server import waits as waits_module
from jupyter_worker.server.handlers import MAX_WAIT_S
from tests.server.conftest import held_waits, refusal


async def submitted(jp_fetch, command: list[str]) -> dict:
    response = await jp_fetch("api", "worker", "jobs", method="POST", body=json.dumps({"command": command}))
    return json.loads(response.body)


async def waited(jp_fetch, job_id: str, wait_s: str) -> tuple[dict, float]:
    began = time.monotonic()
    response = await jp_fetch("api", "worker", "jobs", job_id, params={"wait_s": wait_s}, request_timeout=120)
    return json.loads(response.body), time.monotonic() - began


async def test_a_get_with_wait_s_answers_once_the_job_has_ended(jp_fetch, conforms):
    job = await submitted(jp_fetch, ["sleep", "1"])
    ended, took = await waited(jp_fetch, job["id"], "60")
    assert conforms(ended, "Job")["status"] == "COMPLETED" and ended["exit_code"] == 0
    assert took < 30
    again, took = await waited(jp_fetch, job["id"], "60")  # an ended job answers at once
    assert again["status"] == "COMPLETED" and took < 5


async def test_a_get_with_wait_s_answers_a_job_still_running_after_that_many_seconds(jp_fetch):
    job = await submitted(jp_fetch, ["sleep", "300"])
    try:
        current, took = await waited(jp_fetch, job["id"], "1")
        assert current["status"] in ("QUEUED", "RUNNING") and 1 <= took < 10
    finally:
        body = json.dumps({"grace_s": 0})
        await jp_fetch("api", "worker", "jobs", job["id"], "stop", method="POST", body=body)
    stopped, _ = await waited(jp_fetch, job["id"], "60")
    assert stopped["status"] == "STOPPED"


async def test_a_wait_s_that_is_not_a_whole_number_of_seconds_in_range_is_a_bad_request(jp_fetch):
    job = await submitted(jp_fetch, ["true"])
    for wait_s in ("-1", "soon", "1.5", str(MAX_WAIT_S + 1), "9" * 30):
        code, error = await refusal(jp_fetch("api", "worker", "jobs", job["id"], params={"wait_s": wait_s}))
        assert (code, error["reason"]) == (400, ErrorReason.BAD_REQUEST.value), wait_s
        assert error["message"].startswith("wait_s"), error


async def test_a_wait_on_a_job_that_does_not_exist_is_not_found_at_once(jp_fetch):
    began = time.monotonic()
    code, error = await refusal(jp_fetch("api", "worker", "jobs", "ffffffff", params={"wait_s": "60"}))
    assert (code, error["reason"]) == (404, ErrorReason.NOT_FOUND.value) and time.monotonic() - began < 10


def executor_connections(socket_path: str) -> int:
    """Connections the executor has accepted and still holds open: its end of each is a socket
    bound to its path, connected (state 03 in /proc/net/unix; the listening one is 01)."""
    with open("/proc/net/unix") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return sum(1 for row in rows if len(row) == 8 and row[7] == socket_path and row[5] == "03")


async def test_many_waits_dropped_by_their_client_leave_no_executor_connection_behind(
    jp_fetch, jp_serverapp, executor_socket
):
    waits = jp_serverapp.web_app.settings["jupyter_worker"].waits
    job = await submitted(jp_fetch, ["sleep", "300"])
    try:
        before = executor_connections(executor_socket)
        for _ in range(2):
            writers = await held_waits(jp_serverapp, job["id"], jp_serverapp.identity_provider.token, 60)
            deadline = time.monotonic() + 20
            while waits.count < 60 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert waits.count == 60 and waits.watching
            # sixty waits share one watch: one executor connection beside those the server had
            assert executor_connections(executor_socket) <= before + 1
            for writer in writers:
                writer.close()
            deadline = time.monotonic() + 10
            while (waits.count or executor_connections(executor_socket) > before) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert waits.count == 0 and not waits.watching  # each wait ended with its client, the watch with the last
            assert executor_connections(executor_socket) <= before
        # a wait still answers at the job's end
        still = asyncio.ensure_future(waited(jp_fetch, job["id"], "60"))
        await asyncio.sleep(1)
        assert not still.done() and waits.count == 1
    finally:
        body = json.dumps({"grace_s": 0})
        await jp_fetch("api", "worker", "jobs", job["id"], "stop", method="POST", body=body)
    stopped, took = await still
    assert stopped["status"] == "STOPPED" and took < 30
    deadline = time.monotonic() + 10
    while executor_connections(executor_socket) > before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert waits.count == 0 and not waits.watching and executor_connections(executor_socket) <= before


async def test_waits_beyond_the_servers_bound_are_refused_as_busy(jp_fetch, jp_serverapp, monkeypatch):
    monkeypatch.setattr(waits_module, "MAX_WAITS", 3)
    waits = jp_serverapp.web_app.settings["jupyter_worker"].waits
    job = await submitted(jp_fetch, ["sleep", "300"])
    writers = await held_waits(jp_serverapp, job["id"], jp_serverapp.identity_provider.token, 3)
    try:
        deadline = time.monotonic() + 20
        while waits.count < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        code, error = await refusal(jp_fetch("api", "worker", "jobs", job["id"], params={"wait_s": "60"}))
        assert (code, error["reason"]) == (503, ErrorReason.BUSY.value) and "waiting requests" in error["message"]
        current = json.loads((await jp_fetch("api", "worker", "jobs", job["id"])).body)  # a plain get still answers
        assert current["status"] in ("QUEUED", "RUNNING")
    finally:
        for writer in writers:
            writer.close()
        await jp_fetch("api", "worker", "jobs", job["id"], "stop", method="POST", body=json.dumps({"grace_s": 0}))
