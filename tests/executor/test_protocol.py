"""Bad input at the socket and at the command line: one clear error, no traceback, nothing changed."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from jupyter_worker import protocol
from tests.executor.conftest import raw_exchange

HELLO = protocol.encode({"op": "hello", "id": 1, "version": protocol.VERSION})


def body(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([struct.pack(">I", protocol.MAX_FRAME + 1)], "too_large"),
        ([body(b"not json")], "bad_request"),
        ([body(b"[1, 2]")], "bad_request"),
        ([protocol.encode({"op": "list", "id": 1})], "bad_request"),
        ([protocol.encode({"op": "hello", "id": 1, "version": 99})], "version"),
        ([HELLO, protocol.encode({"op": "format_disk", "id": 2})], "bad_request"),
        ([HELLO, protocol.encode({"op": "run", "id": 2, "job": {"command": ["true"], "gpu": 1}})], "invalid"),
        ([HELLO, protocol.encode({"op": "run", "id": 2, "job": {"command": []}})], "invalid"),
        ([HELLO, protocol.encode({"op": "run", "id": 2, "job": "true"})], "invalid"),
        (
            [HELLO, protocol.encode({"op": "run", "id": 2, "job": {"command": ["x"], "limits": {"pids": -1}}})],
            "invalid",
        ),
        ([HELLO, protocol.encode({"op": "get", "id": 2, "job_id": "../../etc"})], "bad_request"),
        ([HELLO, protocol.encode({"op": "get", "id": 2, "job_id": "abcdef"})], "not_found"),
        ([HELLO, protocol.encode({"op": "logs", "id": 2, "job_id": "abc", "offset": -5})], "bad_request"),
        ([HELLO, protocol.encode({"op": "list", "id": 2, "limit": 0})], "bad_request"),
        ([HELLO, protocol.encode({"op": "list", "id": 2, "status": ["DONE"]})], "bad_request"),
        ([HELLO, protocol.encode({"op": "stop", "id": 2, "job_id": 7})], "bad_request"),
    ],
)
def test_a_bad_request_gets_an_error_response_and_changes_nothing(shared_daemon, frames, reason):
    with shared_daemon.client() as client:
        before = client.list(limit=1000)[0]
    responses = raw_exchange(shared_daemon.socket, frames)
    assert responses[-1]["ok"] is False
    assert responses[-1]["error"]["reason"] == reason
    assert responses[-1]["error"]["message"]
    with shared_daemon.client() as client:
        assert client.list(limit=1000)[0] == before


def test_the_connection_survives_a_refused_request(shared_daemon):
    frames = [HELLO, protocol.encode({"op": "nope", "id": 2}), protocol.encode({"op": "list", "id": 3})]
    responses = raw_exchange(shared_daemon.socket, frames)
    assert [r["id"] for r in responses] == [1, 2, 3]
    assert responses[2]["ok"] is True


def cli(daemon, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jupyter_worker.cli", "--socket", daemon.socket, *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "--max-memory", "3", "--", "true"], 2, "memory limit: 3 MiB is below the least of 8 MiB"),
        (["run", "--timeout", "later", "--", "true"], 2, "timeout: 'later' is not a duration"),
        (["run", "--bogus", "--", "true"], 2, "unrecognized arguments: --bogus"),
        (["run"], 2, "no command given"),
        (["status", "ffffffff"], 1, "no job ffffffff"),
        (["stop", "not/an/id"], 2, "a job id is a UUID or a prefix of one"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_the_cli_answers_bad_input_with_one_line(shared_daemon, args, code, message):
    result = cli(shared_daemon, *args)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_cli_says_when_no_executor_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_worker.cli", "--socket", str(tmp_path / "none.sock"), "list"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "no executor answers at" in result.stderr and "jupyter-worker executor" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--", "sh", "-c", "echo hi; exit 0"], 0, ""),
        (["--", "sh", "-c", "exit 3"], 3, "failed (exit code 3)"),
        (["--timeout", "1s", "--", "sleep", "30"], 143, "timed out after 1s"),
        (
            ["--max-memory", "32", "--", "python3", "-c", "b = bytearray(256 << 20)"],
            137,
            "out of memory (limit 32 MiB)",
        ),
        (["--", "no-such-program"], 127, "command not found: no-such-program"),
    ],
)
def test_run_wait_exits_with_the_jobs_code_and_says_why(shared_daemon, args, code, said):
    result = cli(shared_daemon, "run", "--wait", *args)
    assert result.returncode == code, result.stderr
    assert said in result.stderr


def test_run_prints_the_new_job_and_list_shows_it(shared_daemon):
    result = cli(shared_daemon, "run", "--name", "greeting", "--", "echo", "hello")
    assert result.returncode == 0
    job_id = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("ID:"))
    listing = cli(shared_daemon, "list").stdout.splitlines()
    assert listing[0].split() == ["ID", "STATUS", "NAME", "COMMAND", "STARTED", "DURATION", "CPU", "MEMORY"]
    assert listing[1].startswith(job_id[:8]) and "echo hello" in listing[1]
    assert cli(shared_daemon, "log", "--follow", job_id[:8]).stdout == "hello\n"
    assert json.loads(cli(shared_daemon, "status", "--json", job_id[:8]).stdout)["name"] == "greeting"
    assert cli(shared_daemon, "delete", job_id).returncode == 0
