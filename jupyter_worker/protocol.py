"""The executor's wire protocol, shared by the daemon and its client (docs/protocol.md).

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON holding one object.
Requests carry "op" and "id"; every response carries the request's "id", and either "ok": true
with the result, or "ok": false with "error": {"reason", "message"}. A "follow" request streams
frames with "event" ("log", "status", "metrics", "end") until the job ends. The first request
of a connection is "hello", which fixes the protocol version.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

from .errors import ErrorReason, WorkerError

VERSION = 1
MAX_FRAME = 4 << 20
# A page of the job list holds at most this many bytes of records (past its first), so that it fits
# a frame with room for the envelope and for metrics that grew since the records were stored.
LIST_PAGE_BYTES = MAX_FRAME // 2
# An error's message is cut to this many characters: a refusal never echoes a huge input back.
MAX_MESSAGE = 1000
LENGTH = struct.Struct(">I")

OPS = (
    "hello",
    "run",
    "list",
    "get",
    "logs",
    "metrics",
    "follow",
    "watch",
    "hold",
    "stop",
    "delete",
    "files",
    "read_file",
    "capabilities",
)


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise WorkerError(ErrorReason.TOO_LARGE, f"message of {len(body)} bytes exceeds {MAX_FRAME}")
    return LENGTH.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (length,) = LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise WorkerError(ErrorReason.TOO_LARGE, f"frame of {length} bytes exceeds {MAX_FRAME}")
    return length


def decode(body: bytes) -> dict[str, Any]:
    return load_object(body, "a frame")


# What JSON a peer may send (a frame, a REST body): strict JSON, an object, nested at most
# MAX_DEPTH deep (a request needs 4), whole numbers within 64 bits, finite numbers (Python's json
# takes NaN, Infinity and 1e400 as floats, which no field means), text without lone surrogates
# (they cannot become UTF-8: a path, an argument or a log). Refused here, once, for every field.
MAX_DEPTH = 16
MAX_INT = (1 << 63) - 1
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def load_object(body: bytes | str, what: str) -> dict[str, Any]:
    """The JSON object in body, or one bad_request saying what is wrong with it."""
    try:
        message = json.loads(
            body, parse_constant=_no_constant, parse_int=_whole, parse_float=_finite, object_pairs_hook=_unique
        )
    except RecursionError:
        raise WorkerError(ErrorReason.BAD_REQUEST, f"{what} nests deeper than {MAX_DEPTH}") from None
    except _Refused as exc:
        raise WorkerError(ErrorReason.BAD_REQUEST, f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise WorkerError(ErrorReason.BAD_REQUEST, f"{what} must hold JSON") from None
    if not isinstance(message, dict):
        raise WorkerError(ErrorReason.BAD_REQUEST, f"{what} must hold a JSON object")
    raw = body.encode(errors="surrogatepass") if isinstance(body, str) else body
    # Cheap scans first: only a body with many brackets or a surrogate escape is walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(raw) or isinstance(body, str):
        problem = _problem(message)
        if problem:
            raise WorkerError(ErrorReason.BAD_REQUEST, f"{what}: {problem}")
    return message


class _Refused(ValueError):
    """A JSON value refused while decoding."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are each given once: a key twice would be read as its last value here
    and as its first by another parser (a proxy, a log reader), so it is refused, at any depth."""
    data = dict(pairs)
    if len(data) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"{json.dumps(key)[:100]} given twice, taken once")  # escaped: inert
            seen.add(key)
    return data


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows")


def _whole(text: str) -> int:
    if len(text) > 20 or abs(value := int(text)) > MAX_INT:
        raise _Refused(f"{text[:24]} is beyond a 64-bit whole number")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text[:24]} is beyond the range of a number")
    return value


def _problem(message: Any) -> str | None:
    """Too deep a nesting or a lone surrogate anywhere in a decoded message (walked, not recursed)."""
    pending = [(message, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            return f"nests deeper than {MAX_DEPTH}"
        if isinstance(value, dict):
            pending.extend((item, depth + 1) for item in value.values())
            pending.extend((key, depth) for key in value)
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                return "text holds a lone surrogate (not UTF-8)"
    return None


MAX_ID_CHARS = 100


def request_id(request: dict[str, Any]) -> Any:
    """A request's id, which its responses echo: null, a whole number, or up to 100 characters."""
    value = request.get("id")
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS:
        return value
    raise WorkerError(ErrorReason.BAD_REQUEST, f"id: null, a whole number or up to {MAX_ID_CHARS} characters")


def ok(request_id: Any, **result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, **result}


def failed(request_id: Any, error: WorkerError) -> dict[str, Any]:
    reply = error.to_dict()
    if len(reply.get("message") or "") > MAX_MESSAGE:
        reply["message"] = reply["message"][:MAX_MESSAGE] + "..."
    return {"id": request_id, "ok": False, "error": reply}
