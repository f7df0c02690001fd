"""The display channel (issue 16), through a real executor and sandbox: a job that asks for display
writes newline-delimited JSON mime bundles to the fd named by JUPYTER_WORKER_DISPLAY_FD; they reach
followers as stream "display", in order with stdout, never as text, and are capped on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.jobs import Job
from tests.executor.conftest import Daemon, started_daemon, wait_for

CLI = [sys.executable, "-m", "jupyter_worker.cli"]
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG_CAP = 400_000  # so the display cap is 100 000 bytes

SHOWS = """
import json, os, time
fd = int(os.environ["JUPYTER_WORKER_DISPLAY_FD"])
for n in range(3):
    print(f"text {n}", flush=True)
    time.sleep(0.2)
    os.write(fd, (json.dumps({"data": {"text/plain": str(n)}, "metadata": {}}) + "\\n").encode())
    time.sleep(0.2)
print("end", flush=True)
"""

FDS = """
import os, stat
try:
    pipe = stat.S_ISFIFO(os.fstat(3).st_mode) and os.get_inheritable(3)
except OSError:
    pipe = False
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
print(fds, os.environ.get("JUPYTER_WORKER_DISPLAY_FD"), pipe)
"""

FLOOD = """
import json, os
fd = int(os.environ["JUPYTER_WORKER_DISPLAY_FD"])
line = (json.dumps({"data": {"text/plain": "x" * 1000}, "metadata": {}}) + "\\n").encode()
for _ in range(1000):
    os.write(fd, line)
print("stdout still works", flush=True)
"""


def bundle(n: int) -> bytes:
    return json.dumps({"data": {"text/plain": str(n)}, "metadata": {}}).encode() + b"\n"


@pytest.fixture(scope="module")
def executor(users):
    with started_daemon([f"--Policy.log_max_bytes={LOG_CAP}"]) as daemon:
        yield daemon


def finished(daemon: Daemon, job_id: str):
    with daemon.client() as client:
        return wait_for(lambda: (j := client.get(job_id)).finished and j, timeout=60, what="the job's end")


def followed(daemon: Daemon, job: dict) -> tuple[list[tuple[str, bytes]], object]:
    """Run job and follow it from the start: its log as (stream, bytes), consecutive records of one
    stream joined, and its final record."""
    with daemon.client() as client:
        record = client.run(job)
        events = list(client.follow(record.id))
    log: list[tuple[str, bytes]] = []
    for event in events:
        if event["event"] != "log":
            continue
        if log and log[-1][0] == event["stream"]:
            log[-1] = (event["stream"], log[-1][1] + event["data"])
        else:
            log.append((event["stream"], event["data"]))
    return log, events[-1]["job"]


def cli(*args: str, daemon: Daemon) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    command = [*CLI, "--socket", daemon.socket, *args]
    return subprocess.run(command, check=False, capture_output=True, timeout=60, env=env)


def test_a_follower_gets_the_jobs_display_lines_as_the_display_stream_in_order_with_stdout(executor):
    log, final = followed(executor, {"command": ["python3", "-c", SHOWS], "display": True})
    assert final.status == "COMPLETED"
    expected = []
    for n in range(3):
        expected += [("stdout", f"text {n}\n".encode()), ("display", bundle(n))]
    assert log == [*expected, ("stdout", b"end\n")]


def test_only_a_job_with_display_has_the_display_fd_and_its_variable(executor):
    with_display, _ = followed(executor, {"command": ["python3", "-c", FDS], "display": True})
    without, _ = followed(executor, {"command": ["python3", "-c", FDS]})
    # the fd past the last one is listdir's own
    assert with_display == [("stdout", b"[0, 1, 2, 3, 4] 3 True\n")]
    assert without == [("stdout", b"[0, 1, 2, 3] None False\n")]


def test_the_cli_log_and_job_logs_of_a_display_job_print_no_display_bytes(executor):
    with executor.client() as client:
        record = client.run({"command": ["python3", "-c", SHOWS], "display": True})
    finished(executor, record.id)
    text = b"text 0\ntext 1\ntext 2\nend\n"
    for args in (("log", record.id), ("log", "--follow", record.id)):
        shown = cli(*args, daemon=executor)
        assert (shown.returncode, shown.stdout, shown.stderr) == (0, text, b"")
    assert Job(record, executor.socket).logs() == text.decode()
    with executor.client() as client:
        chunks, _, _ = client.logs(record.id)
    assert b"".join(c.data for c in chunks if c.stream == "display") == b"".join(bundle(n) for n in range(3))


def test_a_job_flooding_its_display_fd_is_capped_with_a_notice_and_its_stdout_still_works(executor):
    log, final = followed(executor, {"command": ["python3", "-c", FLOOD], "display": True})
    assert final.status == "COMPLETED"
    display = b"".join(data for stream, data in log if stream == "display")
    assert 90_000 < len(display) <= LOG_CAP // 4
    lines = display.split(b"\n")
    assert lines.pop() == b"" and all(json.loads(line)["data"]["text/plain"] == "x" * 1000 for line in lines)
    notices = b"".join(data for stream, data in log if stream == "notice").decode()
    assert notices.count(f"display cap of {LOG_CAP // 4} bytes reached") == 1
    assert "bytes of display output were dropped" in notices
    assert ("stdout", b"stdout still works\n") in log


def test_a_request_naming_the_display_variable_itself_is_refused(executor):
    with executor.client() as client:
        with pytest.raises(WorkerError, match="JUPYTER_WORKER_DISPLAY_FD") as refused:
            client.run({"command": ["true"], "env": {"JUPYTER_WORKER_DISPLAY_FD": "1"}})
    assert refused.value.reason is ErrorReason.INVALID
