"""One vocabulary of errors: every refusal has a reason, and each reason one HTTP status and one
CLI exit code, so the socket, REST, the CLI and the magics all report a problem the same way.

Domain modules raise `WorkerError` (or `SpecError`, its form for a value that breaks a rule);
each boundary maps it once: the protocol sends {"reason", "message"}, REST answers
`reason.http_status`, the CLI exits with `reason.exit_code`.
"""

from __future__ import annotations

import enum
from typing import Any

USAGE_EXIT = 2  # the request itself is wrong: fix it and try again
REFUSED_EXIT = 1  # the request is well formed but cannot be done now or here


class ErrorReason(str, enum.Enum):
    """A stable word for programs; `http_status` and `exit_code` say how each boundary shows it."""

    BAD_REQUEST = "bad_request"  # malformed: not JSON, wrong types, unknown operation
    INVALID = "invalid"  # well formed, but a value breaks a rule (a limit, a mount, a name)
    AMBIGUOUS = "ambiguous"  # a job id prefix that matches more than one job
    VERSION = "version"  # a protocol version this executor does not speak
    TOO_LARGE = "too_large"  # a frame or a body over its size limit
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"  # the job's state does not allow it (deleting a running job)
    UNSUPPORTED = "unsupported"  # this host cannot give what was asked (a network mode)
    BUSY = "busy"  # too many connections
    UNAVAILABLE = "unavailable"  # no executor answers
    DISCONNECTED = "disconnected"  # the executor went away mid-request
    MISCONFIGURED = "misconfigured"  # the executor's own configuration is wrong (an admin's fix)

    @property
    def http_status(self) -> int:
        return _HTTP[self]

    @property
    def exit_code(self) -> int:
        return USAGE_EXIT if self in _USAGE else REFUSED_EXIT


_HTTP = {
    ErrorReason.BAD_REQUEST: 400,
    ErrorReason.INVALID: 400,
    ErrorReason.AMBIGUOUS: 400,
    ErrorReason.VERSION: 400,
    ErrorReason.TOO_LARGE: 413,
    ErrorReason.NOT_FOUND: 404,
    ErrorReason.FORBIDDEN: 403,
    ErrorReason.CONFLICT: 409,
    ErrorReason.UNSUPPORTED: 422,
    ErrorReason.BUSY: 503,
    ErrorReason.UNAVAILABLE: 503,
    ErrorReason.DISCONNECTED: 503,
    ErrorReason.MISCONFIGURED: 500,
}
_USAGE = {
    ErrorReason.BAD_REQUEST,
    ErrorReason.INVALID,
    ErrorReason.AMBIGUOUS,
    ErrorReason.VERSION,
    ErrorReason.TOO_LARGE,
}


class WorkerError(Exception):
    """A refused request: reason is for programs, message a sentence for people."""

    def __init__(self, reason: ErrorReason | str, message: str):
        super().__init__(message)
        self.reason = ErrorReason(reason)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason.value, "message": self.message}

    @classmethod
    def from_dict(cls, data: Any) -> WorkerError:
        """The error a peer sent; a reason this side does not know reads as a refusal by the executor."""
        data = data if isinstance(data, dict) else {}
        message = str(data.get("message") or "the executor refused the request")
        try:
            return cls(ErrorReason(data.get("reason")), message)
        except ValueError:
            return cls(ErrorReason.BAD_REQUEST, message)


class SpecError(WorkerError, ValueError):
    """A value that breaks a rule (reason `invalid`); the message is meant for the user."""

    def __init__(self, message: str):
        super().__init__(ErrorReason.INVALID, message)
