"""REST and websocket handlers of the server extension (docs: jupyter_worker/server/openapi.yaml).

Every handler is authenticated and authorized through jupyter_server with auth_resource "worker":
GET and the websockets (they only watch) are read, POST and DELETE are write; under JupyterHub the
hub's scopes grant each (server/hub.py). Reads do not count as the server's activity, so a
dashboard polling jobs does not keep an idle server from being culled; running jobs do (app.py).
A refusal (errors.WorkerError, raised by the client or by a handler itself) answers its reason's
HTTP status with the JSON body {"message", "reason"}, mapped once in `error_reply`: a client's
mistake or what this host cannot give is a 4xx, only an executor that is absent, busy, gone or
misconfigured a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import ensure_async, url_path_join
from tornado import web, websocket
from tornado.iostream import StreamClosedError
from tornado.log import gen_log

from .. import protocol
from ..client import AsyncClient, ExecutorUnavailable
from ..errors import ErrorReason, WorkerError
from ..sandbox.doctor import diagnose
from ..sandbox.output import STREAM_NUMBERS
from ..spec import JobRecord, JobRequest, clip, python_prefixes, shown
from .folders import place_in_folder, resolve_folder

if TYPE_CHECKING:
    from .app import JupyterWorker

AUTH_RESOURCE = "worker"
MAX_BODY = 256 << 10
MAX_MESSAGE = 1000
# websockets of one server open at once, each an executor connection of the server's user (of
# Policy.max_connections_per_user, 64 by default: the rest stay for the user's kernels and CLI), and
# of those one requester's (server/shares.py: the others together never take the owner's)
MAX_STREAMS = 40
MAX_STREAMS_PER_REQUESTER = 20
MAX_WAIT_S = 300  # a GET jobs/{id}?wait_s= holds its request at most this long (on the shared watch: waits.py)
# a log chunk as a binary websocket frame (?frames=binary): this header, then the chunk's raw bytes
LOG_FRAME = struct.Struct(">BQQ")  # stream (output.STREAM_NUMBERS), offset, next_offset
FRAMES = ("text", "binary")
JUPYTER_QUERY = ("token", "_xsrf")  # Jupyter's own, read by its login (a websocket's token: the panel's)
Taken = dict[str, dict[str, bool]]  # method -> the query parameters it takes (True: may repeat)
_WHOLE = re.compile(r"[0-9]{1,19}")
_JOB_ID = "[0-9a-fA-F-]{1,36}"  # a job id or a prefix of one, as the routes take it
_JOB_PATH = re.compile(r"/api/worker/jobs/([^/]+)(?:/.*)?")
OPENAPI = os.path.join(os.path.dirname(__file__), "openapi.yaml")


def error_reply(exc: WorkerError) -> tuple[int, dict[str, str]]:
    """A refusal as REST shows it: its reason's HTTP status, and the JSON body (the message cut
    short: a refusal never echoes a huge input back)."""
    return exc.reason.http_status, {"message": clip(exc.message, MAX_MESSAGE) or "", "reason": exc.reason.value}


# tornado's own refusals of a malformed request; Jupyter's (a 403 for no login) keep reason null
_STATUS_REASONS = {400: ErrorReason.BAD_REQUEST, 405: ErrorReason.BAD_REQUEST, 413: ErrorReason.TOO_LARGE}


class _Refusals(web.RequestHandler):
    """A WorkerError raised while handling a request answers through `error_reply`, and is logged
    as a refusal (as tornado logs an HTTPError), not as a fault of the server."""

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, WorkerError):
            gen_log.warning(
                "%d %s %s: %s", value.reason.http_status, self.request.method, self.request.uri, value.message
            )
        else:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and status_code in _STATUS_REASONS:
            # a query that is not UTF-8, a method the route has not: a reason like the worker's own
            # refusals, so that a client's mistake reads alike whoever caught it; the status stays
            message = exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
            exc = WorkerError(_STATUS_REASONS[status_code], message or self._reason)
            self.set_status(status_code, reason=exc.reason.value)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": exc.message, "reason": exc.reason.value}))
        elif isinstance(exc, WorkerError):
            status, body = error_reply(exc)
            self.set_status(status, reason=body["reason"])
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))
        else:
            APIHandler.write_error(self, status_code, **kwargs)  # type: ignore[arg-type]


class _Query(web.RequestHandler):
    """The query parameters of a route, checked once, before the route reads any: `query` names
    what each method takes (True: it may repeat). Anything else, or a parameter given twice that
    is read once, is a client's mistake (400 bad_request), not silently ignored or read as its last
    value. Values are read unstripped: ' 5' is not a number, ' a' is the file it names."""

    query: ClassVar[Taken] = {}

    def check_query(self) -> None:
        taken = self.query.get(self.request.method or "", {})
        for name, values in self.request.query_arguments.items():
            if name in JUPYTER_QUERY or (_WHOLE.fullmatch(name) and values == [b""]):
                continue  # Jupyter's own, or JupyterLab's cache-buster (`?` and the time in ms, no value)
            if name not in taken:
                words = ", ".join(taken) or "none"
                raise WorkerError(ErrorReason.BAD_REQUEST, f"{shown(name)} is not a parameter here (taken: {words})")
            if len(values) > 1 and not taken[name]:
                raise WorkerError(ErrorReason.BAD_REQUEST, f"{name}: given {len(values)} times, taken once")

    def one_argument(self, name: str, default: str) -> str:
        return self.get_query_argument(name, default, strip=False)

    def int_argument(self, name: str, default: int | None) -> int | None:
        """A whole number from 0 to protocol.MAX_INT in plain ASCII digits: offsets, sizes,
        counts, cursors and seconds (no sign, space, '_' or other script's digits)."""
        value = self.get_query_argument(name, None, strip=False)
        if value is None:
            return default
        if not _WHOLE.fullmatch(value) or int(value) > protocol.MAX_INT:
            raise WorkerError(
                ErrorReason.BAD_REQUEST, f"{name}: {shown(value)} is not a whole number from 0 to {protocol.MAX_INT}"
            )
        return int(value)


class WorkerHandler(_Query, _Refusals, ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def worker(self) -> JupyterWorker:
        return self.settings["jupyter_worker"]

    @property
    def client(self) -> AsyncClient:
        return self.worker.client

    async def prepare(self) -> None:
        self._track_activity = self.request.method not in ("GET", "HEAD")
        await super().prepare()
        if self.current_user is not None:  # no login: @web.authenticated refuses (403), telling nothing
            self.check_query()
        await self.worker.ensure_executor()

    async def visible_job(self, job_id: str) -> JobRecord:
        """A job this server's user may see; others answer 404 like jobs that do not exist."""
        return _visible(self.worker, await self.client.get(job_id), job_id)

    async def job_ref(self, job_id: str) -> str:
        """The id to ask the executor about: as given where the executor itself shows this server
        only its user's jobs (no get first: it refuses another's job as not_found), else the id of
        a job looked up and found visible."""
        if self.worker.owner_filter() is None:
            return job_id
        return (await self.visible_job(job_id)).id

    def body(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_BODY:
            raise WorkerError(ErrorReason.TOO_LARGE, f"request body over {MAX_BODY} bytes")
        # the protocol's own decoding: strict JSON, no NaN or Infinity, no key twice, bounded
        # nesting and numbers
        return protocol.load_object(self.request.body or b"{}", "the body")


def requester(handler: JupyterHandler) -> str | None:
    """Who asks, for the caps one requester may not exceed (server/waits.py): under JupyterHub a
    user or service other than the server's owner, as "kind:name" (the hub vouches for it); None for
    the owner. Outside a hub everyone who holds the server's token or login is its owner: Jupyter
    names each token request a new random user, so no name of its own can key a cap."""
    hub_user = getattr(handler.current_user, "hub_user", None)
    if not isinstance(hub_user, dict):
        return None
    kind, name = hub_user.get("kind"), hub_user.get("name")
    if kind == "user" and name == os.environ.get("JUPYTERHUB_USER"):
        return None
    return f"{kind}:{name}"


def _visible(worker: JupyterWorker, job: JobRecord, job_id: str) -> JobRecord:
    """The job, if this server's user may see it (a server seeing every job shows its user's only)."""
    owner = worker.owner_filter()
    if owner is not None and job.owner != owner:
        raise WorkerError(ErrorReason.NOT_FOUND, f"no job {job_id}")
    return job


class JobsHandler(WorkerHandler):
    query: ClassVar[Taken] = {"GET": {"status": True, "limit": False, "cursor": False, "order": False}}

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """A page of jobs, newest first: ?status=RUNNING&status=QUEUED&limit=50&cursor=...&order=oldest."""
        order = self.one_argument("order", "newest")
        if order not in ("newest", "oldest"):
            raise WorkerError(ErrorReason.BAD_REQUEST, "order: newest or oldest")
        jobs, cursor = await self.client.list(
            status=self.get_query_arguments("status", strip=False) or None,
            limit=self.int_argument("limit", 50),
            cursor=self.int_argument("cursor", None),
            order=order,
            owner=self.worker.owner_filter(),
        )
        self.finish({"jobs": [job.to_dict() for job in jobs], "cursor": cursor})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Submit a job: {"command": [...], "name", "limits", "env", "mounts", "network", "cwd"}, or
        "folder" (a contents path) in place of "cwd": the job runs there (server/folders.py)."""
        data = self.body()
        for field in ("owner", "holder"):
            if field in data:
                raise WorkerError(ErrorReason.INVALID, f"{field}: set by the server, not by the request")
        if "folder" in data:
            data = place_in_folder(data, resolve_folder(self.contents_root(), data.pop("folder")))
        request = JobRequest.from_dict(data)
        # what the server sets is its own, already checked: given to the parsed request as is
        if "python_prefixes" not in data:
            request.python_prefixes = python_prefixes()
        if self.worker.owner_filter() is not None:
            request.owner = self.worker.owner
        record = await self.client.run(request)
        self.set_status(201)
        self.set_header("Location", url_path_join(self.base_url, "api/worker/jobs", record.id))
        self.finish(record.to_dict())

    def contents_root(self) -> str:
        """The folder the file browser's paths are relative to: the contents manager's root."""
        root = getattr(self.contents_manager, "root_dir", None)
        if not isinstance(root, str) or not os.path.isabs(root):
            raise WorkerError(ErrorReason.UNSUPPORTED, "folder: this server's files are not folders on its disk")
        return root


class JobHandler(WorkerHandler):
    query: ClassVar[Taken] = {"GET": {"wait_s": False}}

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """The job; ?wait_s=N: once it has ended, or after N seconds (at most MAX_WAIT_S) as it is then."""
        wait_s = self.int_argument("wait_s", 0) or 0
        if wait_s > MAX_WAIT_S:
            raise WorkerError(ErrorReason.BAD_REQUEST, f"wait_s: a whole number of seconds from 0 to {MAX_WAIT_S}")
        job = await self.visible_job(job_id)
        if wait_s and not job.finished:
            job = await self.ended_or_current(job, wait_s)
        self.finish(job.to_dict())

    async def ended_or_current(self, job: JobRecord, wait_s: int) -> JobRecord:
        """Waits on the server's one shared watch of the executor (server/waits.py), not by polling
        and not on a connection of its own; a client that goes ends its wait at once."""
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waits = self.worker.waits
        return await waits.until_ended(job.id, lambda: self.visible_job(job.id), wait_s, self._gone, requester(self))

    def on_connection_close(self) -> None:
        gone = getattr(self, "_gone", None)
        if gone is not None and not gone.done():
            gone.set_result(None)
        super().on_connection_close()

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        await self.client.delete(await self.job_ref(job_id))
        self.set_status(204)
        self.finish()


class StopHandler(WorkerHandler):
    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        data = self.body()
        unknown = set(data) - {"grace_s"}
        if unknown:
            raise WorkerError(ErrorReason.INVALID, f"stop: unknown field(s) {', '.join(map(shown, sorted(unknown)))}")
        grace = data.get("grace_s")
        self.finish((await self.client.stop(await self.job_ref(job_id), grace)).to_dict())


class LogsHandler(WorkerHandler):
    query: ClassVar[Taken] = {"GET": {"offset": False, "max_bytes": False}}

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """Log chunks from ?offset= (text, stream, offset) and the offset to read next."""
        offset = self.int_argument("offset", 0)
        max_bytes = min(self.int_argument("max_bytes", 512 << 10) or 1, 512 << 10)
        chunks, next_offset, finished = await self.client.logs(await self.job_ref(job_id), offset, max_bytes)
        self.finish(
            {
                "chunks": [_chunk(c.offset, c.stream, c.data) for c in chunks],
                "offset": next_offset,
                "finished": finished,
            }
        )


class MetricsHandler(WorkerHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """The job's metric history: {"samples": [{t, cpu_percent, memory_bytes, pids}],
        "memory_limit_bytes", "cpu_limit_percent"}, the whole run (executor/history.py)."""
        self.finish(await self.client.metrics(await self.job_ref(job_id)))


class FilesHandler(WorkerHandler):
    query: ClassVar[Taken] = {"GET": {"path": False, "offset": False}}

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """?path=sub/folder&offset=N: a page of a folder of the job's /work (never following the
        job's links); next_offset says where the next page starts."""
        offset = self.int_argument("offset", 0) or 0
        self.finish(await self.client.files(await self.job_ref(job_id), self.one_argument("path", ""), offset))


class DownloadHandler(WorkerHandler):
    query: ClassVar[Taken] = {"GET": {"path": False}}

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """?path=file: a regular file of the job's /work, streamed in pieces: its size when the
        download began (Content-Length), so a download cut short (the client went, the job was
        deleted, the file shrank) is never taken for the whole file, nor logged as a fault."""
        job = await self.visible_job(job_id)
        path = self.one_argument("path", "")
        data, size = await self.client.read_file(job.id, path, 0)
        name = path.rstrip("/").rsplit("/", 1)[-1] or "file"
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{urllib.parse.quote(name)}")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Length", str(size))
        offset = 0
        try:
            while True:
                data = data[: size - offset]  # what the file grew by since is not this download's
                self.write(data)
                offset += len(data)
                if not data or offset >= size:
                    break
                await self.flush()
                data, _ = await self.client.read_file(job.id, path, offset)
        except StreamClosedError:
            return  # the client went: no one to answer
        except WorkerError as exc:
            gen_log.warning("download of %s cut short at %d of %d bytes: %s", self.request.uri, offset, size, exc)
            offset = -1
        if offset != size:  # closed, not finished: the client sees fewer bytes than the length said
            self.request.connection.close()
            return
        self.finish()


class CapabilitiesHandler(WorkerHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """What this host can enforce, the executor's defaults and maxima, and how to reach it."""
        offered: dict[str, Any] = {"backends": []}
        try:
            whole = await self.client.capabilities(whole=True)
        except WorkerError as exc:
            policy = None
            problem = self.worker.executor_problem or str(exc)
        else:
            problem = None
            policy = whole.pop("policy")
            offered = whole
        executor = {
            "socket": self.worker.socket,
            "available": policy is not None,
            "problem": problem,
            "embedded": self.worker.embedded is not None,
        }
        network = self.worker.default_network or None
        body = {"executor": executor, "policy": policy, "host": diagnose(), "default_network": network}
        self.finish({**offered, **body})


class UnknownRouteHandler(WorkerHandler):
    """Whatever else under api/worker/ (a route that is not there, a job id that is no job id):
    404 not_found in the worker's JSON, as every other refusal, not Jupyter's HTML page."""

    async def prepare(self) -> None:
        await super(WorkerHandler, self).prepare()  # the login only: no query to check, no executor
        if self.current_user is None:
            raise web.HTTPError(403)
        if not await ensure_async(self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        job = _JOB_PATH.fullmatch(self.request.path[len(self.base_url) - 1 :])
        if job is not None and not re.fullmatch(_JOB_ID, job.group(1)):
            raise WorkerError(ErrorReason.NOT_FOUND, f"no job {shown(urllib.parse.unquote(job.group(1)))}")
        raise WorkerError(ErrorReason.NOT_FOUND, "no such route in the worker's API (see api/worker/openapi.yaml)")


class OpenAPIHandler(WorkerHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.set_header("Content-Type", "application/yaml")
        with open(OPENAPI, "rb") as f:
            self.finish(f.read())


class _Stream(_Query, _Refusals, ExtensionHandlerMixin, WebSocketMixin, websocket.WebSocketHandler, JupyterHandler):
    """A websocket fed from an executor stream; closed when that stream ends or the peer leaves."""

    auth_resource = AUTH_RESOURCE

    @property
    def worker(self) -> JupyterWorker:
        return self.settings["jupyter_worker"]

    async def pre_get(self) -> None:
        authorized_ = await ensure_async(self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE))
        if not authorized_:
            raise WorkerError(ErrorReason.FORBIDDEN, "this token may not read this server's jobs")

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get()
        await self.check_request(*args)
        self._requester = requester(self)
        self.worker.streams.take(self._requester, MAX_STREAMS, MAX_STREAMS_PER_REQUESTER)  # busy before the upgrade
        self._holding = True
        try:
            result = super().get(*args, **kwargs)
            if result is not None:
                await result
        finally:
            if self.ws_connection is None:  # not upgraded (or already closed): on_close may never come
                self._give_back()

    def _give_back(self) -> None:
        if getattr(self, "_holding", False):
            self._holding = False
            self.worker.streams.give_back(self._requester)

    async def check_request(self, *args: str) -> None:
        """Refuse before the upgrade (with a JSON 4xx) what would fail once connected."""
        self.check_query()
        await self.worker.ensure_executor()

    def events(self, *args: str) -> AsyncIterator[dict[str, Any] | bytes]:
        """Messages to send: a dict as a JSON text frame, bytes as a binary frame."""
        raise NotImplementedError

    def open(self, *args: str) -> None:  # type: ignore[override]
        self._feed = self.worker.serverapp.io_loop.asyncio_loop.create_task(self._pump(*args))

    async def _pump(self, *args: str) -> None:
        try:
            async for message in self.events(*args):
                binary = isinstance(message, bytes)
                await self.write_message(message if binary else json.dumps(message), binary=binary)
        except (websocket.WebSocketClosedError, WorkerError):
            pass
        finally:
            self.close()

    def on_close(self) -> None:
        self._give_back()
        feed = getattr(self, "_feed", None)
        if feed is not None:
            feed.cancel()


class JobStreamHandler(_Stream):
    """ws …/jobs/{id}/stream?offset=N&frames=text|binary: log chunks from N, status and metrics,
    then end. frames=binary (the panel's): each log chunk is one binary frame, LOG_FRAME and the
    chunk's bytes as the job wrote them; frames=text (the default, the older form): a JSON "log"
    message with the bytes decoded as UTF-8 (an undecodable byte shown as U+FFFD). Every other
    message is a JSON text frame in either form (docs/rest-api.md)."""

    query: ClassVar[Taken] = {"GET": {"offset": False, "frames": False}}

    async def check_request(self, job_id: str) -> None:  # type: ignore[override]
        await super().check_request()
        self.offset = self.int_argument("offset", 0) or 0  # refused before the upgrade, not by a closed socket
        self.frames = self.one_argument("frames", "text")
        if self.frames not in FRAMES:
            raise WorkerError(ErrorReason.BAD_REQUEST, f"frames: {shown(self.frames)} is not text or binary")
        self.job_id = _visible(self.worker, await self.worker.client.get(job_id), job_id).id

    async def events(self, job_id: str) -> AsyncIterator[dict[str, Any] | bytes]:  # type: ignore[override]
        binary = self.frames == "binary"
        async for event in _ExecutorStream(self.worker.socket).follow(self.job_id, self.offset):
            kind = event.pop("event", None)
            event.pop("id", None)
            if kind == "log" and binary:
                stream = STREAM_NUMBERS[event["stream"]]  # a stream this table lacks fails closed
                yield LOG_FRAME.pack(stream, event["offset"], event["next_offset"]) + event["data"]
            elif kind == "log":
                chunk = _chunk(event["offset"], event["stream"], event["data"])
                yield {"type": "log", "next_offset": event["next_offset"], **chunk}
            elif kind is not None:
                if "job" in event:
                    event["job"] = event["job"].to_dict()
                yield {"type": kind, **event}


class JobEventsHandler(_Stream):
    """ws …/events: every change to this user's jobs, as it happens, so a UI never polls."""

    async def events(self) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        owner = self.worker.owner_filter()
        async for event in _ExecutorStream(self.worker.socket).watch():
            job = event.get("job")
            if job is not None and (owner is None or job.owner == owner):
                yield {"type": "job", "job": job.to_dict()}


class _ExecutorStream(AsyncClient):
    """A stream from the executor whose frames are read as plain JSON. The protocol's strict
    decoding (protocol.load_object) guards the executor against its peers; here the peer is the
    executor, whose frames are that protocol's own output, and its scans of every frame for
    brackets and surrogate escapes would cost a third of the reading of a log stream."""

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            header = await reader.readexactly(protocol.LENGTH.size)
            message = _loads(await reader.readexactly(protocol.frame_length(header)))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            raise WorkerError(ErrorReason.DISCONNECTED, "the executor closed the connection") from None
        except ValueError:
            raise WorkerError(ErrorReason.DISCONNECTED, "the executor sent a frame that is not JSON") from None
        if not isinstance(message, dict):
            raise WorkerError(ErrorReason.DISCONNECTED, "the executor sent a frame that is not a JSON object")
        if message.get("ok") is False or "error" in message:
            raise WorkerError.from_dict(message.get("error"))
        return message

    async def changes(self) -> AsyncIterator[JobRecord | None]:
        """A watch: None once the executor has subscribed it (what changes after that comes), then
        each job record that changes. Its own connection, closed when the iterator is."""
        try:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=protocol.MAX_FRAME + 4)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ExecutorUnavailable(self.path, exc.strerror or str(exc)) from None
        try:
            for number, request in enumerate(({"op": "hello", "version": protocol.VERSION}, {"op": "watch"})):
                writer.write(protocol.encode({**request, "id": number}))
                await self._read(reader)
            yield None
            while True:
                message = await self._read(reader)
                yield JobRecord.from_dict(message["job"]) if "job" in message else None
        finally:
            writer.close()


_DATA = b',"data":"'


def _loads(body: bytes) -> Any:
    """A frame of the executor. A log event ends with its base64 "data" (executor/server.py), most
    of the frame: cut off where no JSON scanner has to walk it (base64 holds no quote or backslash,
    so it is the whole string), the rest parsed. Any other frame, or another layout, is parsed whole."""
    start = body.rfind(_DATA)
    if start > 0 and body.endswith(b'"}'):
        data = body[start + len(_DATA) : -2]
        if b'"' not in data and b"\\" not in data:
            try:
                message = json.loads(body[:start] + b"}")
            except ValueError:
                return json.loads(body)
            if isinstance(message, dict) and "data" not in message:
                message["data"] = data
                return message
    return json.loads(body)


def _chunk(offset: int, stream: str, data: bytes) -> dict[str, Any]:
    return {"offset": offset, "stream": stream, "text": data.decode(errors="replace"), "size": len(data)}


def handlers() -> list[tuple[str, type]]:
    job = f"({_JOB_ID})"
    return [
        (r"/api/worker/jobs", JobsHandler),
        (rf"/api/worker/jobs/{job}", JobHandler),
        (rf"/api/worker/jobs/{job}/stop", StopHandler),
        (rf"/api/worker/jobs/{job}/logs", LogsHandler),
        (rf"/api/worker/jobs/{job}/metrics", MetricsHandler),
        (rf"/api/worker/jobs/{job}/stream", JobStreamHandler),
        (rf"/api/worker/jobs/{job}/files", FilesHandler),
        (rf"/api/worker/jobs/{job}/files/download", DownloadHandler),
        (r"/api/worker/events", JobEventsHandler),
        (r"/api/worker/capabilities", CapabilitiesHandler),
        (r"/api/worker/openapi.yaml", OpenAPIHandler),
        (r"/api/worker(?:/.*[^/])?", UnknownRouteHandler),  # last; a trailing slash is Jupyter's to redirect
    ]
