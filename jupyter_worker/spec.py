"""The shared vocabulary of jupyter-worker: limits, mounts, network modes, job states.

Every layer (sandbox, executor, server, magics, CLI) speaks these types, and every piece of user
input is turned into them here, so a bad value gets the same one-line error wherever it came from.
"""

from __future__ import annotations

import enum
import posixpath
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


class SpecError(ValueError):
    """A request that cannot be honoured as written; the message is meant for the user."""


class NetworkMode(str, enum.Enum):
    NONE = "none"
    HOST = "host"
    ISOLATED = "isolated"


class JobStatus(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


class Reason(str, enum.Enum):
    EXIT = "exit"
    SIGNAL = "signal"
    OOM = "oom"
    TIMEOUT = "timeout"
    STOPPED = "stopped"
    START_ERROR = "start_error"
    LOST = "lost"


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from '512M', '2G', '1.5g', '4096' (binary units); one clear error otherwise."""
    if isinstance(text, bool):
        raise SpecError(f"{what}: {text!r} is not a size (use e.g. 512M or 2G)")
    if isinstance(text, int):
        if text < 0:
            raise SpecError(f"{what}: {text} is negative")
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise SpecError(f"{what}: {text!r} is not a size (use e.g. 512M or 2G)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds from '90', '90s', '10m', '1h30m', '250ms'; one clear error otherwise."""
    if isinstance(text, bool):
        raise SpecError(f"{what}: {text!r} is not a duration (use e.g. 30s, 10m or 1h)")
    if isinstance(text, (int, float)):
        if text < 0:
            raise SpecError(f"{what}: {text} is negative")
        return float(text)
    compact = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        return float(compact)
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise SpecError(f"{what}: {text!r} is not a duration (use e.g. 30s, 10m or 1h)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _positive_int(value: Any, what: str, low: int = 1, high: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value), 10)
        except ValueError:
            raise SpecError(f"{what}: {value!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SpecError(f"{what}: {value} must be {bound}")
    return value


_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one job; None means not limited.

    memory_mb is MiB of RAM (swap excluded), cpu_percent is percent of one core (200 = two cores),
    io_bps is bytes per second for reads and for writes, pids counts the job's processes and
    threads, timeout_s is wall-clock seconds, tmp_mb caps each of /tmp and /dev/shm, net_bps is
    bytes per second each way on the isolated network.
    """

    memory_mb: int | None = None
    cpu_percent: int | None = None
    io_bps: int | None = None
    pids: int | None = None
    timeout_s: float | None = None
    tmp_mb: int = 64
    cpuset: str | None = None
    net_bps: int | None = None

    def __post_init__(self) -> None:
        check = object.__setattr__
        check(self, "memory_mb", _positive_int(self.memory_mb, "memory limit (MiB)", low=8))
        check(self, "cpu_percent", _positive_int(self.cpu_percent, "CPU limit (%)", high=100_000))
        check(self, "io_bps", _positive_int(self.io_bps, "I/O limit (bytes/s)", low=4096))
        check(self, "pids", _positive_int(self.pids, "process limit", high=1 << 22))
        check(self, "tmp_mb", _positive_int(self.tmp_mb, "/tmp size (MiB)", high=1 << 20))
        check(self, "net_bps", _positive_int(self.net_bps, "network limit (bytes/s)", low=1024))
        if self.timeout_s is not None:
            seconds = parse_duration(self.timeout_s, "timeout")
            if seconds <= 0:
                raise SpecError("timeout: must be more than 0 seconds")
            check(self, "timeout_s", seconds)
        if self.cpuset is not None and not _CPUSET_RE.match(str(self.cpuset)):
            raise SpecError(f"cpuset: {self.cpuset!r} is not a CPU list (use e.g. 0-1 or 0,2)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise SpecError(f"limits: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**data)


def requested_limits(
    *,
    memory_mb: int | None = None,
    cpu_percent: int | None = None,
    pids: int | None = None,
    io_bps: int | None = None,
    net_bps: int | None = None,
    timeout: str | float | None = None,
    timeout_label: str = "timeout",
) -> dict[str, Any]:
    """The limits a request asks for, as the executor takes them: those not given are left out."""
    asked = {
        "memory_mb": memory_mb,
        "cpu_percent": cpu_percent,
        "pids": pids,
        "io_bps": io_bps,
        "net_bps": net_bps,
        "timeout_s": parse_duration(timeout, timeout_label) if timeout is not None else None,
    }
    return {key: value for key, value in asked.items() if value is not None}


_RESERVED_DESTINATIONS = ("/proc", "/dev", "/sys", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")


def _clean_absolute(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise SpecError(f"{what}: {path!r} must be an absolute path")
    if any(part == ".." for part in path.split("/")):
        raise SpecError(f"{what}: {path!r} must not contain '..'")
    return posixpath.normpath(path)


@dataclass(frozen=True)
class Mount:
    """A host path shown inside the job; read-only unless rw is asked for."""

    source: str
    destination: str
    rw: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", _clean_absolute(self.source, "mount source"))
        dst = _clean_absolute(self.destination, "mount destination")
        object.__setattr__(self, "destination", dst)
        if dst == "/" or any(dst == r or dst.startswith(r + "/") for r in _RESERVED_DESTINATIONS):
            raise SpecError(f"mount destination: {dst} is reserved by the sandbox")

    @classmethod
    def parse(cls, text: str, cwd: str | None = None) -> Mount:
        """Parse SRC:DST[:rw|:ro]; relative paths are taken from cwd (as '.:.:rw' in a notebook)."""
        parts = text.split(":")
        mode = "ro"
        if len(parts) == 3:
            mode = parts.pop()
        if len(parts) != 2 or mode not in ("ro", "rw") or not all(parts):
            raise SpecError(f"mount: {text!r} is not SRC:DST, SRC:DST:ro or SRC:DST:rw")
        src, dst = (posixpath.join(cwd, p) if cwd and not p.startswith("/") else p for p in parts)
        return cls(source=src, destination=dst, rw=mode == "rw")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def python_prefixes() -> list[str]:
    """The prefixes of this interpreter outside /usr, shown read-only in a job so its packages work."""
    prefixes = dict.fromkeys([sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix])
    return [p for p in prefixes if p != "/usr" and not p.startswith("/usr/")]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_env(env: dict[str, str]) -> dict[str, str]:
    """Reject names a shell could not set and values that cannot cross execve."""
    if not isinstance(env, dict):
        raise SpecError("env: must be a mapping of NAME to value")
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise SpecError(f"env: {name!r} is not a valid variable name")
        if not isinstance(value, str) or "\0" in value:
            raise SpecError(f"env: the value of {name} must be text without NUL bytes")
    return dict(env)


def parse_env_assignment(text: str) -> tuple[str, str]:
    """Split K=V as given on a command line."""
    name, sep, value = text.partition("=")
    if not sep:
        raise SpecError(f"env: {text!r} is not NAME=VALUE")
    validate_env({name: value})
    return name, value


def validate_argv(argv: list[str]) -> list[str]:
    if not isinstance(argv, (list, tuple)) or not argv:
        raise SpecError("command: must be a non-empty list of arguments")
    for arg in argv:
        if not isinstance(arg, str) or "\0" in arg:
            raise SpecError("command: every argument must be text without NUL bytes")
    if not argv[0]:
        raise SpecError("command: the program name is empty")
    return list(argv)


@dataclass
class Usage:
    """What a job consumed, read from its cgroup counters."""

    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    io_read_bytes: int = 0
    io_write_bytes: int = 0
    pids: int = 0
    pids_peak: int = 0
    wall_seconds: float = 0.0
    oom_kills: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    """How a job ended and what it used."""

    reason: Reason
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)

    @property
    def status(self) -> JobStatus:
        if self.reason is Reason.STOPPED:
            return JobStatus.STOPPED
        if self.reason is Reason.EXIT and self.exit_code == 0:
            return JobStatus.COMPLETED
        return JobStatus.FAILED

    @property
    def shell_code(self) -> int:
        """The exit code a shell would report: the code, 128+signal when killed, 127 if never started."""
        if self.exit_code is not None:
            return self.exit_code
        if self.reason is Reason.START_ERROR:
            return 127
        return 128 + (self.signal or 9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "reason": self.reason.value,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "error": self.error,
            "usage": self.usage.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            reason=Reason(data["reason"]),
            exit_code=data.get("exit_code"),
            signal=data.get("signal"),
            error=data.get("error"),
            usage=Usage(**data.get("usage", {})),
        )


_NAME_RE = re.compile(r"[\w.@+-][\w .@+-]{0,99}")
_HOLDER_RE = re.compile(r"[\w.@:/+-]{1,200}")


def validate_holder(value: Any) -> str:
    """The name a Jupyter server holds its jobs under (executor/holds.py)."""
    if not isinstance(value, str) or not _HOLDER_RE.fullmatch(value):
        raise SpecError("holder: up to 200 letters, digits and . @ : / + - _")
    return value


_REQUEST_FIELDS = {"command", "name", "limits", "env", "mounts", "network", "cwd", "python_prefixes", "owner", "holder"}


@dataclass
class JobRequest:
    """What a client asks the executor for; limits not given come from the executor's policy."""

    command: list[str]
    name: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    network: NetworkMode | None = None
    cwd: str = "/work"
    python_prefixes: list[str] = field(default_factory=list)
    owner: str | None = None
    holder: str | None = None

    def __post_init__(self) -> None:
        self.command = validate_argv(self.command)
        self.holder = None if self.holder is None else validate_holder(self.holder)
        self.env = validate_env(self.env)
        if self.name is not None and (not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name)):
            raise SpecError("name: use up to 100 letters, digits, spaces and . @ + - _")
        if not isinstance(self.limits, dict):
            raise SpecError("limits: must be an object")
        Limits.from_dict(self.limits)
        self.network = None if self.network is None else _network(self.network)
        self.cwd = _clean_absolute(self.cwd, "cwd")
        self.python_prefixes = [_clean_absolute(p, "python prefix") for p in self.python_prefixes]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRequest:
        if not isinstance(data, dict):
            raise SpecError("job: must be an object")
        unknown = set(data) - _REQUEST_FIELDS
        if unknown:
            raise SpecError(f"job: unknown field(s) {', '.join(sorted(unknown))}")
        data = dict(data)
        mounts = data.get("mounts", [])
        if not isinstance(mounts, list):
            raise SpecError("mounts: must be a list")
        data["mounts"] = [Mount.parse(m) if isinstance(m, str) else _mount_from_dict(m) for m in mounts]
        try:
            return cls(**data)
        except TypeError as exc:
            raise SpecError(f"job: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mounts"] = [m.to_dict() for m in self.mounts]
        data["network"] = self.network.value if self.network else None
        return data


def _network(value: Any) -> NetworkMode:
    try:
        return NetworkMode(value)
    except ValueError:
        raise SpecError(f"network: {value!r} is not one of none, host, isolated") from None


def _mount_from_dict(data: Any) -> Mount:
    if not isinstance(data, dict) or set(data) - {"source", "destination", "rw"}:
        raise SpecError("mount: an object with source, destination and rw")
    try:
        return Mount(**data)
    except TypeError as exc:
        raise SpecError(f"mount: {exc}") from None


def describe_ending(job: dict[str, Any]) -> str:
    """How a job ended, in words, or its state while it has not: the words every UI shows."""
    reason = job.get("reason")
    limits = job.get("limits") or {}
    words = {
        "exit": f"exit code {job.get('exit_code')}",
        "signal": f"killed by signal {job.get('signal')}",
        "oom": f"killed: out of memory (limit {limits.get('memory_mb')} MiB)",
        "timeout": f"timed out after {limits.get('timeout_s') or 0:g} s",
        "stopped": f"stopped by {job.get('stopped_by') or 'request'}",
        "start_error": f"could not start: {job.get('error')}",
        "lost": "lost: its supervisor vanished",
    }
    return words.get(reason, job["status"].lower()) if reason else job["status"].lower()


TERMINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED)


@dataclass
class JobRecord:
    """A job as the executor keeps it and every API shows it."""

    id: str
    name: str
    owner: str
    owner_uid: int
    command: list[str]
    status: JobStatus
    limits: dict[str, Any]
    network: str
    created_at: float
    reason: Reason | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    stopped_by: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["reason"] = self.reason.value if self.reason else None
        data["status_text"] = describe_ending(data)
        return data
