"""The display channel through REST and the websocket (issue 16): a job POSTed with display: true
has its display lines come back as chunks and messages of stream "display", next to its stdout."""

from __future__ import annotations

import asyncio
import json

SHOWS = """
import json, os, time
fd = int(os.environ["JUPYTER_WORKER_DISPLAY_FD"])
print("text", flush=True)
time.sleep(0.2)
for n in range(2):
    os.write(fd, (json.dumps({"data": {"text/html": f"<b>{n}</b>"}, "metadata": {}}) + "\\n").encode())
"""
BUNDLES = "".join(json.dumps({"data": {"text/html": f"<b>{n}</b>"}, "metadata": {}}) + "\n" for n in range(2))


async def test_rest_logs_and_the_job_stream_carry_display_chunks_as_stream_display(jp_fetch, jp_ws_fetch, conforms):
    body = json.dumps({"command": ["python3", "-c", SHOWS], "display": True})
    job = json.loads((await jp_fetch("api", "worker", "jobs", method="POST", body=body)).body)
    ws = await jp_ws_fetch("api", "worker", "jobs", job["id"], "stream", params={"offset": "0"})
    streamed = []
    while (message := json.loads(await asyncio.wait_for(ws.read_message(), 60)))["type"] != "end":
        if message["type"] == "log":
            streamed.append((message["stream"], message["text"]))
    ws.close()
    assert message["job"]["status"] == "COMPLETED"
    assert "".join(text for stream, text in streamed if stream == "display") == BUNDLES
    assert streamed[0] == ("stdout", "text\n")
    logs = conforms((await jp_fetch("api", "worker", "jobs", job["id"], "logs")).body, "LogPage")
    assert logs["chunks"][0]["stream"] == "stdout"
    assert "".join(c["text"] for c in logs["chunks"] if c["stream"] == "display") == BUNDLES
