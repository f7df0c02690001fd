"""What a supervisor owns besides the sandbox: its control connections and the job's output.

Control connections carry JSON events out and requests in (SOCK_SEQPACKET, one message each);
sends never block, so a stalled client costs the supervisor nothing. With capture, the supervisor
reads the job's stdout and stderr pipes (and its display pipe, for a job that asked for one) into
the job's log file and writes the outcome to a result
file, so both survive whoever asked for the job (a daemon that crashes and restarts, say).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator

from ..spec import Outcome
from . import libc
from .output import DISPLAY, STDERR, STDOUT, LogWriter

_PIPE_SIZE = 1 << 20
_READ_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031
_SUN_PATH_MAX = 107


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """A name for path that fits a Unix socket address (107 bytes): the path itself, or, for a
    longer one (a deep state folder), the same file reached through an open descriptor of its folder."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{os.path.basename(path)}"
    finally:
        os.close(folder)


class Channels:
    """The job's control connections: the launcher's, and any that attach through the listener."""

    def __init__(self, first: socket.socket | None, listener: socket.socket | None, greeting: Callable[[], dict]):
        self.connections = [first] if first is not None else []
        self.listener = listener
        self.greeting = greeting
        # told of each connection that joins (once greeted) and each that leaves (before it closes)
        self.joined: Callable[[socket.socket], None] = _nothing
        self.leaving: Callable[[socket.socket], None] = _nothing

    def fds(self) -> list[int]:
        return [c.fileno() for c in self.connections] + ([self.listener.fileno()] if self.listener else [])

    def broadcast(self, event: dict) -> None:
        data = json.dumps(event).encode()
        for connection in self.connections:
            try:
                connection.send(data, socket.MSG_DONTWAIT)
            except OSError:
                # Full, or the peer has gone; a gone peer's requests sent before it went (a stop
                # just before its executor stopped) are still to be read: handle() drops it after.
                pass

    def handle(self, fd: int) -> dict | None:
        """Accept a new connection or read one request; None when there is no request to act on."""
        if self.listener is not None and fd == self.listener.fileno():
            self._accept()
            return None
        connection = next(c for c in self.connections if c.fileno() == fd)
        try:
            data = connection.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self._drop(connection)
            return None
        try:
            request = json.loads(data)
        except ValueError:
            return None
        return request if isinstance(request, dict) else None

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()  # type: ignore[union-attr]
        except OSError:
            return
        self.connections.append(connection)
        self.joined(connection)  # before the greeting: told to the keeper, it survives our death
        try:
            connection.send(json.dumps(self.greeting()).encode(), socket.MSG_DONTWAIT)
        except OSError:
            self._drop(connection)

    def _drop(self, connection: socket.socket) -> None:
        self.leaving(connection)
        self.connections.remove(connection)
        connection.close()

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        if self.listener is not None:
            self.listener.close()


def _nothing(connection: socket.socket) -> None:
    pass


_SCRATCH: tuple[int, int] | None = None


def _scratch_pipe() -> tuple[int, int]:
    """This process's pipe that output is copied through (Capture.pump), made at its first use."""
    global _SCRATCH
    if _SCRATCH is None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe copies in smaller pieces
            fcntl.fcntl(read_end, _F_SETPIPE_SZ, _READ_SIZE)
        _SCRATCH = read_end, write_end
    return _SCRATCH


def _read_exactly(fd: int, size: int) -> bytes:
    """size bytes that fd (a pipe) is known to hold."""
    data = b""
    while len(data) < size:
        data += os.read(fd, size - len(data))
    return data


class Capture:
    """The job's stdout, stderr and (with display) display output, read from pipes into its log;
    its outcome, into a result file. job_ends are the pipes' write ends, in that order: the job's
    fds 1, 2 and, with display, launch_spec.DISPLAY_FD."""

    def __init__(self, log_fd: int, result_fd: int, cap_bytes: int, display: bool = False):
        self.log = LogWriter(log_fd, cap_bytes)
        self.result_fd = result_fd
        self.cgroup = ""
        self.streams: dict[int, int] = {}
        self.job_ends: list[int] = []
        for stream in (STDOUT, STDERR, DISPLAY) if display else (STDOUT, STDERR):
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            fcntl.fcntl(read_end, _F_SETPIPE_SZ, _PIPE_SIZE)
            # Read only when ready, and never waited on: a job can hand its pipe's write end to a
            # process outside it, so "the job has ended" does not mean "end of file soon".
            os.set_blocking(read_end, False)
            self.streams[read_end] = stream
            self.job_ends.append(write_end)

    @classmethod
    def adopt(
        cls, log_fd: int, result_fd: int, cap_bytes: int, display_cap: int, streams: dict[int, int], *, whole: int = 0
    ) -> Capture:
        """A capture handed over by another process (monitor.Handover): its log goes on after its
        last whole record (found from `whole`, an offset known to end one: a writer killed in the
        middle of a record leaves a torn one), and its pipes' read ends (fd: stream) are read on;
        the write ends are the job's."""
        capture = cls.__new__(cls)
        capture.log = LogWriter(log_fd, cap_bytes, display_cap)
        capture.log.cut_torn_tail(whole)
        capture.result_fd = result_fd
        capture.cgroup = ""
        capture.streams = dict(streams)
        capture.job_ends = []
        return capture

    def fds(self) -> list[int]:
        return list(self.streams)

    def close(self) -> None:
        """Let go of every descriptor without finishing (another process finishes the job)."""
        for fd in [*self.streams, self.log.fd, self.result_fd]:
            if fd >= 0:
                os.close(fd)
        self.streams, self.log.fd, self.result_fd = {}, -1, -1

    def pump(self, fd: int) -> bool | None:
        """Move what one pipe holds to the log: True if it moved some, None if the pipe is empty
        now, False at its end (the caller then lets it go: release, after it stops watching it).

        The bytes are copied out of the pipe (tee), written to the log, and only then taken from
        the pipe: a monitor killed between leaves them for its successor (which may write that
        record again: a kill costs at most one record twice, never a byte lost)."""
        scratch_out, scratch_in = _scratch_pipe()
        try:
            size = libc.tee(fd, scratch_in, _READ_SIZE, libc.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return None
        if not size:
            return False
        self.log.write(self.streams[fd], _read_exactly(scratch_out, size))
        _read_exactly(fd, size)  # now in the log: taken from the pipe
        return True

    def release(self, fd: int) -> None:
        del self.streams[fd]
        os.close(fd)

    def drain(self) -> None:
        """Once no job process is left, take what the pipes hold: everything the job wrote is in
        them (what a process outside the job may still write, through a write end the job handed
        it, is not the job's output and is not waited for)."""
        for fd in list(self.streams):
            while self.pump(fd):
                pass
            self.release(fd)

    def begin(self, cgroup: str, pid: int | None = None) -> None:
        """Until the outcome replaces it, the result file names the job's cgroup, so whoever finds
        the supervisor gone can remove what is left of the job, and its init's pid (through which
        the executor reads the running job's /work: sandbox/disk.py)."""
        self.cgroup = cgroup
        self._write_result({"cgroup": cgroup, "pid": pid})

    def finish(self, outcome: Outcome) -> None:
        self.drain()
        self.log.close()
        self._write_result({**outcome.to_dict(), "cgroup": self.cgroup})
        os.close(self.result_fd)
        self.log.fd, self.result_fd = -1, -1  # closed: close() has nothing left to let go of

    def _write_result(self, data: dict) -> None:
        os.ftruncate(self.result_fd, 0)
        os.pwrite(self.result_fd, json.dumps(data).encode(), 0)
        os.fsync(self.result_fd)
