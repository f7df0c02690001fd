"""The executor's wire protocol, shared by the daemon and its client (docs/protocol.md).

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON holding one object.
Requests carry "op" and "id"; every response carries the request's "id", and either "ok": true
with the result, or "ok": false with "error": {"reason", "message"}. A "follow" request streams
frames with "event" ("log", "status", "metrics", "end") until the job ends. The first request
of a connection is "hello", which fixes the protocol version.
"""

from __future__ import annotations

import json
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
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WorkerError(ErrorReason.BAD_REQUEST, "a frame must hold JSON") from None
    if not isinstance(message, dict):
        raise WorkerError(ErrorReason.BAD_REQUEST, "a frame must hold a JSON object")
    return message


def ok(request_id: Any, **result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, **result}


def failed(request_id: Any, error: WorkerError) -> dict[str, Any]:
    reply = error.to_dict()
    if len(reply.get("message") or "") > MAX_MESSAGE:
        reply["message"] = reply["message"][:MAX_MESSAGE] + "..."
    return {"id": request_id, "ok": False, "error": reply}
