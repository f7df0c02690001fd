"""The executor's socket: framed JSON requests from local clients, identified by SO_PEERCRED.

Each connection starts with hello (the protocol version), then one request at a time; "follow"
and "watch" turn the connection into a stream until it ends, and "hold" into a claim that lasts
as long as the connection (executor/holds.py). This is the protocol boundary: each operation's
fields are decoded here, once, into typed values (a bad one is a bad_request naming the field),
and every refusal, a WorkerError, becomes one error response. Bad frames, unknown operations and
oversized messages get an error response too; nothing a client sends produces a traceback.

Fair access (`Admission`): each uid other than root and the admin group holds at most
Policy.max_connections_per_user connections and has at most Policy.max_requests_per_user requests
being answered; all of them together leave Policy.reserved_connections of Policy.max_connections
to root and admins, so no user, nor all users together, lock those out. A refused connection gets
one `busy` frame naming the cap. A connection must say hello within Policy.hello_timeout_s, and a
frame once begun must arrive within Policy.frame_timeout_s; else it is closed. An idle greeted
connection is kept (a stream, a hold, a client between requests): the per-user cap bounds them.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import socket
import struct
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import protocol
from ..errors import ErrorReason, WorkerError
from ..limits import LIMITS, Limits
from ..sandbox import cgroups as sandbox_cgroups
from ..sandbox import disk as sandbox_disk
from ..sandbox import unix_address
from ..spec import MAX_STOP_GRACE_S, JobRequest, JobStatus, shown, validate_holder
from . import workfiles
from .access import Caller, Role, Roles
from .policy import Policy
from .service import Executor, ListQuery

_PEERCRED = struct.Struct("3i")
LOGS_DEFAULT_BYTES = 512 << 10
READ_FILE_DEFAULT_BYTES = 1 << 20
# A job's /work is read (files, read_file) in threads of the server's own: a folder of 100k names,
# or a kept disk image mounted for one read (sandbox/disk.view), never holds the event loop. Each
# uid has at most FILE_TURNS of them at once (more wait their turn, within max_requests_per_user),
# so one user's slow reads cannot take every thread from the others.
FILE_THREADS = 8
FILE_TURNS = 2
MAX_WHOLE = 1 << 53  # offsets, sizes and cursors: JSON-safe whole numbers, far inside 64 bits

Request = dict[str, Any]
T = TypeVar("T")


@dataclass
class Admission:
    """Who holds how many connections and requests; refuses (with the cap's words) what one uid, or
    the ordinary users together, may not take. Privileged callers are counted but never refused below
    the global cap, and only they may use its reserve."""

    max_connections: int
    reserved: int
    per_user: int
    requests_per_user: int
    total: int = 0
    connections: dict[int, int] = field(default_factory=dict)
    requests: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, policy: Policy) -> Admission:
        reserved = min(policy.reserved_connections, policy.max_connections - 1)
        return cls(policy.max_connections, reserved, policy.max_connections_per_user, policy.max_requests_per_user)

    def enter(self, uid: int, privileged: bool) -> str | None:
        """Count a new connection in, or say which cap refuses it (and count nothing)."""
        if self.total >= self.max_connections:
            return f"too many connections: the executor has {self.max_connections}, its most (Policy.max_connections)"
        if not privileged:
            if self.total >= self.max_connections - self.reserved:
                return (
                    f"too many connections: the executor has {self.total}; the last {self.reserved} are kept for root "
                    "and admins (Policy.reserved_connections)"
                )
            if self.connections.get(uid, 0) >= self.per_user:
                return (
                    f"too many connections: this user has {self.per_user} open, the most "
                    "(Policy.max_connections_per_user)"
                )
        self.total += 1
        self.connections[uid] = self.connections.get(uid, 0) + 1
        return None

    def leave(self, uid: int) -> None:
        self.total -= 1
        self.connections[uid] -= 1
        if not self.connections[uid]:
            del self.connections[uid]

    @contextlib.contextmanager
    def request(self, uid: int, privileged: bool) -> Iterator[None]:
        """One request being answered; past the user's cap, busy."""
        if not privileged and self.requests.get(uid, 0) >= self.requests_per_user:
            raise WorkerError(
                ErrorReason.BUSY,
                f"this user has {self.requests_per_user} requests being answered, the most "
                "(Policy.max_requests_per_user)",
            )
        self.requests[uid] = self.requests.get(uid, 0) + 1
        try:
            yield
        finally:
            self.requests[uid] -= 1
            if not self.requests[uid]:
                del self.requests[uid]


class Server:
    def __init__(self, executor: Executor, socket_path: str, admin_group: str | None, viewer_group: str | None):
        self.executor = executor
        self.socket_path = socket_path
        self.roles = Roles(admin_group, viewer_group)
        self.admission = Admission.of(executor.policy)
        self.server: asyncio.AbstractServer | None = None
        self._file_threads = concurrent.futures.ThreadPoolExecutor(
            FILE_THREADS, thread_name_prefix="jupyter-worker-files"
        )
        self._file_turns: dict[int, tuple[asyncio.Semaphore, list[int]]] = {}  # uid -> turns, users
        self.ops: dict[str, Callable[[Caller, Request], dict[str, Any]]] = {
            "hello": self._hello,
            "run": self._run,
            "list": self._list,
            "get": self._get,
            "logs": self._logs,
            "metrics": self._metrics,
            "stop": self._stop,
            "delete": self._delete,
            "capabilities": self._capabilities,
        }

    async def start(self) -> None:
        folder = os.path.dirname(self.socket_path)
        if not os.path.isdir(folder):
            os.makedirs(folder)
            os.chmod(folder, 0o755)  # whatever the umask: every local user connects here
        elif not os.stat(folder).st_mode & 0o001:
            logging.getLogger(__name__).warning(
                "%s is not searchable by other users: only root can reach the socket in it", folder
            )
        self.server = await asyncio.start_unix_server(
            self._serve, sock=_open_to_everyone(self.socket_path), limit=protocol.MAX_FRAME + 4
        )

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self._file_threads.shutdown(wait=False, cancel_futures=True)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def caller(self, sock: socket.socket) -> Caller:
        """The peer's identity as the kernel reports it, and its role under this executor's policy.
        A process inside a job is nobody here: a job whose owner mounted this socket's folder into
        it must not act as its owner beyond its sandbox (submit, stop, delete), whatever path it
        reached the socket by."""
        pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if sandbox_cgroups.in_a_job(pid):
            raise WorkerError(ErrorReason.FORBIDDEN, "a job may not use the executor (it runs inside a sandbox)")
        return dataclasses.replace(self.roles.caller(uid, gid), umask=_umask_of(pid))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                caller = self.caller(writer.get_extra_info("socket"))
            except WorkerError as exc:
                await asyncio.wait_for(_send(writer, protocol.failed(None, exc)), 1)
                return
            privileged = caller.role is Role.ADMIN
            refused = self.admission.enter(caller.uid, privileged)
            if refused is not None:
                await asyncio.wait_for(_send(writer, protocol.failed(None, WorkerError(ErrorReason.BUSY, refused))), 1)
                return
            try:
                await self._converse(caller, privileged, reader, writer)
            finally:
                self.admission.leave(caller.uid)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _converse(
        self, caller: Caller, privileged: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        policy = self.executor.policy
        greeted = False
        while True:
            try:
                if greeted:
                    request = await _receive(reader, policy.frame_timeout_s)
                else:  # the whole hello, from the moment of connecting
                    request = await asyncio.wait_for(_receive(reader, None), policy.hello_timeout_s)
            except TimeoutError:
                why = "no hello came in time" if not greeted else "a request frame did not arrive in time"
                await asyncio.wait_for(
                    _send(writer, protocol.failed(None, WorkerError(ErrorReason.BAD_REQUEST, why))), 1
                )
                return
            except WorkerError as exc:
                await _send(writer, protocol.failed(None, exc))
                return
            if request is None:
                return
            request_id = None
            try:
                request_id = protocol.request_id(request)
                if not greeted and request.get("op") != "hello":
                    raise WorkerError(ErrorReason.BAD_REQUEST, "the first request must be hello")
                greeted = True
                if request.get("op") == "follow":
                    await _until_hung_up(reader, self._follow(caller, request, writer))
                    return
                if request.get("op") == "watch":
                    await _until_hung_up(reader, self._watch(caller, request, writer))
                    return
                if request.get("op") == "hold":
                    await self._hold(caller, request, reader, writer)
                    return
                with self.admission.request(caller.uid, privileged):
                    reply = protocol.ok(request_id, **(await self._answer(caller, request)))
                await _send(writer, reply)
            except WorkerError as exc:
                await _send(writer, protocol.failed(request_id, exc))

    async def _answer(self, caller: Caller, request: Request) -> dict[str, Any]:
        """handle; a job's /work listed or read in a file thread, off the loop (_in_work), and a
        run answered once its job has started."""
        if request.get("op") == "files":
            job_ref, path, offset = _files_args(request)
            folder, ran_as = self.executor.work_of(caller, job_ref)  # who may see it: on the loop
            return await self._in_work(caller, workfiles.listing, folder, ran_as, path, offset)
        if request.get("op") == "read_file":
            job_ref, path = _job_ref(request), _path(request)
            offset, max_bytes = (
                _whole(request, "offset", 0, 0),
                _whole(request, "max_bytes", READ_FILE_DEFAULT_BYTES, 1),
            )
            folder, ran_as = self.executor.work_of(caller, job_ref)
            data, size = await self._in_work(caller, workfiles.read, folder, path, offset, max_bytes, ran_as)
            return {"data": base64.b64encode(data).decode(), "size": size}
        if request.get("op") == "run":  # answered once the job has started (its start is off the loop)
            job = await self.executor.submit_started(caller, JobRequest.from_dict(request.get("job")))
            return {"job": job.to_dict()}
        return self.handle(caller, request)

    async def _in_work(self, caller: Caller, read: Callable[..., T], *args: Any) -> T:
        """read(*args) in one of the file threads, on one of the caller's FILE_TURNS turns."""
        turns, users = self._file_turns.setdefault(caller.uid, (asyncio.Semaphore(FILE_TURNS), [0]))
        users[0] += 1
        try:
            async with turns:
                return await asyncio.get_running_loop().run_in_executor(self._file_threads, lambda: read(*args))
        finally:
            users[0] -= 1
            if not users[0]:
                del self._file_turns[caller.uid]

    def handle(self, caller: Caller, request: Request) -> dict[str, Any]:
        """One request-response operation."""
        name = request.get("op")
        op = self.ops.get(name) if isinstance(name, str) else None
        if op is None:
            known = ", ".join(protocol.OPS)
            raise WorkerError(ErrorReason.BAD_REQUEST, f"unknown operation {shown(request.get('op'))}; one of {known}")
        return op(caller, request)

    # ---- the operations: decode, call the executor, encode

    def _hello(self, caller: Caller, request: Request) -> dict[str, Any]:
        if request.get("version") != protocol.VERSION:
            raise WorkerError(ErrorReason.VERSION, f"this executor speaks protocol version {protocol.VERSION}")
        return {"version": protocol.VERSION, "user": caller.name, "uid": caller.uid, "role": caller.role.value}

    def _run(self, caller: Caller, request: Request) -> dict[str, Any]:
        return {"job": self.executor.submit(caller, JobRequest.from_dict(request.get("job"))).to_dict()}

    def _list(self, caller: Caller, request: Request) -> dict[str, Any]:
        records, cursor = self.executor.list(caller, _list_query(request))
        return {"jobs": [r.to_dict() for r in records], "cursor": cursor}

    def _get(self, caller: Caller, request: Request) -> dict[str, Any]:
        return {"job": self.executor.find(caller, _job_ref(request)).to_dict()}

    def _logs(self, caller: Caller, request: Request) -> dict[str, Any]:
        job_ref = _job_ref(request)
        offset, max_bytes = _whole(request, "offset", 0, 0), _whole(request, "max_bytes", LOGS_DEFAULT_BYTES, 1)
        record, chunks, next_offset = self.executor.logs(caller, job_ref, offset, max_bytes)
        encoded = [_chunk(c.offset, c.stream_name, c.data) for c in chunks]
        return {"chunks": encoded, "offset": next_offset, "finished": record.finished}

    def _metrics(self, caller: Caller, request: Request) -> dict[str, Any]:
        return self.executor.metrics(caller, _job_ref(request))

    def _stop(self, caller: Caller, request: Request) -> dict[str, Any]:
        return {"job": self.executor.stop(caller, _job_ref(request), _grace(request)).to_dict()}

    def _delete(self, caller: Caller, request: Request) -> dict[str, Any]:
        self.executor.delete(caller, _job_ref(request))
        return {}

    def _capabilities(self, caller: Caller, request: Request) -> dict[str, Any]:
        backends = self.executor.supervision.backends
        described = {name: backend.describe() for name, backend in backends.items() if name != "local"}
        return {"policy": _policy(self.executor, caller), "backends": list(backends), **described}

    # ---- the operations that keep the connection

    async def _hold(
        self, caller: Caller, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Until the peer closes the connection (or its sending half: the executor closes its own
        once the jobs are stopped); the executor's own shutdown (a cancellation) ends nothing, so the
        claim waits for the holder after the restart."""
        caller.check_run()
        holder = validate_holder(request.get("holder"))
        holds = self.executor.holds
        holds.connected(caller.uid, holder)
        try:
            await _send(writer, protocol.ok(request.get("id"), holding=True))
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        holds.disconnected(caller.uid, holder)

    async def _watch(self, caller: Caller, request: Request, writer: asyncio.StreamWriter) -> None:
        request_id = request.get("id")
        queue = self.executor.watch_list()
        try:
            await _send(writer, protocol.ok(request_id, watching=True))
            while True:
                record = await queue.get()
                if caller.may_see(record):
                    await _send(writer, {"id": request_id, "event": "job", "job": record.to_dict()})
        finally:
            self.executor.unwatch_list(queue)

    async def _follow(self, caller: Caller, request: Request, writer: asyncio.StreamWriter) -> None:
        request_id = request.get("id")
        raw = request.get("raw", False)
        if not isinstance(raw, bool):
            raise WorkerError(ErrorReason.INVALID, "raw: true or false")
        batches = self.executor.follow(caller, _job_ref(request), _whole(request, "offset", 0, 0), raw)
        first = await anext(batches)  # a job the caller may not see is refused before "following"
        await _send_all(writer, [protocol.ok(request_id, following=True), *(_event(request_id, e) for e in first)])
        async for batch in batches:  # what one look found goes out in one write
            await _send_all(writer, [_event(request_id, event) for event in batch])


def _open_to_everyone(path: str) -> socket.socket:
    """A Unix socket bound at path (in place of any there), 0666 from the moment it exists there (a
    chmod after binding there would leave a moment in which, under a strict umask, users are
    refused): bound in a private folder beside it (root's, 0700: nothing there can be swapped for a
    link before the chmod), opened up, then renamed into place. Not by lowering the process's umask
    around the bind: the threads making files meanwhile made them under it too (the spare job
    folders, executor/local.py, whose /work lost its x bits: the first jobs after a start failed at
    chdir /work)."""
    private = tempfile.mkdtemp(dir=os.path.dirname(path))
    partial = os.path.join(private, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with unix_address(partial) as address:
            sock.bind(address)
        os.chmod(partial, 0o666)
        os.rename(partial, path)
    except BaseException:
        sock.close()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        os.rmdir(private)
    return sock


def _umask_of(pid: int) -> int:
    """The peer's umask as the kernel shows it (Linux 4.7+); 0o077 (private) when it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8) & 0o777
    return 0o077


def _files_args(request: Request) -> tuple[str, str, int]:
    """A files request's job, path in /work and offset."""
    return _job_ref(request), _path(request, ""), _whole(request, "offset", 0, 0)


async def _until_hung_up(reader: asyncio.StreamReader, stream: Coroutine[Any, Any, None]) -> None:
    """Run a stream until it ends or its peer closes the connection: a quiet job's follower that
    hung up would otherwise keep its place (and its user's) until the job next had news."""
    streaming, hanging_up = asyncio.ensure_future(stream), asyncio.ensure_future(_hung_up(reader))
    try:
        done, _ = await asyncio.wait({streaming, hanging_up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        streaming.cancel()
        hanging_up.cancel()
        # Both have ended before the connection is read again: a reader serves one waiter at a time,
        # and after a refused stream the client may send its next request.
        await asyncio.wait({streaming, hanging_up})
    if streaming in done:
        streaming.result()  # its refusal, if it was refused


async def _hung_up(reader: asyncio.StreamReader) -> None:
    """Until the end of the connection; anything a client sends on a stream is ignored."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass


# ---- decoding a request's fields; an absent field or null takes the default


def _job_ref(request: Request) -> str:
    job_ref = request.get("job_id")
    if not isinstance(job_ref, str) or not job_ref.replace("-", "").isalnum() or len(job_ref) > 36:
        raise WorkerError(ErrorReason.BAD_REQUEST, "a job id is a UUID or a prefix of one")
    return job_ref


def _whole(request: Request, key: str, default: int, low: int, high: int = MAX_WHOLE) -> int:
    """A whole number within low..high: offsets and sizes reach pread and lseek, which take 64 bits."""
    value = request.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WorkerError(ErrorReason.BAD_REQUEST, f"{key}: a whole number from {low} to {high}")
    return value


def _path(request: Request, default: str | None = None) -> str:
    """A path in the job's /work as text (workfiles.py keeps it inside /work)."""
    path = request.get("path")
    path = default if path is None else path
    if not isinstance(path, str):
        raise WorkerError(ErrorReason.BAD_REQUEST, "path: a path inside the job's /work")
    return path


def _grace(request: Request) -> float | None:
    grace = request.get("grace_s")
    if grace is None:
        return None
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= MAX_STOP_GRACE_S:
        raise WorkerError(ErrorReason.BAD_REQUEST, f"grace_s: seconds from 0 to {MAX_STOP_GRACE_S:g}")
    return grace


def _list_query(request: Request) -> ListQuery:
    statuses = request.get("status") or None
    if isinstance(statuses, str):
        statuses = [statuses]
    if statuses is not None and (
        not isinstance(statuses, list) or not all(isinstance(s, str) and s in JobStatus.__members__ for s in statuses)
    ):
        raise WorkerError(ErrorReason.BAD_REQUEST, f"status: one or more of {', '.join(JobStatus.__members__)}")
    limit, cursor = request.get("limit"), request.get("cursor")
    limit = 50 if limit is None else limit
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= 1000
        or not (
            cursor is None or (isinstance(cursor, int) and not isinstance(cursor, bool) and 0 <= cursor <= MAX_WHOLE)
        )
    ):
        raise WorkerError(ErrorReason.BAD_REQUEST, "limit: 1 to 1000; cursor: the number a previous page gave")
    owner = request.get("owner")
    if owner is not None and not isinstance(owner, str):
        raise WorkerError(ErrorReason.BAD_REQUEST, "owner: a user name")
    return ListQuery(
        statuses=tuple(JobStatus(s) for s in statuses) if statuses else None,
        limit=limit,
        cursor=cursor,
        oldest_first=request.get("order") == "oldest",
        owner=owner or None,
    )


# ---- encoding


def _policy(executor: Executor, caller: Caller) -> dict[str, Any]:
    """The settings as they apply to this caller: their own maxima and cap, not everyone's entries."""
    policy = executor.policy
    settings = {name: getattr(policy, name) for name in policy.trait_names() if policy.trait_metadata(name, "config")}
    del settings["user_limits"], settings["group_limits"]
    allowance = policy.allowance(caller.name).to_dict()
    settings["max_jobs_per_user"] = allowance.pop("max_jobs")
    settings["max_queued_per_user"] = allowance.pop("max_queued")
    settings |= allowance
    # The default shown is what this caller's job asking for nothing gets (the policy's merge itself).
    # Both lowered to what the host has (executor/capacity.py): a form offers no more than that.
    host = executor.capacity
    defaults = host.lowered(policy.limits_for(Limits(), policy.allowance(caller.name)))
    most = host.lowered(Limits(**{row.field: settings.get(row.max_setting) for row in LIMITS if row.max_setting}))
    on_host = {"memory_mb": host.memory_mb, "cpu_percent": host.cpu_percent}
    limits = [
        row.describe()
        | {
            "default": getattr(defaults, row.field),
            "maximum": _most(getattr(most, row.field), on_host.get(row.field)),
            "host": on_host.get(row.field),
        }
        for row in LIMITS
    ]
    settings["host"] = host.to_dict()
    networks = executor.networks_for(caller, policy.allowance(caller.name))
    settings["allowed_networks"] = [mode.value for mode in networks]
    settings["default_network"] = executor.network.default_mode(policy.default_network, networks).value
    disk_problem = sandbox_disk.problem()
    settings["disk_limit"] = {"enforced": disk_problem is None, "why_not": disk_problem}
    return {**settings, "limits": limits, "network_modes": executor.network.modes(networks)}


def _most(maximum: Any, on_host: Any) -> Any:
    """A limit's maximum as a client offers it: the policy's, lowered to the host's figure (where
    the policy sets none, the host's figure)."""
    return on_host if maximum is None else maximum


def _chunk(offset: int, stream: str, data: bytes) -> dict[str, Any]:
    return {"offset": offset, "stream": stream, "data": base64.b64encode(data).decode()}


def _event(request_id: Any, event: dict[str, Any]) -> dict[str, Any]:
    if event["event"] == "log":
        chunk = _chunk(event["offset"], event["stream"], event["data"])
        return {"id": request_id, "event": "log", "next_offset": event["next_offset"], **chunk}
    return {"id": request_id, **event}


async def _receive(reader: asyncio.StreamReader, frame_timeout_s: float | None) -> Request | None:
    """The next request (None at the end of the connection). Waiting for one is free; once its
    first byte has come, the rest must follow within frame_timeout_s (a half-sent frame does not
    keep a connection forever)."""
    try:
        first = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        return None
    return await asyncio.wait_for(_rest_of_frame(reader, first), frame_timeout_s)


async def _rest_of_frame(reader: asyncio.StreamReader, first: bytes) -> Request:
    try:
        header = first + await reader.readexactly(protocol.LENGTH.size - 1)
        body = await reader.readexactly(protocol.frame_length(header))
    except asyncio.IncompleteReadError:
        raise WorkerError(ErrorReason.BAD_REQUEST, "a frame ended early") from None
    return protocol.decode(body)


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(protocol.encode(message))
    await writer.drain()


async def _send_all(writer: asyncio.StreamWriter, messages: list[dict[str, Any]]) -> None:
    """Several frames in one write (one system call, one wakeup of the reader)."""
    writer.write(b"".join(protocol.encode(message) for message in messages))
    await writer.drain()
