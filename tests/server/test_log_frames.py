"""The job stream websocket's binary log frames (?frames=binary, the panel's): each log chunk is one
binary frame, a header (stream, offset, next_offset) and the bytes exactly as the job wrote them;
every other message stays a JSON text frame. Through a real Jupyter server and a real executor."""

from __future__ import annotations

import asyncio
import itertools
import json

from jupyter_worker.errors import ErrorReason
from jupyter_worker.sandbox.output import STREAM_NUMBERS
from jupyter_worker.server.handlers import LOG_FRAME
from tests.server.conftest import refusal

# bytes that are not UTF-8 (a lone continuation byte, 0xff, a truncated sequence), a character
# split across two writes, markup and NULs: each must arrive exactly, with its stream
WRITES = """
import os, sys, time
for n in range(300):
    os.write(1, b"out %d \\xff\\xfe \\xc3" % n)
    os.write(1, b"\\xa9 <b>not markup</b>\\x00\\n")
    if n % 50 == 0:
        os.write(2, b"err %d \\x80\\n" % n)
        time.sleep(0.01)
os.write(int(os.environ["JUPYTER_WORKER_DISPLAY_FD"]), b'{"data": {"text/plain": "shown"}}\\n')
"""
STDOUT = b"".join(b"out %d \xff\xfe \xc3\xa9 <b>not markup</b>\x00\n" % n for n in range(300))
STDERR = b"".join(b"err %d \x80\n" % n for n in range(0, 300, 50))
DISPLAY = b'{"data": {"text/plain": "shown"}}\n'


async def submitted(jp_fetch) -> dict:
    body = json.dumps({"command": ["python3", "-c", WRITES], "display": True})
    return json.loads((await jp_fetch("api", "worker", "jobs", method="POST", body=body)).body)


async def read_frames(jp_ws_fetch, job_id: str, offset: int) -> tuple[list[tuple[int, int, int, bytes]], list[dict]]:
    """(stream, offset, next_offset, bytes) of each binary frame, and the JSON messages, until end."""
    params = {"offset": str(offset), "frames": "binary"}
    ws = await jp_ws_fetch("api", "worker", "jobs", job_id, "stream", params=params)
    frames, messages = [], []
    while True:
        message = await asyncio.wait_for(ws.read_message(), 30)
        assert message is not None, "the stream closed before its end message"
        if isinstance(message, bytes):
            frames.append((*LOG_FRAME.unpack_from(message), message[LOG_FRAME.size :]))
            continue
        messages.append(json.loads(message))
        if messages[-1]["type"] == "end":
            ws.close()
            return frames, messages


def by_stream(frames: list[tuple[int, int, int, bytes]]) -> dict[int, bytes]:
    joined: dict[int, bytes] = {}
    for stream, _, _, data in frames:
        joined[stream] = joined.get(stream, b"") + data
    return joined


async def test_binary_frames_carry_every_byte_exactly_with_contiguous_offsets_and_stream_ids(jp_fetch, jp_ws_fetch):
    job = await submitted(jp_fetch)
    frames, messages = await read_frames(jp_ws_fetch, job["id"], 0)
    assert by_stream(frames) == {
        STREAM_NUMBERS["stdout"]: STDOUT,
        STREAM_NUMBERS["stderr"]: STDERR,
        STREAM_NUMBERS["display"]: DISPLAY,
    }
    assert frames[0][1] == 0
    for before, after in itertools.pairwise(frames):
        assert after[1] == before[2] > before[1], "a gap or an overlap between frames"
    end = messages[-1]
    assert end["job"]["status"] == "COMPLETED" and end["offset"] == frames[-1][2]
    # no log message is JSON in this form; the others are as in the text form
    assert {m["type"] for m in messages} <= {"status", "metrics", "end"}


async def test_binary_frames_resume_from_a_frames_next_offset_with_no_gap_or_duplicate(jp_fetch, jp_ws_fetch):
    job = await submitted(jp_fetch)
    whole, _ = await read_frames(jp_ws_fetch, job["id"], 0)
    received = whole[: len(whole) // 2]
    rest, _ = await read_frames(jp_ws_fetch, job["id"], received[-1][2])
    assert rest[0][1] == received[-1][2]
    assert by_stream(received + rest) == by_stream(whole)


async def test_the_text_form_stays_the_default_for_older_clients(jp_fetch, jp_ws_fetch):
    job = await submitted(jp_fetch)
    ws = await jp_ws_fetch("api", "worker", "jobs", job["id"], "stream", params={"offset": "0"})
    stdout = ""
    while True:
        message = await asyncio.wait_for(ws.read_message(), 30)
        assert isinstance(message, str)
        event = json.loads(message)
        if event["type"] == "log" and event["stream"] == "stdout":
            stdout += event["text"]
        elif event["type"] == "end":
            break
    ws.close()
    assert stdout.count("\n") == 300 and "<b>not markup</b>" in stdout


async def test_a_frames_value_other_than_text_or_binary_is_refused_before_the_upgrade(jp_fetch, jp_ws_fetch):
    job = await submitted(jp_fetch)
    for frames in ("Binary", "json", "", "binary,text"):
        params = {"offset": "0", "frames": frames}
        code, error = await refusal(jp_ws_fetch("api", "worker", "jobs", job["id"], "stream", params=params))
        assert (code, error["reason"]) == (400, ErrorReason.BAD_REQUEST.value), frames
        assert error["message"].startswith("frames:") and "text or binary" in error["message"]
