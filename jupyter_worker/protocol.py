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

VERSION = 1
MAX_FRAME = 4 << 20
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


class ProtocolError(Exception):
    """A refused request; reason is a stable word for programs, message a sentence for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError("too_large", f"message of {len(body)} bytes exceeds {MAX_FRAME}")
    return LENGTH.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (length,) = LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError("too_large", f"frame of {length} bytes exceeds {MAX_FRAME}")
    return length


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("bad_request", "a frame must hold JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_request", "a frame must hold a JSON object")
    return message


def ok(request_id: Any, **result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, **result}


def failed(request_id: Any, error: ProtocolError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error.to_dict()}
