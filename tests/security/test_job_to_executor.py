"""A job never talks to the executor. Its owner may mount the folder of the executor's socket into
it (or reach it through a working folder or REST `folder`): the job then connects, but the
executor knows a process inside a job's cgroup and refuses it before any request, so the job
cannot submit, stop or delete its owner's jobs from inside its sandbox. Tried as alice against a
real executor."""

from __future__ import annotations

import json
import os

import pytest

from jupyter_worker.errors import ErrorReason
from tests.executor.conftest import ended, started_daemon

ALICE = "jwtest-alice"
KNOCK = """
import json, socket, struct, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
hello = json.dumps({"op": "hello", "id": 1, "version": 1}).encode()
try:
    sock.sendall(struct.pack(">I", len(hello)) + hello)
except OSError:
    pass
data = b""
while chunk := sock.recv(65536):
    data += chunk
print(data[4:].decode())
"""


@pytest.fixture(scope="module")
def executor(users):
    with started_daemon([]) as daemon:
        yield daemon


def test_a_job_that_reaches_the_executors_socket_is_refused_before_any_request(executor):
    folder = os.path.dirname(executor.socket)
    job = {
        "command": ["python3", "-c", KNOCK, executor.socket],
        "mounts": [{"source": folder, "destination": folder}],
    }
    record = ended(executor, ALICE, job)
    assert record["status"] == "COMPLETED", record
    with executor.client() as client:
        log = b"".join(chunk.data for chunk in client.logs(record["id"])[0]).decode()
    reply = json.loads(log)  # the one frame the executor sent before closing: no greeting
    assert (reply["ok"], reply["error"]["reason"]) == (False, ErrorReason.FORBIDDEN.value), log
    assert reply["error"]["message"] == "a job may not use the executor (it runs inside a sandbox)"


def test_alice_herself_still_reaches_the_executor(executor):
    assert ended(executor, ALICE, {"command": ["true"]})["status"] == "COMPLETED"
