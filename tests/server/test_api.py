"""The REST and websocket API through a real Jupyter server, a real executor and real jobs."""

from __future__ import annotations

import asyncio
import json

import pytest
from openapi_spec_validator import validate
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_worker.server.app import ACTIVITY_KEY
from tests.server.conftest import finished, submit

COUNTER = "import sys\nfor i in range(3000): print(i)\nprint('err', file=sys.stderr)"


async def error_of(call) -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as caught:
        await call
    return caught.value.code, json.loads(caught.value.response.body)


async def test_a_job_is_created_read_listed_logged_and_deleted(jp_fetch, conforms):
    body = json.dumps({"command": ["sh", "-c", "echo out; echo err >&2"]})
    job = conforms((await jp_fetch("api", "worker", "jobs", method="POST", body=body)).body, "Job")
    done = conforms(json.dumps(await finished(jp_fetch, job["id"])), "Job")
    assert (done["status"], done["reason"], done["exit_code"]) == ("COMPLETED", "exit", 0)
    page = conforms((await jp_fetch("api", "worker", "jobs")).body, "JobPage")
    assert job["id"] in [j["id"] for j in page["jobs"]]
    logs = conforms((await jp_fetch("api", "worker", "jobs", job["id"], "logs")).body, "LogPage")
    assert {(c["stream"], c["text"]) for c in logs["chunks"]} == {("stdout", "out\n"), ("stderr", "err\n")}
    assert (await jp_fetch("api", "worker", "jobs", job["id"][:8], method="DELETE")).code == 204
    code, error = await error_of(jp_fetch("api", "worker", "jobs", job["id"]))
    assert code == 404 and conforms(error, "Error")["reason"] == "not_found"


async def test_jobs_page_with_a_cursor(jp_fetch):
    ids = {(await submit(jp_fetch, command=["true"], name=f"page-{i}"))["id"] for i in range(5)}
    seen, cursor = [], None
    while True:
        params = {"limit": "2"} | ({"cursor": str(cursor)} if cursor is not None else {})
        page = json.loads((await jp_fetch("api", "worker", "jobs", params=params)).body)
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert ids <= set(seen) and len(seen) == len(set(seen))


async def test_stop_ends_a_running_job(jp_fetch, conforms):
    job = await submit(jp_fetch, command=["sleep", "300"])
    stopped = await jp_fetch("api", "worker", "jobs", job["id"], "stop", method="POST", body=json.dumps({"grace_s": 0}))
    conforms(stopped.body, "Job")
    done = await finished(jp_fetch, job["id"])
    assert (done["status"], done["reason"], done["stopped_by"]) == ("STOPPED", "stopped", "root")


async def test_the_job_stream_resumes_from_an_offset_with_no_gap_or_duplicate(jp_fetch, jp_ws_fetch):
    job = await submit(jp_fetch, command=["python3", "-c", COUNTER])

    async def read_stream(offset: int) -> tuple[list[dict], dict]:
        ws = await jp_ws_fetch("api", "worker", "jobs", job["id"], "stream", params={"offset": str(offset)})
        logs = []
        while True:
            message = json.loads(await ws.read_message())
            if message["type"] == "log":
                logs.append(message)
            elif message["type"] == "end":
                ws.close()
                return logs, message

    logs, end = await read_stream(0)
    text = "".join(m["text"] for m in logs if m["stream"] == "stdout")
    assert text == "".join(f"{i}\n" for i in range(3000))
    assert end["job"]["status"] == "COMPLETED"
    received = logs[: len(logs) // 2]
    rest, _ = await read_stream(received[-1]["next_offset"] if received else 0)
    resumed = "".join(m["text"] for m in received + rest if m["stream"] == "stdout")
    assert resumed == text


async def test_the_events_stream_tells_of_every_change(jp_fetch, jp_ws_fetch):
    ws = await jp_ws_fetch("api", "worker", "events")
    await asyncio.sleep(0.2)
    job = await submit(jp_fetch, command=["true"])
    statuses = []
    while "COMPLETED" not in statuses:
        message = json.loads(await asyncio.wait_for(ws.read_message(), 20))
        if message["type"] == "job" and message["job"]["id"] == job["id"]:
            statuses.append(message["job"]["status"])
    ws.close()
    assert statuses[-1] == "COMPLETED"


async def test_every_route_refuses_a_request_without_a_token(jp_serverapp, jp_base_url, jp_http_port, jp_fetch):
    job = await submit(jp_fetch, command=["true"])
    client = AsyncHTTPClient()
    base = f"http://localhost:{jp_http_port}{jp_base_url}api/worker/"
    routes = [
        ("GET", "jobs"),
        ("POST", "jobs"),
        ("GET", f"jobs/{job['id']}"),
        ("DELETE", f"jobs/{job['id']}"),
        ("POST", f"jobs/{job['id']}/stop"),
        ("GET", f"jobs/{job['id']}/logs"),
        ("GET", "capabilities"),
        ("GET", "openapi.yaml"),
    ]
    for method, route in routes:
        body = "{}" if method == "POST" else None
        response = await client.fetch(HTTPRequest(base + route, method=method, body=body), raise_error=False)
        assert response.code == 403, (method, route, response.code)
    for route in (f"jobs/{job['id']}/stream", "events"):
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(HTTPRequest(base.replace("http:", "ws:") + route))
        assert refused.value.code == 403


async def test_capabilities_and_the_served_openapi_document(jp_fetch, conforms, openapi):
    capabilities = conforms((await jp_fetch("api", "worker", "capabilities")).body, "Capabilities")
    assert capabilities["executor"]["available"] is True
    assert capabilities["policy"]["max_memory_limit"] == 2048
    assert "memory" in capabilities["host"]["limits"]
    served = (await jp_fetch("api", "worker", "openapi.yaml")).body.decode()
    assert "jupyter-worker REST API" in served
    validate(openapi)


async def test_a_jobs_environment_carries_no_server_or_hub_token(jp_fetch, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-secret-token")
    job = await submit(jp_fetch, command=["env"])
    await finished(jp_fetch, job["id"])
    logs = json.loads((await jp_fetch("api", "worker", "jobs", job["id"], "logs")).body)
    text = "".join(c["text"] for c in logs["chunks"])
    assert "hub-secret-token" not in text and "TOKEN" not in text


async def test_running_jobs_count_as_server_activity(jp_fetch, jp_serverapp):
    extension = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_worker"]))
    jp_serverapp.web_app.settings.pop(ACTIVITY_KEY, None)
    await extension.note_activity()
    assert ACTIVITY_KEY not in jp_serverapp.web_app.settings
    job = await submit(jp_fetch, command=["sleep", "300"])
    await extension.note_activity()
    assert ACTIVITY_KEY in jp_serverapp.web_app.settings
    await jp_fetch("api", "worker", "jobs", job["id"], "stop", method="POST", body=json.dumps({"grace_s": 0}))


async def test_a_jobs_work_files_are_listed_and_downloaded(jp_fetch, conforms):
    script = "cd /work && mkdir out && seq 1 200000 > out/numbers.txt && ln -s /etc/passwd link"
    done = await finished(jp_fetch, (await submit(jp_fetch, command=["sh", "-c", script]))["id"])
    listing = conforms((await jp_fetch("api", "worker", "jobs", done["id"], "files")).body, "WorkListing")
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [("out", "directory"), ("link", "symlink")]
    inner = json.loads((await jp_fetch("api", "worker", "jobs", done["id"], "files", params={"path": "out"})).body)
    size = inner["entries"][0]["size"]
    response = await jp_fetch(
        "api", "worker", "jobs", done["id"], "files", "download", params={"path": "out/numbers.txt"}
    )
    assert response.body == "".join(f"{i}\n" for i in range(1, 200001)).encode() and len(response.body) == size
    assert "numbers.txt" in response.headers["Content-Disposition"]
    for path in ("link", "out", "../log"):
        code, error = await error_of(
            jp_fetch("api", "worker", "jobs", done["id"], "files", "download", params={"path": path})
        )
        assert code in (400, 404) and conforms(error, "Error")["message"]
