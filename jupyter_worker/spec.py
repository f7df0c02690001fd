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

from .errors import SpecError
from .limits import BY_FIELD, Limits, duration_words


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


# The sandbox's own parts of the job's tree: nothing a client names is shown over them or in them.
_RESERVED_DESTINATIONS = tuple("/proc /dev /sys /usr /etc /bin /sbin /lib /lib32 /lib64 /libx32".split())
# ...except beneath the job's /dev/shm, a tmpfs of its own like /tmp: a user's folder there is shown.
_OPEN_BENEATH = "/dev/shm/"
# Kernel interfaces are never a mount source (their magic links lead to the privileged init's own
# files); the sandbox checks the path a source resolved to as well (sandbox/mounts.open_source).
KERNEL_SOURCES = ("/proc", "/sys")

# Record sizes are bounded so that any one job record (its command, name, error) stays far inside a
# protocol frame (protocol.MAX_FRAME, 4 MiB) even as JSON (a byte escaped as \u00XX is 6), and a
# listing pages by bytes (executor/store.py): one user's huge records cannot break anyone's listing.
# The byte counts are UTF-8, as execve sees them; Linux itself takes at most 128 KiB in one argument.
MAX_ARGS = 4096
MAX_COMMAND_BYTES = 128 << 10
MAX_ENV_VARS = 256
MAX_ENV_BYTES = 128 << 10
MAX_MOUNTS = 32
MAX_PATH_BYTES = 4096  # PATH_MAX
MAX_PYTHON_PREFIXES = 8
MAX_NAME_CHARS = 100
MAX_ERROR_CHARS = 2000  # an error kept in a record (a start error may echo the request)
SHOWN_CHARS = 80


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value quoted for an error message, cut short: a refusal never echoes a huge input back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def clip(text: str | None, limit: int = MAX_ERROR_CHARS) -> str | None:
    """Text kept in a record, cut to limit characters (None stays None)."""
    return text if text is None or len(text) <= limit else f"{text[:limit]}... (cut at {limit} characters)"


def _clean_absolute(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise SpecError(f"{what}: {shown(path)} must be an absolute path")
    if len(path.encode(errors="surrogatepass")) > MAX_PATH_BYTES:
        raise SpecError(f"{what}: at most {MAX_PATH_BYTES} bytes")
    if any(part == ".." for part in path.split("/")):
        raise SpecError(f"{what}: {shown(path)} must not contain '..'")
    return "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps POSIX's '//etc'; Linux reads /etc


def _under(path: str, tops: tuple[str, ...]) -> bool:
    return any(path == top or path.startswith(top + "/") for top in tops)


def check_destination(destination: Any, what: str) -> str:
    """Where a job is shown something or starts (the working folder): absolute, no '..', cleaned,
    neither '/' nor inside the sandbox's reserved folders. The destination half of check_mount."""
    dst = _clean_absolute(destination, what)
    if dst == "/" or (_under(dst, _RESERVED_DESTINATIONS) and not dst.startswith(_OPEN_BENEATH)):
        raise SpecError(f"{what}: {dst} is reserved by the sandbox")
    return dst


def check_mount(source: Any, destination: Any, what: str = "mount") -> tuple[str, str]:
    """The one check of every path that becomes a mount (a Mount, a Python prefix): the destination
    as check_destination says, the source absolute, clean and not a kernel interface. That the
    requester may read the source is checked by opening it as them (sandbox/mounts.open_source),
    at submission and again when the job starts."""
    dst = check_destination(destination, what if source == destination else f"{what} destination")
    src = _clean_absolute(source, f"{what} source")
    if src == "/" or _under(src, KERNEL_SOURCES):
        raise SpecError(f"{what} source: {src} cannot be shown in a job")
    return src, dst


def check_prefixes(prefixes: Any) -> list[str]:
    """Python prefixes a job sees read-only at their own paths: mounts, checked as every mount is."""
    if not isinstance(prefixes, (list, tuple)):
        raise SpecError("python_prefixes: must be a list of absolute paths")
    return [check_mount(p, p, "python prefix")[1] for p in prefixes]


@dataclass(frozen=True)
class Mount:
    """A host path shown inside the job; read-only unless rw is asked for."""

    source: str
    destination: str
    rw: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.rw, bool):
            raise SpecError("mount: rw is true or false")
        src, dst = check_mount(self.source, self.destination)
        object.__setattr__(self, "source", src)
        object.__setattr__(self, "destination", dst)

    @classmethod
    def parse(cls, text: str, cwd: str | None = None) -> Mount:
        """Parse SRC:DST[:rw|:ro]; relative paths are taken from cwd (as '.:.:rw' in a notebook)."""
        parts = text.split(":")
        mode = "ro"
        if len(parts) == 3:
            mode = parts.pop()
        if len(parts) != 2 or mode not in ("ro", "rw") or not all(parts):
            raise SpecError(f"mount: {shown(text)} is not SRC:DST, SRC:DST:ro or SRC:DST:rw")
        # '../data' is the folder beside cwd, as a shell takes it (then checked like any path)
        src, dst = (posixpath.normpath(posixpath.join(cwd, p)) if cwd and not p.startswith("/") else p for p in parts)
        return cls(source=src, destination=dst, rw=mode == "rw")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def python_prefixes() -> list[str]:
    """The prefixes of this interpreter outside /usr, shown read-only in a job so its packages work."""
    prefixes = dict.fromkeys([sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix])
    return [p for p in prefixes if p != "/usr" and not p.startswith("/usr/")]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DISPLAY_FD_ENV = "JUPYTER_WORKER_DISPLAY_FD"  # set by the sandbox for a job with display: true


def validate_env(env: dict[str, str]) -> dict[str, str]:
    """Reject names a shell could not set and values that cannot cross execve."""
    if not isinstance(env, dict):
        raise SpecError("env: must be a mapping of NAME to value")
    if len(env) > MAX_ENV_VARS:
        raise SpecError(f"env: at most {MAX_ENV_VARS} variables")
    size = 0
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise SpecError(f"env: {shown(name)} is not a valid variable name")
        if not isinstance(value, str) or "\0" in value:
            raise SpecError(f"env: the value of {shown(name)} must be text without NUL bytes")
        if name == DISPLAY_FD_ENV:
            raise SpecError(f"env: {DISPLAY_FD_ENV} is set by the sandbox; ask for display: true instead")
        size += len(name.encode()) + len(value.encode(errors="surrogatepass")) + 2  # NAME=value\0
        if size > MAX_ENV_BYTES:
            raise SpecError(f"env: at most {MAX_ENV_BYTES} bytes in all (NAME=value each)")
    return dict(env)


def parse_env_assignment(text: str) -> tuple[str, str]:
    """Split K=V as given on a command line."""
    name, sep, value = text.partition("=")
    if not sep:
        raise SpecError(f"env: {shown(text)} is not NAME=VALUE")
    validate_env({name: value})
    return name, value


def validate_argv(argv: list[str]) -> list[str]:
    if not isinstance(argv, (list, tuple)) or not argv:
        raise SpecError("command: must be a non-empty list of arguments")
    if len(argv) > MAX_ARGS:
        raise SpecError(f"command: at most {MAX_ARGS} arguments")
    size = 0
    for arg in argv:
        if not isinstance(arg, str) or "\0" in arg:
            raise SpecError("command: every argument must be text without NUL bytes")
        size += len(arg.encode(errors="surrogatepass")) + 1
        if size > MAX_COMMAND_BYTES:
            raise SpecError(f"command: at most {MAX_COMMAND_BYTES} bytes in all")
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
    disk_bytes: int = 0  # used in the job's /work, where it has a disk limit

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
_NAME_CHARS = re.compile(r"[^\w .@+-]+")


def default_name(program: str) -> str:
    """A job's name when none is given: its program's file name (basename of argv[0]) made to
    follow the name rule: other characters become '_', at most MAX_NAME_CHARS, never empty."""
    name = _NAME_CHARS.sub("_", posixpath.basename(program.rstrip("/")) or program)
    name = name.strip()[:MAX_NAME_CHARS].rstrip()
    return name if _NAME_RE.fullmatch(name) else "job"


_HOLDER_RE = re.compile(r"[\w.@:/+-]{1,200}")


MAX_STOP_GRACE_S = 3600.0  # a stop's grace period: SIGTERM, then at most this long before SIGKILL


def validate_holder(value: Any) -> str:
    """The name a Jupyter server holds its jobs under (executor/holds.py)."""
    if not isinstance(value, str) or not _HOLDER_RE.fullmatch(value):
        raise SpecError("holder: up to 200 letters, digits and . @ : / + - _")
    return value


MAX_ARTIFACT_PATTERNS = 32


def _closure(states: set[int], optional: list[bool]) -> set[int]:
    """The states reachable from states past items that may match nothing (a glob's '*', '**')."""
    for start in sorted(states):
        k = start
        while k < len(optional) and optional[k]:
            k += 1
            states.add(k)
    return states


class Glob:
    """A glob on a path relative to /work: '*' and '?' within one name, '[...]' (or '[!...]') a
    class, '**' as a whole name any number of folders; a glob that matches a folder takes
    everything in it. Matched as a set of states, one name at a time (no backtracking, so no
    glob can make a match slow). Bad globs (an unclosed '[', a reversed range) raise SpecError."""

    def __init__(self, pattern: str):
        parts: list[str] = []
        for part in pattern.split("/"):
            if part in ("", ".") or (part == "**" and parts[-1:] == ["**"]):
                continue  # './a', 'a//b', 'a/', '**/**/' mean what they would without
            parts.append(part)
        self.text = "/".join(parts)
        self.parts: list[list[tuple[str, Any]] | None] = [None if p == "**" else self._tokens(p) for p in parts]

    @staticmethod
    def _tokens(part: str) -> list[tuple[str, Any]]:
        tokens: list[tuple[str, Any]] = []
        i = 0
        while i < len(part):
            c = part[i]
            if c == "*":
                if not tokens or tokens[-1][0] != "*":  # '**' inside a name is '*'
                    tokens.append(("*", None))
            elif c == "?":
                tokens.append(("?", None))
            elif c == "[":
                end = part.find("]", i + 2)
                if end == -1:
                    raise SpecError(f"artifacts: {shown(part)}: a '[' without its ']'")
                inner, negate = part[i + 1 : end], False
                if inner[:1] in ("!", "^"):
                    inner, negate = inner[1:], True
                ranges, j = [], 0
                while j < len(inner):
                    if j + 2 < len(inner) and inner[j + 1] == "-":
                        if inner[j] > inner[j + 2]:
                            raise SpecError(f"artifacts: {shown(part)}: the range {inner[j : j + 3]} is reversed")
                        ranges.append((inner[j], inner[j + 2]))
                        j += 3
                    else:
                        ranges.append((inner[j], inner[j]))
                        j += 1
                tokens.append(("[", (negate, ranges)))
                i = end
            else:
                tokens.append(("=", c))
            i += 1
        return tokens

    @staticmethod
    def _name(tokens: list[tuple[str, Any]], name: str) -> bool:
        """One name against one part's tokens: the set of positions reachable, a character at a time."""

        def close(states: set[int]) -> set[int]:  # '*' may match nothing
            return _closure(states, [kind == "*" for kind, _ in tokens])

        states = close({0})
        for c in name:
            following: set[int] = set()
            for k in states:
                if k == len(tokens):
                    continue
                kind, value = tokens[k]
                if kind == "*":
                    following.add(k)
                elif kind == "?" or (kind == "=" and value == c):
                    following.add(k + 1)
                elif kind == "[" and value[0] != any(low <= c <= high for low, high in value[1]):
                    following.add(k + 1)
            states = close(following)
            if not states:
                return False
        return len(tokens) in states

    def matches(self, path: str) -> bool:
        """Whether path (relative to /work, '/' between names) is taken: matched, or beneath a match."""
        parts = self.parts

        def close(states: set[int]) -> set[int]:  # '**' may stand for no folder at all
            return _closure(states, [part is None for part in parts])

        states = close({0})
        for name in path.split("/"):
            if len(parts) in states:
                return True  # a folder that matched: everything in it
            following: set[int] = set()
            for k in states:
                if k == len(parts):
                    continue
                tokens = parts[k]
                if tokens is None:
                    following.add(k)
                elif self._name(tokens, name):
                    following.add(k + 1)
            states = close(following)
            if not states:
                return False
        return len(parts) in states


def _check_pattern(pattern: Any) -> str:
    """A glob as taken at submission: normalised ('./', a trailing '/', repeated '**/' dropped)
    and compiled once, so a bad one is refused now, in one error."""
    if not isinstance(pattern, str) or not pattern.strip() or "\0" in pattern:
        raise SpecError("artifacts: a glob is non-empty text")
    if len(pattern.encode(errors="surrogatepass")) > MAX_PATH_BYTES:
        raise SpecError(f"artifacts: a glob of at most {MAX_PATH_BYTES} bytes")
    pattern = pattern.strip()
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise SpecError(f"artifacts: {shown(pattern)} must be a glob relative to /work, without '..'")
    text = Glob(pattern).text
    if not text:
        raise SpecError(f"artifacts: {shown(pattern)} names no file")
    return text


@dataclass(frozen=True)
class Artifacts:
    """Where the files a job leaves in /work are copied when it ends (a folder of the requester's,
    written as them: executor/artifacts.py), and which (globs on the path relative to /work,
    '**' across folders; none: all of them)."""

    destination: str
    patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "destination", _clean_absolute(self.destination, "artifacts"))
        if not isinstance(self.patterns, (list, tuple)) or len(self.patterns) > MAX_ARTIFACT_PATTERNS:
            raise SpecError(f"artifacts: at most {MAX_ARTIFACT_PATTERNS} globs")
        object.__setattr__(self, "patterns", tuple(_check_pattern(p) for p in self.patterns))

    @classmethod
    def parse(cls, text: str, cwd: str | None = None) -> Artifacts:
        """DIR[:GLOB[,GLOB...]], DIR taken from cwd when relative (the notebook's, the caller's folder)."""
        if not isinstance(text, str) or not text:
            raise SpecError("artifacts: DIR[:GLOB[,GLOB...]]")
        folder, _, globs = text.partition(":")
        if cwd and not folder.startswith("/"):  # '../out' is the folder beside cwd, as a shell takes it
            folder = posixpath.normpath(posixpath.join(cwd, folder or "."))
        return cls(folder, tuple(g for g in globs.split(",") if g.strip()) if globs else ())

    @classmethod
    def from_value(cls, value: Any, cwd: str | None = None) -> Artifacts | None:
        """None, an Artifacts, 'DIR[:GLOB,...]' or {"destination", "patterns"}."""
        if value is None or isinstance(value, Artifacts):
            return value
        if isinstance(value, str):
            return cls.parse(value, cwd)
        if not isinstance(value, dict) or set(value) - {"destination", "patterns"} or "destination" not in value:
            raise SpecError("artifacts: an object with destination (an absolute folder) and patterns (globs)")
        patterns = value.get("patterns") or ()
        if not isinstance(patterns, (list, tuple)):
            raise SpecError("artifacts: patterns is a list of globs")
        destination = value["destination"]
        if cwd and isinstance(destination, str) and not destination.startswith("/"):  # as in DIR[:GLOB]
            destination = posixpath.normpath(posixpath.join(cwd, destination))
        return cls(destination, tuple(patterns))

    def to_dict(self) -> dict[str, Any]:
        return {"destination": self.destination, "patterns": list(self.patterns)}


class BackendName(str, enum.Enum):
    """Where a job runs: this host's sandbox, or a node of a Slurm cluster (executor/slurm/)."""

    LOCAL = "local"
    SLURM = "slurm"


_PLACEMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
PLACEMENT_KEYS = ("partition", "account", "qos")


@dataclass(frozen=True)
class Placement:
    """Where on a cluster a job asks to go: passed to the scheduler as they are (Slurm's
    --partition, --account, --qos), each a plain name."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None

    def __post_init__(self) -> None:
        for key, value in self.to_dict().items():
            if not isinstance(value, str) or not _PLACEMENT_RE.fullmatch(value):
                raise SpecError(f"{key}: up to 64 letters, digits and . _ + - (not first)")

    @classmethod
    def from_value(cls, value: Any) -> Placement | None:
        """None, a Placement, or {"partition", "account", "qos"} (each optional)."""
        if value is None or isinstance(value, Placement):
            return value
        if not isinstance(value, dict) or set(value) - set(PLACEMENT_KEYS):
            raise SpecError("placement: an object with partition, account and qos (each optional)")
        placement = cls(**{key: item for key, item in value.items() if item not in (None, "")})
        return placement if placement.to_dict() else None

    def to_dict(self) -> dict[str, str]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def _backend(value: Any) -> BackendName:
    try:
        return BackendName(value)
    except ValueError:
        raise SpecError(f"backend: {shown(value)} is not one of local, slurm") from None


_REQUEST_FIELDS = {
    "command",
    "backend",
    "placement",
    "artifacts",
    "name",
    "limits",
    "env",
    "mounts",
    "network",
    "cwd",
    "python_prefixes",
    "owner",
    "holder",
    "display",
}


@dataclass
class JobRequest:
    """What a client asks the executor for; limits not set come from the executor's policy."""

    command: list[str]
    name: str | None = None
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    network: NetworkMode | None = None
    cwd: str = "/work"
    python_prefixes: list[str] = field(default_factory=list)
    owner: str | None = None
    holder: str | None = None
    display: bool = False  # a display pipe in the job (DISPLAY_FD_ENV), read into the log's "display" stream
    artifacts: Artifacts | None = None  # /work's files copied to a folder of the requester's at the end
    backend: BackendName = BackendName.LOCAL
    placement: Placement | None = None  # a cluster backend's partition, account, qos

    def __post_init__(self) -> None:
        self.command = validate_argv(self.command)
        self.backend = _backend(self.backend)
        self.placement = Placement.from_value(self.placement)
        if self.placement is not None and self.backend is BackendName.LOCAL:
            raise SpecError("partition, account and qos are for a cluster backend: add backend slurm")
        self.holder = None if self.holder is None else validate_holder(self.holder)
        if not isinstance(self.display, bool):
            raise SpecError("display: true or false")
        self.env = validate_env(self.env)
        if not isinstance(self.mounts, list) or len(self.mounts) > MAX_MOUNTS:
            raise SpecError(f"mounts: at most {MAX_MOUNTS}")
        if not isinstance(self.python_prefixes, list) or len(self.python_prefixes) > MAX_PYTHON_PREFIXES:
            raise SpecError(f"python_prefixes: at most {MAX_PYTHON_PREFIXES}")
        if self.name is not None and (not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name)):
            raise SpecError("name: use up to 100 letters, digits, spaces and . @ + - _")
        if not isinstance(self.limits, Limits):
            self.limits = Limits.parse(self.limits)
        self.network = None if self.network is None else _network(self.network)
        self.cwd = check_destination(self.cwd, "cwd")
        self.python_prefixes = check_prefixes(self.python_prefixes)
        self.artifacts = Artifacts.from_value(self.artifacts)

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
        if len(mounts) > MAX_MOUNTS:
            raise SpecError(f"mounts: at most {MAX_MOUNTS}")
        data["mounts"] = [Mount.parse(m) if isinstance(m, str) else _mount_from_dict(m) for m in mounts]
        try:
            return cls(**data)
        except TypeError as exc:
            raise SpecError(f"job: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["limits"] = self.limits.given()
        data["mounts"] = [m.to_dict() for m in self.mounts]
        data["network"] = self.network.value if self.network else None
        data["artifacts"] = self.artifacts.to_dict() if self.artifacts else None
        data["backend"] = self.backend.value
        data["placement"] = self.placement.to_dict() if self.placement else None
        return data


def _network(value: Any) -> NetworkMode:
    try:
        return NetworkMode(value)
    except ValueError:
        raise SpecError(f"network: {shown(value)} is not one of none, host, isolated") from None


def _mount_from_dict(data: Any) -> Mount:
    if not isinstance(data, dict) or set(data) - {"source", "destination", "rw"}:
        raise SpecError("mount: an object with source, destination and rw")
    try:
        return Mount(**data)
    except TypeError as exc:
        raise SpecError(f"mount: {exc}") from None


def describe_ending(job: JobRecord) -> str:
    """How a job ended, in words, or its state while it has not: the words every UI shows."""
    words = {
        Reason.EXIT: f"exit code {job.exit_code}",
        Reason.SIGNAL: f"killed by signal {job.signal}",
        Reason.OOM: f"killed: out of memory (limit {job.limits.memory_mb} MiB)",
        Reason.TIMEOUT: f"timed out after {duration_words(job.limits.timeout_s or 0)}",
        Reason.STOPPED: f"stopped by {job.stopped_by or 'request'}",
        Reason.START_ERROR: f"could not start: {job.error}",
        Reason.LOST: f"lost: {job.error or 'its supervisor vanished'}",
    }
    return words[job.reason] if job.reason else job.status.value.lower()


TERMINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED)


@dataclass
class JobRecord:
    """A job as the executor keeps it and every API shows it (`to_dict`); clients read it back
    with `from_dict`."""

    id: str
    name: str
    owner: str
    owner_uid: int
    command: list[str]
    status: JobStatus
    limits: Limits
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
    # --artifacts: {destination, patterns} asked; once copied also copied, bytes, skipped (a count),
    # skipped_examples [[path, why]], note (a cap reached), error (the copy failed)
    artifacts: dict[str, Any] | None = None
    # QUEUED only: {"position": 1 = next to start, "reason": why it waits, in words}; set by the
    # executor when it shows the record (service.Executor), null in every other state
    queue: dict[str, Any] | None = None
    backend: str = BackendName.LOCAL.value
    node: str | None = None  # the cluster node it runs or ran on (a cluster backend's jobs)
    # a cluster backend's: partition, account, qos as asked, and the cluster's id of it (slurm_job_id)
    placement: dict[str, str] | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def ending(self) -> str:
        """How it ended in words, or its state while it has not."""
        return describe_ending(self)

    @property
    def shell_code(self) -> int:
        """The exit code a shell would report for it (see Outcome.shell_code)."""
        if self.reason is None:
            return 0
        return Outcome(self.reason, self.exit_code, self.signal).shell_code

    def to_dict(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: its deep walk was the executor's largest cost per
        # job (a record is encoded several times in its life). Containers are copied, as asdict did.
        data = {name: _copied(getattr(self, name)) for name in _RECORD_NAMES}
        data["status"] = self.status.value
        data["reason"] = self.reason.value if self.reason else None
        data["limits"] = self.limits.to_dict()
        data["status_text"] = self.ending
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """A record as the executor or REST sent it (fields this version does not know are ignored)."""
        known = {key: value for key, value in data.items() if key in _RECORD_FIELDS}
        known["status"] = JobStatus(known["status"])
        known["reason"] = Reason(known["reason"]) if known.get("reason") else None
        known["limits"] = Limits.parse({k: v for k, v in (known.get("limits") or {}).items() if k in BY_FIELD})
        known["metrics"] = known.get("metrics") or {}
        return cls(**known)


_RECORD_FIELDS = set(JobRecord.__dataclass_fields__)
_RECORD_NAMES = tuple(JobRecord.__dataclass_fields__)


def _copied(value: Any) -> Any:
    """A JSON-like value with its lists and dicts copied (the record's own stay untouched)."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value
