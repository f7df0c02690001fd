"""Robust downloads (GET jobs/{id}/files/download): a client that goes midway, or a job deleted while
its file streams, ends that one response, never as a traceback in the server's log nor as a response
that looks whole (the length is said up front; a download cut short is closed short of it). Tried by a
real user (alice) on her own Jupyter server, running as her, against a real executor."""

from __future__ import annotations

import json
import socket
import time

import pytest

from jupyter_worker.spec import JobStatus
from tests.executor.conftest import wait_for
from tests.security.conftest import SERVER_ERROR, Rest, logged_user_server

ALICE = "jwtest-alice"
SIZE = 64 << 20


@pytest.fixture(scope="module")
def alices(logged_daemon, users):
    daemon, executor_log = logged_daemon
    with logged_user_server(ALICE, daemon.socket) as (server, server_log):
        yield server, executor_log, server_log, Rest(server)


def big_file_job(rest: Rest) -> str:
    command = ["sh", "-c", f"head -c {SIZE} /dev/urandom > big"]
    code, job = rest.call("POST", "jobs", json.dumps({"command": command}).encode())
    assert code == 201, job
    wait_for(lambda: rest.call("GET", f"jobs/{job['id']}")[1]["status"] == JobStatus.COMPLETED.value, what="end")
    return job["id"]


def started_download(server, job_id: str) -> tuple[socket.socket, bytes]:
    """A raw download of big, its head and first bytes read, the rest left unread."""
    connection = socket.create_connection(("127.0.0.1", server.port))
    head = f"GET /api/worker/jobs/{job_id}/files/download?path=big HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    connection.sendall(f"{head}Authorization: token {server.token}\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(1 << 16)
    return connection, received


def clean(*logs) -> None:
    for log in logs:
        text = log.text()
        assert "Traceback" not in text and "Uncaught exception" not in text and not SERVER_ERROR.search(text), text


def test_a_client_that_drops_downloads_midway_leaves_no_traceback_and_the_next_download_is_whole(alices):
    server, executor_log, server_log, rest = alices
    job_id = big_file_job(rest)
    for _ in range(3):
        connection, received = started_download(server, job_id)
        assert received.startswith(b"HTTP/1.1 200") and f"Content-Length: {SIZE}".encode() in received
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # a reset
        connection.close()
    time.sleep(2)
    code, data = rest.call("GET", f"jobs/{job_id}/files/download?path=big")
    assert code == 200 and len(data) > 0
    clean(executor_log, server_log)


def test_a_job_deleted_while_its_file_downloads_ends_the_download_short_of_its_length_not_as_whole(alices):
    server, executor_log, server_log, rest = alices
    job_id = big_file_job(rest)
    connection, received = started_download(server, job_id)
    try:
        time.sleep(1)  # the server fills what the socket holds, then waits for the client to read
        code, _ = rest.call("DELETE", f"jobs/{job_id}")
        assert code == 204
        connection.settimeout(60)
        while chunk := connection.recv(1 << 20):  # the rest, until the server closes
            received += chunk
    finally:
        connection.close()
    body = received.split(b"\r\n\r\n", 1)[1]
    assert f"Content-Length: {SIZE}".encode() in received and len(body) < SIZE
    assert b"Transfer-Encoding: chunked" not in received
    clean(executor_log, server_log)
    assert "cut short" in server_log.text()
