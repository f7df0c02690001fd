"""Clients of the executor: `Client` (blocking) and `AsyncClient` (asyncio), one implementation.

    from jupyter_worker.client import Client
    with Client() as client:                       # $JUPYTER_WORKER_SOCKET or the default socket
        job = client.run({"command": ["python3", "-c", "print(1)"], "limits": {"memory_mb": "256M"}})
        for event in client.follow(job.id):        # log chunks, status, metrics, then end
            ...

A Jupyter server whose jobs end with it sets $JUPYTER_WORKER_HOLDER for itself and its kernels
and terminals; `run` names that holder unless the job names one, so those jobs end with the server
(executor/holds.py).

Every request method is written once, in _Requests, against an abstract _call; the two classes
differ only in how a frame travels. Errors from the executor raise WorkerError (with a stable
`reason`, errors.ErrorReason); a missing executor raises ExecutorUnavailable, one of them. Jobs
come back as spec.JobRecord, in results and in stream events alike.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import protocol
from .errors import ErrorReason, WorkerError
from .spec import JobRecord, JobRequest

DEFAULT_SOCKET = "/run/jupyter-worker/executor.sock"
HOLDER_ENV = "JUPYTER_WORKER_HOLDER"
RELEASE_WAIT_S = 5.0
_METRICS_KEYS = ("samples", "memory_limit_bytes", "cpu_limit_percent")


def _unreachable(path: str, exc: OSError) -> WorkerError:
    """Why a connect failed, for both clients: no executor there, or a socket (or a folder on its
    way) closed to this user."""
    if isinstance(exc, PermissionError):
        return WorkerError(ErrorReason.FORBIDDEN, f"{path}: this user may not reach that socket")
    return ExecutorUnavailable(path, exc.strerror or str(exc))


class ExecutorUnavailable(WorkerError):
    """No executor answers at the socket."""

    def __init__(self, path: str, why: str):
        super().__init__(
            ErrorReason.UNAVAILABLE,
            f"no executor answers at {path} ({why}); start one as root: jupyter-worker executor",
        )


@dataclass
class LogChunk:
    offset: int
    stream: str
    data: bytes


def socket_path(path: str | None = None) -> str:
    return path or os.environ.get("JUPYTER_WORKER_SOCKET") or DEFAULT_SOCKET


def _result(response: dict[str, Any]) -> dict[str, Any]:
    if not response.get("ok"):
        raise WorkerError.from_dict(response.get("error"))
    return response


def _record(result: dict[str, Any]) -> JobRecord:
    return JobRecord.from_dict(result["job"])


def _chunks(result: dict[str, Any]) -> tuple[list[LogChunk], int, bool]:
    chunks = [LogChunk(c["offset"], c["stream"], base64.b64decode(c["data"])) for c in result["chunks"]]
    return chunks, result["offset"], result["finished"]


def _stream_event(message: dict[str, Any]) -> dict[str, Any]:
    if "error" in message:
        _result(message)
    if message.get("event") == "log":
        message["data"] = base64.b64decode(message["data"])
    if "job" in message:
        message["job"] = JobRecord.from_dict(message["job"])
    return message


class _Requests:
    """The requests, once; _call(op, params, pick) is sync or async depending on the subclass."""

    def _call(self, op: str, params: dict[str, Any], pick: Callable[[dict[str, Any]], Any]) -> Any:
        raise NotImplementedError

    def run(self, job: JobRequest | dict[str, Any]) -> Any:
        """Submit a job; returns its JobRecord, QUEUED or RUNNING."""
        job = job.to_dict() if isinstance(job, JobRequest) else job
        holder = os.environ.get(HOLDER_ENV)
        if holder and not job.get("holder"):
            job = {**job, "holder": holder}
        return self._call("run", {"job": job}, _record)

    def list(
        self,
        status: list[str] | None = None,
        limit: int = 50,
        cursor: int | None = None,
        order: str = "newest",
        owner: str | None = None,
    ) -> Any:
        """One page of jobs, newest first unless order='oldest'; returns (jobs, next cursor or None)."""
        params = {"status": status, "limit": limit, "cursor": cursor, "order": order, "owner": owner}
        return self._call("list", params, lambda r: ([JobRecord.from_dict(j) for j in r["jobs"]], r["cursor"]))

    def get(self, job_id: str) -> Any:
        """The JobRecord of a job, by id or unique prefix."""
        return self._call("get", {"job_id": job_id}, _record)

    def logs(self, job_id: str, offset: int = 0, max_bytes: int = 1 << 20) -> Any:
        """Log chunks from offset on; returns (chunks, next offset, whether the job has finished)."""
        return self._call("logs", {"job_id": job_id, "offset": offset, "max_bytes": max_bytes}, _chunks)

    def metrics(self, job_id: str) -> Any:
        """The job's metric history: {"samples": [{"t", "cpu_percent", "memory_bytes", "pids"}],
        "memory_limit_bytes", "cpu_limit_percent"} (a point a second, fewer and wider for a long job;
        docs/protocol.md)."""
        return self._call("metrics", {"job_id": job_id}, lambda r: {key: r[key] for key in _METRICS_KEYS})

    def files(self, job_id: str, path: str = "", offset: int = 0) -> Any:
        """A page of a folder of the job's /work: {"path", "kind", "entries": [{name, type, kind, size,
        mtime}], "truncated", "next_offset"} (None after the last page; jobs.Job.files reads them
        all); a path that is not a folder: no entries, and its kind (transfer.KIND_WORDS)."""
        pick = ("path", "entries", "truncated")

        def page(r: dict[str, Any]) -> dict[str, Any]:
            return {**{key: r[key] for key in pick}, "next_offset": r.get("next_offset"), "kind": r.get("kind")}

        return self._call("files", {"job_id": job_id, "path": path, "offset": offset}, page)

    def read_file(self, job_id: str, path: str, offset: int = 0, max_bytes: int = 1 << 20) -> Any:
        """Bytes of a regular file in the job's /work from offset; returns (data, the file's size)."""
        request = {"job_id": job_id, "path": path, "offset": offset, "max_bytes": max_bytes}
        return self._call("read_file", request, lambda r: (base64.b64decode(r["data"]), r["size"]))

    def stop(self, job_id: str, grace_s: float | None = None) -> Any:
        return self._call("stop", {"job_id": job_id, "grace_s": grace_s}, _record)

    def delete(self, job_id: str) -> Any:
        return self._call("delete", {"job_id": job_id}, lambda r: None)

    def capabilities(self, whole: bool = False) -> Any:
        """The policy as it applies to the caller; whole: also the backends offered ("backends",
        and each cluster backend's description under its name)."""
        if whole:
            return self._call("capabilities", {}, lambda r: {k: v for k, v in r.items() if k not in ("id", "ok")})
        return self._call("capabilities", {}, lambda r: r["policy"])


class Client(_Requests):
    """A blocking client; one connection for requests, one more for each follow or watch."""

    def __init__(self, path: str | None = None, timeout: float | None = 60):
        self.path = socket_path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._next_id = 0
        self.identity: dict[str, Any] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self, *then: tuple[str, dict[str, Any]]) -> socket.socket:
        """A greeted connection. Requests in then go with the hello, in one write (the executor
        answers in order): a stream costs one round trip, not two; their refusals raise."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
            sock.close()
            raise _unreachable(self.path, exc) from None
        try:
            replies = self._exchange(sock, ("hello", {"version": protocol.VERSION}), *then)
        except BaseException:
            sock.close()
            raise
        self.identity = replies[0]
        return sock

    def _exchange(self, sock: socket.socket, *requests: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Send the requests in one write, then read their responses in order (the first refusal raises)."""
        frames = []
        for op, params in requests:
            self._next_id += 1
            frames.append(protocol.encode({"op": op, "id": self._next_id, **params}))
        try:
            sock.sendall(b"".join(frames))
        except (BrokenPipeError, ConnectionResetError):
            # The executor may refuse a connection (busy) and close it before reading a word: its
            # refusal is then already waiting to be read.
            pass
        return [_result(self._read(sock)) for _ in requests]

    @staticmethod
    def _read(sock: socket.socket) -> dict[str, Any]:
        header = _read_exactly(sock, protocol.LENGTH.size)
        return protocol.decode(_read_exactly(sock, protocol.frame_length(header)))

    def _call(self, op: str, params: dict[str, Any], pick: Callable[[dict[str, Any]], Any]) -> Any:
        if self._sock is None:
            self._sock = self._connect()
        return pick(self._exchange(self._sock, (op, params))[0])

    def _stream(self, op: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Subscribe now (so nothing after this call is missed); events come as they are iterated."""
        sock = self._connect((op, params))
        sock.settimeout(None)
        return self._events(sock)

    def _events(self, sock: socket.socket) -> Iterator[dict[str, Any]]:
        try:
            while True:
                event = _stream_event(self._read(sock))
                yield event
                if event.get("event") == "end":
                    return
        finally:
            sock.close()

    def follow(self, job_id: str, offset: int = 0) -> Iterator[dict[str, Any]]:
        """Log chunks (event 'log', data as bytes), 'status', 'metrics', and finally 'end'."""
        return self._stream("follow", {"job_id": job_id, "offset": offset})

    def watch(self) -> Iterator[dict[str, Any]]:
        """Every change to a job the caller may see, as it happens ('job' events); never ends."""
        return self._stream("watch", {})


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        try:
            piece = sock.recv(size - len(data))
        except ConnectionResetError:
            piece = b""
        if not piece:
            raise WorkerError(ErrorReason.DISCONNECTED, "the executor closed the connection")
        data += piece
    return bytes(data)


class AsyncClient(_Requests):
    """The asyncio client: the same requests as Client, awaited."""

    def __init__(self, path: str | None = None):
        self.path = socket_path(path)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._next_id = 0
        self.identity: dict[str, Any] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def _connect(self, *then: tuple[str, dict[str, Any]]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A greeted connection; requests in then go with the hello, in one write (as Client._connect)."""
        try:
            streams = await asyncio.open_unix_connection(self.path, limit=protocol.MAX_FRAME + 4)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
            raise _unreachable(self.path, exc) from None
        try:
            replies = await self._exchange_all(streams, ("hello", {"version": protocol.VERSION}), *then)
        except BaseException:
            streams[1].close()
            raise
        self.identity = replies[0]
        return streams

    async def _exchange(self, streams, op: str, params: dict[str, Any]) -> dict[str, Any]:
        return (await self._exchange_all(streams, (op, params)))[0]

    async def _exchange_all(self, streams, *requests: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        frames = []
        for op, params in requests:
            self._next_id += 1
            frames.append(protocol.encode({"op": op, "id": self._next_id, **params}))
        try:
            streams[1].write(b"".join(frames))
            await streams[1].drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # as in Client._exchange: a refusal may be waiting to be read
        return [_result(await self._read(streams[0])) for _ in requests]

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            header = await reader.readexactly(protocol.LENGTH.size)
            return protocol.decode(await reader.readexactly(protocol.frame_length(header)))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            raise WorkerError(ErrorReason.DISCONNECTED, "the executor closed the connection") from None

    async def _call_async(self, op: str, params: dict[str, Any], pick: Callable[[dict[str, Any]], Any]) -> Any:
        async with self._lock:
            if self._streams is None:
                self._streams = await self._connect()
            # an executor that went away (a restart) fails this request; the next one connects again
            try:
                return pick(await self._exchange(self._streams, op, params))
            except OSError:
                await self.close()
                raise WorkerError(ErrorReason.DISCONNECTED, "the executor closed the connection") from None
            except WorkerError as exc:
                if exc.reason is ErrorReason.DISCONNECTED:
                    await self.close()
                raise

    def _call(self, op: str, params: dict[str, Any], pick: Callable[[dict[str, Any]], Any]) -> Any:
        return self._call_async(op, params, pick)

    async def _stream(self, op: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        streams = await self._connect((op, params))
        try:
            while True:
                event = _stream_event(await self._read(streams[0]))
                yield event
                if event.get("event") == "end":
                    return
        finally:
            streams[1].close()

    def follow(self, job_id: str, offset: int = 0) -> AsyncIterator[dict[str, Any]]:
        return self._stream("follow", {"job_id": job_id, "offset": offset})

    async def hold(self, holder: str) -> Hold:
        """Claim the jobs that name holder: they are stopped when this connection closes."""
        streams = await self._connect()
        try:
            await self._exchange(streams, "hold", {"holder": holder})
        except BaseException:
            streams[1].close()
            raise
        return Hold(*streams)

    def watch(self) -> AsyncIterator[dict[str, Any]]:
        return self._stream("watch", {})


class Hold:
    """An open hold; closing it (or this process ending) stops the jobs it holds."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    async def lost(self) -> None:
        """Returns when the executor has gone (a restart): hold again, within its grace period."""
        try:
            while await self._reader.read(4096):
                pass
        except ConnectionError:
            pass

    async def release(self) -> None:
        """End the hold and wait (a few seconds at most) until the executor has stopped its jobs, so
        that an executor stopping right after, such as an embedded one, has seen to them first."""
        try:
            self._writer.write_eof()
            await asyncio.wait_for(self.lost(), RELEASE_WAIT_S)
        except (OSError, TimeoutError):
            pass
        finally:
            self._writer.close()
