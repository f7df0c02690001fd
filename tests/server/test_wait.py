"""GET jobs/{id}?wait_s=N: a REST client waits for a job's end in one request instead of polling.
Through a real Jupyter server and a real executor."""

from __future__ import annotations

import json
import time

from jupyter_worker.errors import ErrorReason
from jupyter_worker.server.handlers import MAX_WAIT_S
from tests.server.test_errors import refusal


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
