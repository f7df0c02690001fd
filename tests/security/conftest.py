"""Helpers for trying attacks as a real local user: the executor's daemon and its helpers come from
tests/executor/conftest.py (started_daemon, as_user, run_as, ask_as), a user's Jupyter server from
tests/server/conftest.py (UserServer); added here are what an attacker needs beyond a
client call, and what the tests read afterwards:

- `Connector`: raw connections to the executor's socket opened by a user (the kernel names that
  user as the peer), for frames no client would send;
- `exchange`: one raw frame out, one response back (or None if the connection closed);
- `LogDrain`: a process's stderr read as it comes (a pipe nobody reads would stall the process),
  kept for the check that no traceback was logged.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import re
import socket
import threading
from collections.abc import Iterator
from typing import IO, Any

import pytest

from jupyter_worker import protocol
from jupyter_worker.errors import ErrorReason
from jupyter_worker.spec import JobStatus, Reason
from tests.executor.conftest import Daemon, started_daemon, wait_for
from tests.server.conftest import UserServer

REASONS = {reason.value for reason in ErrorReason}


def become(name: str) -> None:
    """In a forked child: drop to the user, with their groups (as tests/executor/conftest.as_user)."""
    entry = pwd.getpwnam(name)
    os.setgroups(os.getgrouplist(name, entry.pw_gid))
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


class Connector:
    """Connections to a Unix socket opened by `user`: a child that became the user connects on each
    request and hands the connected socket back (SCM_RIGHTS), so the executor sees that user's uid
    while the test, as root, writes whatever bytes it likes."""

    def __init__(self, user: str, path: str):
        self.user, self.path = user, path
        self.link, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            try:
                self.link.close()
                become(user)
                while theirs.recv(1):
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        sock.connect(path)
                        socket.send_fds(theirs, [b"+"], [sock.fileno()])
                    except OSError:
                        theirs.sendall(b"-")
                    sock.close()
            finally:
                os._exit(0)
        theirs.close()

    def connect(self, timeout: float = 10) -> socket.socket:
        self.link.sendall(b"c")
        _, fds, _, _ = socket.recv_fds(self.link, 1, 1)
        if not fds:
            raise ConnectionRefusedError(f"{self.user} could not connect to {self.path}")
        sock = socket.socket(fileno=fds[0])
        sock.settimeout(timeout)
        return sock

    @contextlib.contextmanager
    def greeted(self, timeout: float = 10) -> Iterator[socket.socket]:
        """A connection that has said hello, closed after the block."""
        with self.connect(timeout) as sock:
            reply = exchange(sock, protocol.encode({"op": "hello", "id": 0, "version": protocol.VERSION}))
            assert reply is not None and reply.get("ok"), reply
            yield sock

    def close(self) -> None:
        self.link.close()
        os.waitpid(self.pid, 0)


@pytest.fixture
def connector():
    """connector(user, socket_path) -> Connector; all closed after the test."""
    made: list[Connector] = []

    def make(user: str, path: str) -> Connector:
        made.append(Connector(user, path))
        return made[-1]

    yield make
    for each in made:
        each.close()


def exchange(sock: socket.socket, frame: bytes) -> dict[str, Any] | None:
    """Send raw bytes; the next response frame, or None if the executor closed the connection."""
    try:
        sock.sendall(frame)
    except (BrokenPipeError, ConnectionResetError):
        pass  # it may have answered and closed already: read what it said
    return receive(sock)


def receive(sock: socket.socket) -> dict[str, Any] | None:
    try:
        header = sock.recv(protocol.LENGTH.size, socket.MSG_WAITALL)
        if len(header) < protocol.LENGTH.size:
            return None
        return protocol.decode(sock.recv(protocol.frame_length(header), socket.MSG_WAITALL))
    except ConnectionResetError:
        return None


def is_answer(reply: Any) -> bool:
    """A response as the protocol defines it: ok, or an error with a known reason and a message."""
    if not isinstance(reply, dict):
        return False
    if reply.get("ok") is True:
        return True
    error = reply.get("error")
    return (
        reply.get("ok") is False
        and isinstance(error, dict)
        and error.get("reason") in REASONS
        and isinstance(error.get("message"), str)
        and bool(error["message"])
    )


class LogDrain:
    """Everything a process writes to a pipe, read by a thread as it comes."""

    def __init__(self, pipe: IO[bytes]):
        self.pipe = pipe
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            while chunk := self.pipe.read1(65536):  # type: ignore[attr-defined]
                self.chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def logged_daemon(users) -> Iterator[tuple[Daemon, LogDrain]]:
    """An executor of the module's own whose stderr (its log) is kept for the test to read."""
    with started_daemon([]) as daemon:
        assert daemon.process is not None and daemon.process.stderr is not None
        yield daemon, LogDrain(daemon.process.stderr)


@contextlib.contextmanager
def logged_user_server(user: str, executor_socket: str) -> Iterator[tuple[UserServer, LogDrain]]:
    """`jupyter server` as the user (tests/server/conftest.UserServer), its log kept."""
    server = UserServer(user, executor_socket)
    assert server.process.stderr is not None
    drain = LogDrain(server.process.stderr)
    try:
        yield server, drain
    finally:
        server.close()


def stop_and_see_them_end_normally(daemon: Daemon, long_jobs: list[str]) -> None:
    """Stop the long jobs a fuzz test started: each ends STOPPED (not lost), and the first one's log
    shows it ran its TERM trap (a normal end)."""
    with daemon.client() as client:
        for job_id in long_jobs:
            client.stop(job_id, grace_s=30)
        for job_id in long_jobs:
            ended = wait_for(lambda job_id=job_id: client.get(job_id).finished and client.get(job_id), what="an end")
            assert (ended.status, ended.reason) == (JobStatus.STOPPED, Reason.STOPPED), ended
        chunks, _, _ = client.logs(long_jobs[0], 0, 1 << 20)
        log = b"".join(c.data for c in chunks)
        assert log.startswith(b"started\n") and b"bye\n" in log, log


# a 5xx in a Jupyter server's log: what no client's request may cause
SERVER_ERROR = re.compile(r"\b5\d\d (GET|POST|DELETE|PUT|PATCH|HEAD)\b")


class Rest:
    """Raw HTTP to a user's server: bytes in, (status, the JSON body, or its text if not JSON) out."""

    def __init__(self, server):
        self.server = server

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            headers = {"Authorization": f"token {self.server.token}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, f"/api/worker/{path}", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, data.decode(errors="replace")
