"""The executor's socket: framed JSON requests from local clients, identified by SO_PEERCRED.

Each connection starts with hello (the protocol version), then one request at a time; "follow"
and "watch" turn the connection into a stream until it ends, and "hold" into a claim that lasts
as long as the connection (executor/holds.py). Bad frames, unknown operations and
oversized messages get an error response; nothing a client sends produces a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import grp
import logging
import os
import pwd
import socket
import struct
from typing import Any

from .. import protocol
from ..errors import ErrorReason, WorkerError
from ..limits import LIMITS
from ..spec import JobRequest, SpecError, validate_holder
from .service import Caller, Executor

_PEERCRED = struct.Struct("3i")
MAX_CONNECTIONS = 512


def _group_id(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class Server:
    def __init__(self, executor: Executor, socket_path: str, admin_group: str | None, viewer_group: str | None):
        self.executor = executor
        self.socket_path = socket_path
        self.admin_gid = _group_id(admin_group)
        self.viewer_gid = _group_id(viewer_group)
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        folder = os.path.dirname(self.socket_path)
        if not os.path.isdir(folder):
            os.makedirs(folder)
            os.chmod(folder, 0o755)  # whatever the umask: every local user connects here
        elif not os.stat(folder).st_mode & 0o001:
            logging.getLogger(__name__).warning(
                "%s is not searchable by other users: only root can reach the socket in it", folder
            )
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        # The socket is 0666 from the moment it exists (a chmod after binding would leave a moment in
        # which, under a strict umask, users are refused); nothing else creates files meanwhile.
        umask = os.umask(0o111)
        try:
            self.server = await asyncio.start_unix_server(self._serve, self.socket_path, limit=protocol.MAX_FRAME + 4)
        finally:
            os.umask(umask)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def caller(self, sock: socket.socket) -> Caller:
        """The peer's identity as the kernel reports it, and its role under this executor's policy."""
        _, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        try:
            entry = pwd.getpwuid(uid)
            name, groups = entry.pw_name, tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        except KeyError:
            name, groups = f"uid{uid}", (gid,)
        if uid == 0 or (self.admin_gid is not None and self.admin_gid in groups):
            role = "admin"
        elif self.viewer_gid is not None and self.viewer_gid in groups:
            role = "viewer"
        else:
            role = "user"
        return Caller(uid, gid, groups, name, role)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections > MAX_CONNECTIONS:
                await _send(writer, protocol.failed(None, WorkerError(ErrorReason.BUSY, "too many connections")))
                return
            caller = self.caller(writer.get_extra_info("socket"))
            await self._converse(caller, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _converse(self, caller: Caller, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeted = False
        while True:
            try:
                request = await _receive(reader)
            except WorkerError as exc:
                await _send(writer, protocol.failed(None, exc))
                return
            if request is None:
                return
            request_id = request.get("id")
            try:
                if not greeted and request.get("op") != "hello":
                    raise WorkerError(ErrorReason.BAD_REQUEST, "the first request must be hello")
                greeted = True
                if request.get("op") in ("follow", "watch"):
                    await self._stream(caller, request, writer)
                    return
                if request.get("op") == "hold":
                    await self._hold(caller, request, reader, writer)
                    return
                await _send(writer, protocol.ok(request_id, **self.handle(caller, request)))
            except WorkerError as exc:
                await _send(writer, protocol.failed(request_id, exc))
            except SpecError as exc:
                await _send(writer, protocol.failed(request_id, WorkerError(ErrorReason.INVALID, str(exc))))

    def handle(self, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        executor = self.executor
        if op == "hello":
            if request.get("version") != protocol.VERSION:
                raise WorkerError(ErrorReason.VERSION, f"this executor speaks protocol version {protocol.VERSION}")
            return {"version": protocol.VERSION, "user": caller.name, "uid": caller.uid, "role": caller.role}
        if op == "run":
            record = executor.submit(caller, JobRequest.from_dict(request.get("job")))
            return {"job": record.to_dict()}
        if op == "list":
            records, cursor = executor.list(caller, request)
            return {"jobs": [r.to_dict() for r in records], "cursor": cursor}
        if op == "get":
            record = executor.find(caller, request.get("job_id"))
            return {"job": record.to_dict()}
        if op == "files":
            return executor.work_listing(caller, request.get("job_id"), request.get("path", ""))
        if op == "read_file":
            data, size = executor.work_read(caller, request.get("job_id"), request.get("path"),
                                            request.get("offset", 0), request.get("max_bytes", 1 << 20))  # fmt: skip
            return {"data": base64.b64encode(data).decode(), "size": size}
        if op == "logs":
            record, chunks, offset = executor.logs(
                caller, request.get("job_id"), request.get("offset", 0), request.get("max_bytes", 512 << 10)
            )
            return {"chunks": [_chunk(c.offset, c.stream_name, c.data) for c in chunks], "offset": offset,
                    "finished": record.finished}  # fmt: skip
        if op == "stop":
            return {"job": executor.stop(caller, request.get("job_id"), _grace(request)).to_dict()}
        if op == "delete":
            executor.delete(caller, request.get("job_id"))
            return {}
        if op == "capabilities":
            return {"policy": _policy(executor, caller)}
        raise WorkerError(ErrorReason.BAD_REQUEST, f"unknown operation {op!r}; one of {', '.join(protocol.OPS)}")

    async def _hold(self, caller: Caller, request: dict[str, Any], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:  # fmt: skip
        """Until the peer closes the connection (or its sending half: the executor closes its own
        once the jobs are stopped); the executor's own shutdown (a cancellation) ends nothing, so the
        claim waits for the holder after the restart."""
        if caller.role == "viewer":
            raise WorkerError(ErrorReason.FORBIDDEN, "viewers may read jobs but not run them")
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

    async def _stream(self, caller: Caller, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        request_id = request.get("id")
        if request["op"] == "watch":
            queue = self.executor.watch_list()
            try:
                await _send(writer, protocol.ok(request_id, watching=True))
                while True:
                    job = await queue.get()
                    if caller.sees_all or job["owner_uid"] == caller.uid:
                        await _send(writer, {"id": request_id, "event": "job", "job": job})
            finally:
                self.executor.unwatch_list(queue)
        offset = request.get("offset", 0)
        if not isinstance(offset, int) or offset < 0:
            raise WorkerError(ErrorReason.BAD_REQUEST, "offset: a whole number >= 0")
        events = self.executor.follow(caller, request.get("job_id"), offset)
        first = await anext(events)
        await _send(writer, protocol.ok(request_id, following=True))
        await _send(writer, _event(request_id, first))
        async for event in events:
            await _send(writer, _event(request_id, event))


def _grace(request: dict[str, Any]) -> float | None:
    grace = request.get("grace_s")
    if grace is not None and (not isinstance(grace, (int, float)) or grace < 0):
        raise WorkerError(ErrorReason.BAD_REQUEST, "grace_s: seconds >= 0")
    return grace


def _policy(executor: Executor, caller: Caller) -> dict[str, Any]:
    """The settings as they apply to this caller: their own maxima and cap, not everyone's entries."""
    policy = executor.policy
    settings = {name: getattr(policy, name) for name in policy.trait_names() if policy.trait_metadata(name, "config")}
    del settings["user_limits"], settings["group_limits"]
    allowance = policy.allowance(caller.name).to_dict()
    settings["max_jobs_per_user"] = allowance.pop("max_jobs")
    settings |= allowance
    limits = [
        row.describe()
        | {
            "default": settings.get(row.default_setting) if row.default_setting else None,
            "maximum": settings.get(row.max_setting) if row.max_setting else None,
        }
        for row in LIMITS
    ]
    return {**settings, "limits": limits, "network_modes": executor.network.modes()}


def _chunk(offset: int, stream: str, data: bytes) -> dict[str, Any]:
    return {"offset": offset, "stream": stream, "data": base64.b64encode(data).decode()}


def _event(request_id: Any, event: dict[str, Any]) -> dict[str, Any]:
    if event["event"] == "log":
        chunk = _chunk(event["offset"], event["stream"], event["data"])
        return {"id": request_id, "event": "log", "next_offset": event["next_offset"], **chunk}
    return {"id": request_id, **event}


async def _receive(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        header = await reader.readexactly(protocol.LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WorkerError(ErrorReason.BAD_REQUEST, "a frame ended early") from None
        return None
    body = await reader.readexactly(protocol.frame_length(header))
    return protocol.decode(body)


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(protocol.encode(message))
    await writer.drain()
