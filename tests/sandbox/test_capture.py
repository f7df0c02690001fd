"""A captured job: its supervisor owns the output (a framed log) and the outcome (a result file),
and accepts new control connections, so both survive whoever launched the job."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from jupyter_worker.sandbox import CaptureFiles, LaunchSpec
from jupyter_worker.sandbox.output import NOTICE, STDERR, STDOUT, read_chunks
from jupyter_worker.spec import Limits, Reason


@pytest.fixture
def captured(sandbox, tmp_path):
    """launch(argv, log_cap=...) -> (job, paths); the files live in tmp_path."""
    opened = []

    def launch(argv: list[str], log_cap: int = 1 << 30, **fields):
        paths = {"log": str(tmp_path / "log"), "result": str(tmp_path / "result"), "control": str(tmp_path / "ctl")}
        log = os.open(paths["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        result = os.open(paths["result"], os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(paths["control"])
        listener.listen()
        try:
            job = sandbox.launch_captured(
                LaunchSpec(argv, **fields), CaptureFiles(log, result, listener.fileno(), log_cap)
            )
        finally:
            os.close(log)
            os.close(result)
            listener.close()
        opened.append(job)
        return job, paths

    yield launch
    for job in opened:
        job.__exit__(None, None, None)


def test_stdout_and_stderr_are_logged_in_order_and_told_apart(captured):
    job, paths = captured(["sh", "-c", "echo out1; sleep 0.1; echo err1 >&2; sleep 0.1; echo out2"])
    outcome = job.wait(timeout=30)
    assert outcome.reason is Reason.EXIT and outcome.exit_code == 0
    chunks, end = read_chunks(paths["log"])
    assert [(c.stream, c.data) for c in chunks] == [(STDOUT, b"out1\n"), (STDERR, b"err1\n"), (STDOUT, b"out2\n")]
    assert end == os.path.getsize(paths["log"])
    with open(paths["result"]) as f:
        result = json.load(f)
    assert result.pop("cgroup") and result == outcome.to_dict()


def test_reading_from_any_offset_continues_with_no_gap_or_duplicate(captured):
    job, paths = captured(["python3", "-c", "import sys\nfor i in range(2000): print(i, flush=True)"])
    job.wait(timeout=30)
    chunks, end = read_chunks(paths["log"])
    whole = b"".join(c.data for c in chunks)
    assert whole == b"".join(b"%d\n" % i for i in range(2000))
    for chunk in chunks[:: max(1, len(chunks) // 7)]:
        rest, rest_end = read_chunks(paths["log"], chunk.offset)
        assert b"".join(c.data for c in rest) == whole[whole.index(chunk.data) :] or rest[0].offset == chunk.offset
        assert rest_end == end
    small, next_offset = read_chunks(paths["log"], 0, max_bytes=10)
    following, _ = read_chunks(paths["log"], next_offset)
    assert b"".join(c.data for c in small + following) == whole


def test_the_log_cap_drops_the_excess_with_a_notice_and_the_job_goes_on(captured):
    job, paths = captured(["sh", "-c", "head -c 300000 /dev/zero; echo done >&2"], log_cap=100_000)
    outcome = job.wait(timeout=30)
    assert outcome.exit_code == 0
    chunks, _ = read_chunks(paths["log"])
    kept = sum(len(c.data) for c in chunks if c.stream == STDOUT)
    assert kept <= 100_000
    notices = [c.data.decode() for c in chunks if c.stream == NOTICE]
    assert "log cap of 100000 bytes reached" in notices[0]
    assert notices[-1].startswith("[jupyter-worker: ") and "bytes of output were dropped" in notices[-1]
    assert os.path.getsize(paths["log"]) < 101_000


def test_a_new_connection_can_follow_and_stop_a_job_its_launcher_left(captured):
    job, paths = captured(["sleep", "300"], stop_grace_s=1)
    assert next(job.events(timeout=10))["event"] == "started"
    job.close()
    again = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    again.connect(paths["control"])
    greeting = json.loads(again.recv(65536))
    assert greeting["event"] == "attached" and greeting["started"] is True
    again.send(json.dumps({"op": "stop"}).encode())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        event = json.loads(again.recv(65536))
        if event["event"] == "exit":
            break
    again.close()
    assert event["outcome"]["reason"] == "stopped"
    with open(paths["result"]) as f:
        assert json.load(f)["reason"] == "stopped"


def test_the_outcome_is_written_even_with_no_one_listening(captured):
    job, paths = captured(["sh", "-c", "sleep 0.3; exit 7"], limits=Limits(timeout_s=30))
    job.close()
    deadline = time.monotonic() + 10
    outcome: dict = {}
    while time.monotonic() < deadline and "reason" not in outcome:
        time.sleep(0.05)
        with open(paths["result"]) as f:
            outcome = json.loads(f.read() or "{}")
    assert outcome["reason"] == "exit" and outcome["exit_code"] == 7
