"""cgroup v2, v1 and hybrid hosts behind one interface: create a job's cgroups, limit, watch, kill.

Which controller enforces which limit is one table, ENFORCED, keyed by the fields of
limits.LIMITS. What differs between the versions (controller names, the files that set each limit
and their formats, the files that report usage, how a cgroup is joined, frozen and made ready for
children) is held by two dialects with the same verbs, CgroupV1 and CgroupV2, as nsjail's cgroup.cc
and cgroup2.cc; each hierarchy speaks one. JobCgroup, the refusals and the doctor read them and
never ask which version they are on.

On a hybrid host the v1 controllers enforce the limits while the controller-less v2 tree tracks the
job (cgroup.kill, cgroup.events, cpu.stat). Job cgroups are made beneath the caller's own cgroup in
each hierarchy, under a folder named after the project, and removed when the job ends.
"""

from __future__ import annotations

import abc
import errno
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import SpecError
from ..limits import Limits
from ..spec import Usage

PROJECT_DIR = "jupyter-worker"
EXECUTOR_LEAF = "jupyter-worker-executor"
_PERIOD_US = 100_000


class CgroupError(SpecError):
    """A limit or a cgroup operation this host cannot give; the job is refused."""


@dataclass(frozen=True)
class Enforcement:
    """The controller that enforces a limit (by its cgroup v2 name), and the named values that the
    dialects' files are written with, made from the limit's value."""

    controller: str
    values: Callable[[Any], dict[str, Any]]


# In the order of limits.LIMITS; the limits not here need no controller (timeout, /tmp, network).
ENFORCED: dict[str, Enforcement] = {
    "memory_mb": Enforcement("memory", lambda mb: {"bytes": mb << 20}),
    # The kernel takes no quota below 1 ms a period.
    "cpu_percent": Enforcement(
        "cpu", lambda percent: {"quota": max(percent * _PERIOD_US // 100, 1000), "period": _PERIOD_US}
    ),
    # One more than asked: the job's init counts too (usage reports one less).
    "pids": Enforcement("pids", lambda count: {"count": count + 1}),
    "io_bps": Enforcement("io", lambda bps: {"bps": bps}),
    "cpuset": Enforcement("cpuset", lambda cpus: {"cpus": cpus}),
}


@dataclass(frozen=True)
class Knob:
    """How one cgroup version sets one limit: files written in this order, each with a format of
    the limit's ENFORCED values, and the doctor's words for it."""

    writes: tuple[tuple[str, str], ...]
    how: str
    optional: frozenset[str] = frozenset()  # written only where the kernel has them (swap accounting)
    per_device: bool = False  # written once for each block device, as {device}


_PIDS = Knob((("pids.max", "{count}"),), "pids.max")
_CPUSET = Knob((("cpuset.cpus", "{cpus}"),), "cpuset.cpus")


# The files (and values) that report usage and freeze a job, by concern: (v1, v2).
FILES: dict[str, tuple[str, str]] = {
    "memory": ("memory.usage_in_bytes", "memory.current"),  # bytes now
    "memory_peak": ("memory.max_usage_in_bytes", "memory.peak"),
    "oom": ("memory.oom_control", "memory.events"),  # keyed, with oom_kill
    "io": ("blkio.throttle.io_service_bytes", "io.stat"),  # bytes read and written, by device
    "freeze": ("freezer.state", "cgroup.freeze"),
    "frozen": ("FROZEN", "1"),
    "thawed": ("THAWED", "0"),
}


def _read(path: str) -> str:
    """A whole (small) kernel file; plain os calls take half the time of open(), which counts at a
    job's end, where about ten are read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _keyed(path: str) -> dict[str, int]:
    """Parse flat keyed files like memory.events or cpu.stat."""
    out: dict[str, int] = {}
    try:
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
    except OSError:
        pass
    return out


def _int_file(path: str) -> int | None:
    try:
        text = _read(path).strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def _procs(path: str) -> list[int]:
    try:
        return [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return []


class Dialect(abc.ABC):
    """What one cgroup version calls things and how it is spoken: the verbs every hierarchy has."""

    version: int
    tracking: str  # the doctor's words for tracking jobs with this version
    names: ClassVar[dict[str, str]] = {}  # controllers named otherwise than in v2
    knobs: ClassVar[dict[str, Knob]]  # by limit field, as ENFORCED
    swap_file: str  # where it exists, swap can be kept out of the memory limit
    kill_file: str | None = None  # one write kills every process, forks in flight included
    # A process joins either by itself (file, value), or by another process writing its pid.
    self_join: tuple[str, str] | None = None
    pid_join: str | None = None

    def file(self, concern: str) -> str:
        """This version's file (or value) for a concern of FILES."""
        return FILES[concern][self.version - 1]

    def name(self, controller: str) -> str:
        """This version's name of a controller given by its v2 name."""
        return self.names.get(controller, controller)

    def limit(self, path: str, field: str, value: Any, devices: list[str]) -> None:
        """Write one limit (by its field in LIMITS) into the cgroup at path."""
        knob = self.knobs[field]
        values = ENFORCED[field].values(value)
        for device in devices if knob.per_device else [None]:
            for name, form in knob.writes:
                target = os.path.join(path, name)
                if name not in knob.optional or os.path.exists(target):
                    _write(target, form.format(device=device, **values))

    @abc.abstractmethod
    def kill_how(self) -> str:
        """How a whole job tree is killed with this version."""

    def kill(self, path: str) -> None:
        """SIGKILL every process in the cgroup: all at once where the kernel can, else frozen
        meanwhile so that none forks past the kill."""
        if self.kill_file and os.path.exists(os.path.join(path, self.kill_file)):
            _write(os.path.join(path, self.kill_file), "1")
            return
        freeze = os.path.join(path, self.file("freeze"))
        _write(freeze, self.file("frozen"))
        for pid in _procs(path):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        _write(freeze, self.file("thawed"))

    def populated(self, path: str) -> bool:
        return bool(_procs(path))

    @abc.abstractmethod
    def ready_base(self, hierarchy: Hierarchy, base: str) -> None:
        """Make the project folder able to hold job cgroups."""

    @abc.abstractmethod
    def ready_job(self, hierarchy: Hierarchy, base: str, path: str) -> None:
        """Make a job cgroup just made in base able to hold processes."""

    @abc.abstractmethod
    def cpu_seconds(self, path: str) -> float:
        """CPU time used, user and system."""

    def memory(self, path: str) -> tuple[int, int]:
        """Current and peak memory, in bytes."""
        current = _int_file(os.path.join(path, self.file("memory"))) or 0
        return current, _int_file(os.path.join(path, self.file("memory_peak"))) or current

    def oom_kills(self, path: str) -> int:
        return _keyed(os.path.join(path, self.file("oom"))).get("oom_kill", 0)

    def io_bytes(self, path: str) -> tuple[int, int]:
        """Bytes read and written, over all devices."""
        try:
            lines = _read(os.path.join(path, self.file("io"))).splitlines()
        except OSError:
            return 0, 0
        counts = [self.io_counts(line) for line in lines]
        return sum(read for read, _ in counts), sum(written for _, written in counts)

    @abc.abstractmethod
    def io_counts(self, line: str) -> tuple[int, int]:
        """Bytes read and written in one line of the io file."""


class CgroupV1(Dialect):
    version = 1
    tracking = "v1 freezer"
    names: ClassVar[dict[str, str]] = {"io": "blkio"}
    swap_file = "memory.memsw.limit_in_bytes"
    knobs: ClassVar[dict[str, Knob]] = {
        "memory_mb": Knob(
            (("memory.limit_in_bytes", "{bytes}"), (swap_file, "{bytes}"), ("memory.swappiness", "0")),
            "memory.limit_in_bytes + memory.memsw.limit_in_bytes",
            optional=frozenset({swap_file}),
        ),
        "cpu_percent": Knob((("cpu.cfs_period_us", "{period}"), ("cpu.cfs_quota_us", "{quota}")), "cpu.cfs_quota_us"),
        "pids": _PIDS,
        "io_bps": Knob(
            (
                ("blkio.throttle.read_bps_device", "{device} {bps}"),
                ("blkio.throttle.write_bps_device", "{device} {bps}"),
            ),
            "blkio.throttle.{read,write}_bps_device (direct I/O only: v1 cannot throttle buffered writes)",
            per_device=True,
        ),
        "cpuset": _CPUSET,
    }
    # '0' in a v1 tasks file moves the writer's own thread without the kernel's global threadgroup
    # lock, which makes joining cheap; for a single-threaded init, the thread is the whole process.
    self_join = ("tasks", "0")

    def kill_how(self) -> str:
        return "freezer"

    def ready_base(self, hierarchy: Hierarchy, base: str) -> None:
        if "cpuset" in hierarchy.controllers:
            _copy_cpuset(os.path.dirname(base), base)

    def ready_job(self, hierarchy: Hierarchy, base: str, path: str) -> None:
        if "cpuset" in hierarchy.controllers:
            _copy_cpuset(base, path)

    def cpu_seconds(self, path: str) -> float:
        return (_int_file(os.path.join(path, "cpuacct.usage")) or 0) / 1e9

    def io_counts(self, line: str) -> tuple[int, int]:
        parts = line.split()  # "8:0 Read 4096"; also Write, Sync, Async, Total
        if len(parts) != 3:
            return 0, 0
        count = int(parts[2])
        return (count if parts[1] == "Read" else 0), (count if parts[1] == "Write" else 0)


class CgroupV2(Dialect):
    version = 2
    tracking = "v2"
    swap_file = "memory.swap.max"
    knobs: ClassVar[dict[str, Knob]] = {
        "memory_mb": Knob(
            (("memory.max", "{bytes}"), (swap_file, "0")),
            "memory.max + memory.swap.max=0",
            optional=frozenset({swap_file}),
        ),
        "cpu_percent": Knob((("cpu.max", "{quota} {period}"),), "cpu.max"),
        "pids": _PIDS,
        "io_bps": Knob((("io.max", "{device} rbps={bps} wbps={bps}"),), "io.max rbps/wbps", per_device=True),
        "cpuset": _CPUSET,
    }
    kill_file = "cgroup.kill"
    # Writing cgroup.procs takes the kernel's global threadgroup lock, which waits for an RCU grace
    # period (milliseconds), so the supervisor does it while the init builds the root.
    pid_join = "cgroup.procs"
    # The controllers job cgroups are given, in the order subtree_control is written.
    delegated = tuple(enforcement.controller for enforcement in ENFORCED.values())

    def kill_how(self) -> str:
        return "cgroup.kill" if kernel_at_least(5, 14) else "cgroup.freeze"

    def populated(self, path: str) -> bool:
        return _keyed(os.path.join(path, "cgroup.events")).get("populated", 0) == 1

    def ready_base(self, hierarchy: Hierarchy, base: str) -> None:
        self.delegate(hierarchy, base)

    def ready_job(self, hierarchy: Hierarchy, base: str, path: str) -> None:
        """Nothing to do: a v2 job cgroup has every controller its parent delegates."""

    def delegate(self, hierarchy: Hierarchy, path: str) -> None:
        """Let the cgroups below path use the controllers jobs need that the hierarchy has."""
        wanted = [c for c in self.delegated if c in hierarchy.controllers]
        control = os.path.join(path, "cgroup.subtree_control")
        if wanted and not set(wanted) <= set(_read(control).split()):
            _write(control, " ".join("+" + c for c in wanted))

    def cpu_seconds(self, path: str) -> float:
        return _keyed(os.path.join(path, "cpu.stat")).get("usage_usec", 0) / 1e6

    def io_counts(self, line: str) -> tuple[int, int]:
        stats = dict(part.split("=") for part in line.split()[1:])  # "8:0 rbytes=4096 wbytes=0 ..."
        return int(stats.get("rbytes", 0)), int(stats.get("wbytes", 0))


V1 = CgroupV1()
V2 = CgroupV2()


@dataclass
class Hierarchy:
    mountpoint: str
    dialect: Dialect
    controllers: frozenset[str]
    own: str

    @property
    def version(self) -> int:
        return self.dialect.version

    @property
    def own_dir(self) -> str:
        return os.path.join(self.mountpoint, self.own.lstrip("/"))


# A job's processes live in <the executor's cgroup>/jupyter-worker/<32 hex digits> (supervisor.py
# names them), in every hierarchy; they cannot make cgroups of their own below it.
_JOB_CGROUP = re.compile(rf"/{PROJECT_DIR}/[0-9a-f]{{32}}(?:/|$)")


def in_a_job(pid: int) -> bool:
    """Whether the process runs inside a job's cgroup, of any executor on this host; also True when
    that cannot be told (the process is gone, or not visible from here): callers refuse on True."""
    try:
        text = _read(f"/proc/{pid}/cgroup") if pid > 0 else ""
    except OSError:
        return True
    paths = [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]
    return not paths or any(_JOB_CGROUP.search(path) for path in paths)


def _own_paths(pid: str) -> dict[frozenset[str], str]:
    paths = {}
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _, names, path = line.split(":", 2)
        paths[frozenset(n for n in names.split(",") if n and not n.startswith("name="))] = path
    return paths


def _mounts_under(root: str) -> list[tuple[str, str, str, str]]:
    """(mountpoint, mount root, fstype, super options) of cgroup mounts beneath root."""
    found = []
    root = os.path.realpath(root)
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        sep = fields.index("-")
        mountpoint, mount_root = fields[4], fields[3]
        fstype, options = fields[sep + 1], fields[sep + 3]
        if fstype in ("cgroup", "cgroup2") and (mountpoint == root or mountpoint.startswith(root.rstrip("/") + "/")):
            found.append((mountpoint, mount_root, fstype, options))
    return found


def _relative(own: str, mount_root: str) -> str:
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root + "/")):
        return own[len(mount_root) :] or "/"
    return own


# The v1 controllers jobs use: those enforcing limits, cpuacct (CPU time) and freezer (tracking).
_V1_CONTROLLERS = {V1.name(e.controller) for e in ENFORCED.values()} | {"cpuacct", "freezer"}


@dataclass
class CgroupHost:
    """The cgroup layout seen from one process, and where that process may make job cgroups."""

    root: str
    v1: dict[str, Hierarchy] = field(default_factory=dict)
    v2: Hierarchy | None = None
    problem: str | None = None

    @classmethod
    def detect(cls, root: str = "/sys/fs/cgroup", pid: str = "self") -> CgroupHost:
        host = cls(root=root)
        own = _own_paths(pid)
        for mountpoint, mount_root, fstype, options in _mounts_under(root):
            if fstype == "cgroup2":
                path = _relative(own.get(frozenset(), "/"), mount_root)
                available = frozenset(_read(os.path.join(mountpoint, path.lstrip("/"), "cgroup.controllers")).split())
                host.v2 = Hierarchy(mountpoint, V2, available, path)
                continue
            names = frozenset(o for o in options.split(",") if o in _V1_CONTROLLERS)
            if not names or names not in own:
                continue
            hierarchy = Hierarchy(mountpoint, V1, names, _relative(own[names], mount_root))
            for name in names:
                host.v1.setdefault(name, hierarchy)
        return host

    @property
    def mode(self) -> str:
        if self.v2 and self.v1:
            return "hybrid"
        return "v2" if self.v2 else ("v1" if self.v1 else "none")

    def backend(self, controller: str) -> Hierarchy | None:
        """The hierarchy that enforces a controller (by its v2 name): v2 where it is available
        there, else v1."""
        if self.v2 and controller in self.v2.controllers:
            return self.v2
        return self.v1.get(V1.name(controller))

    @property
    def uses_v2(self) -> bool:
        """Whether jobs get a v2 cgroup: on v2 hosts, and on hybrid hosts without a v1 freezer.

        Joining a v2 cgroup takes the kernel's global threadgroup lock and waits for an RCU grace
        period (5-15 ms here); v1 cgroups can be joined without it, so a hybrid host with the v1
        freezer tracks and kills jobs through v1 and starts them faster.
        """
        return self.v2 is not None and (not self.v1 or "freezer" not in self.v1)

    def _core(self, v1_controller: str) -> Hierarchy | None:
        """A job's v2 cgroup where it has one (v2 tracks and counts without controllers), else the
        v1 hierarchy of the controller that does it there."""
        return self.v2 if self.uses_v2 else self.v1.get(v1_controller)

    @property
    def tracker(self) -> Hierarchy | None:
        """The hierarchy that lists, watches and kills a job's processes."""
        return self._core("freezer")

    @property
    def cpu_counter(self) -> Hierarchy | None:
        """The hierarchy that counts a job's CPU time."""
        return self._core("cpuacct")

    def can_kill(self) -> str | None:
        """How this host kills a whole job tree, or None if it cannot."""
        return self.tracker.dialect.kill_how() if self.tracker else None

    def refusals(self, limits: Limits, devices_error: str | None = None) -> list[str]:
        """Every requested limit this host cannot enforce, each with its reason."""
        return self.refusals_of(limits.given(), devices_error)

    def refusals_of(self, fields: Iterable[str], devices_error: str | None = None) -> list[str]:
        """Why this host cannot enforce the limits of these fields (of LIMITS), or jobs at all."""
        why = self.problem or f"cgroup {self.mode}; see `jupyter-worker doctor`"
        problems = []
        for name in fields:
            if name not in ENFORCED:
                continue
            controller = ENFORCED[name].controller
            hierarchy = self.backend(controller)
            if hierarchy is None:
                problems.append(
                    f"{controller} limit: the {controller} controller is not available under {self.root} ({why})"
                )
            elif name == "memory_mb" and not _swap_excluded(hierarchy):
                problems.append("memory limit: swap is on and this host cannot exclude it from the job")
            if name == "io_bps" and devices_error:
                problems.append(f"I/O limit: {devices_error}")
        if self.can_kill() is None:
            problems.append("no way to kill a whole job tree (needs cgroup v2 or the v1 freezer)")
        return problems

    def create(self, name: str) -> JobCgroup:
        """Make a job's cgroups, before its limits are known (JobCgroup.apply sets them later)."""
        problems = self.refusals(Limits())
        if problems:
            raise CgroupError("; ".join(problems))
        dirs: dict[str, str] = {}
        try:
            for hierarchy in self.hierarchies():
                base = os.path.join(hierarchy.own_dir, PROJECT_DIR)
                dirs[hierarchy.mountpoint] = _make_child(hierarchy, base, name)
        except OSError as exc:
            JobCgroup(self, dirs).remove()
            raise CgroupError(f"cgroup setup failed: {exc}") from exc
        return JobCgroup(self, dirs)

    def hierarchies(self) -> list[Hierarchy]:
        """Every hierarchy a job gets a cgroup in: made before the job's limits are known."""
        chosen: dict[str, Hierarchy] = {}
        if self.v2 and self.uses_v2:
            chosen[self.v2.mountpoint] = self.v2
        for hierarchy in self.v1.values():
            chosen[hierarchy.mountpoint] = hierarchy
        return list(chosen.values())

    def enable_v2_controllers(self) -> None:
        """Let job cgroups below our own use the v2 controllers (the delegation model).

        A non-root cgroup holding processes cannot hand controllers down; if the only processes in
        it are this one and its parent (the executor), they move into a leaf beside the jobs.
        """
        if self.v2 is None:
            return
        try:
            V2.delegate(self.v2, self.v2.own_dir)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            self._move_own_processes_to_leaf()
            V2.delegate(self.v2, self.v2.own_dir)

    def find_job(self, name: str) -> JobCgroup | None:
        """The cgroups of a job by its name, where any are left."""
        dirs = {}
        for hierarchy in self.hierarchies():
            path = os.path.join(hierarchy.own_dir, PROJECT_DIR, name)
            if os.path.isdir(path):
                dirs[hierarchy.mountpoint] = path
        return JobCgroup(self, dirs) if dirs else None

    def refuse_v2_controllers(self, why: str) -> None:
        """Controllers that cannot be delegated are treated as absent, with the reason kept."""
        if self.v2 is not None:
            self.v2.controllers = frozenset()
        self.problem = why

    def _move_own_processes_to_leaf(self) -> None:
        assert self.v2 is not None
        ours = {os.getpid(), os.getppid()}
        present = set(_procs(self.v2.own_dir))
        if not present <= ours:
            raise CgroupError(
                f"cgroup v2: {self.v2.own} holds other processes, so its controllers cannot be "
                "delegated to jobs; run the executor in a cgroup of its own "
                "(systemd: Delegate=yes, see docs/deployment.md)"
            )
        leaf = os.path.join(self.v2.own_dir, EXECUTOR_LEAF)
        os.makedirs(leaf, exist_ok=True)
        for pid in sorted(present):
            _write(os.path.join(leaf, "cgroup.procs"), str(pid))


def _swap_excluded(memory: Hierarchy) -> bool:
    return not swap_in_use() or os.path.exists(os.path.join(memory.own_dir, memory.dialect.swap_file))


def _make_child(hierarchy: Hierarchy, base: str, name: str) -> str:
    """mkdir base/name, remaking base if a finishing job removed it meanwhile."""
    path = os.path.join(base, name)
    for _ in range(5):
        try:
            os.makedirs(base, exist_ok=True)
            hierarchy.dialect.ready_base(hierarchy, base)
            os.mkdir(path)
            hierarchy.dialect.ready_job(hierarchy, base, path)
            return path
        except FileNotFoundError:
            continue
    raise CgroupError(f"could not create {path}")


def _copy_cpuset(parent: str, child: str) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not _read(os.path.join(child, name)).strip():
            _write(os.path.join(child, name), _read(os.path.join(parent, name)).strip())


def kernel_at_least(major: int, minor: int) -> bool:
    numbers = os.uname().release.split("-")[0].split(".")
    return (int(numbers[0]), int(numbers[1])) >= (major, minor)


def swap_in_use() -> bool:
    try:
        return len(_read("/proc/swaps").splitlines()) > 1
    except OSError:
        return False


class JobCgroup:
    """One job's cgroups across hierarchies."""

    def __init__(self, host: CgroupHost, dirs: dict[str, str]):
        self.host = host
        self.dirs = dirs
        self._pids_peak = 0
        self._emptied = False  # seen empty after a kill: no process can enter a job's cgroup again

    def _parts(self) -> list[tuple[Hierarchy, str]]:
        return [(h, self.dirs[h.mountpoint]) for h in self.host.hierarchies() if h.mountpoint in self.dirs]

    def _in(self, hierarchy: Hierarchy | None) -> tuple[Hierarchy, str] | None:
        if hierarchy is None or hierarchy.mountpoint not in self.dirs:
            return None
        return hierarchy, self.dirs[hierarchy.mountpoint]

    def _dir(self, controller: str) -> tuple[Hierarchy, str] | None:
        return self._in(self.host.backend(controller))

    def _enforcing(self, controller: str) -> tuple[Hierarchy, str]:
        found = self._dir(controller)
        if found is None:
            raise CgroupError(f"{controller} limit: no {controller} cgroup for this job")
        return found

    def _tracking(self) -> tuple[Hierarchy, str]:
        found = self._in(self.host.tracker)
        if found is None:
            raise CgroupError("no cgroup tracks this job")
        return found

    def place(self, pid: int) -> None:
        """Move a process, from outside, into the job's cgroups that take a pid (v2); its
        children are born inside. The supervisor does it while the init builds the root."""
        for hierarchy, path in self._parts():
            if hierarchy.dialect.pid_join:
                _write(os.path.join(path, hierarchy.dialect.pid_join), str(pid))

    def join(self) -> None:
        """Move the calling single-threaded process into the job's cgroups that it can join by
        itself (v1)."""
        for hierarchy, path in self._parts():
            if hierarchy.dialect.self_join:
                name, value = hierarchy.dialect.self_join
                _write(os.path.join(path, name), value)

    def apply(self, limits: Limits, io_devices: list[str]) -> None:
        """Set every limit given, each in the hierarchy that enforces its controller."""
        for name, enforcement in ENFORCED.items():
            value = getattr(limits, name)
            if value is not None:
                hierarchy, path = self._enforcing(enforcement.controller)
                hierarchy.dialect.limit(path, name, value, io_devices)

    def pids(self) -> list[int]:
        return _procs(self._tracking()[1])

    def populated(self) -> bool:
        hierarchy, path = self._tracking()
        return hierarchy.dialect.populated(path)

    def send_kill(self) -> None:
        """SIGKILL every process in the job, forks in flight included, without waiting: for a
        caller told of the end another way (the monitor, by its init's pidfd)."""
        if not self._emptied and self.populated():
            hierarchy, path = self._tracking()
            hierarchy.dialect.kill(path)

    def kill(self) -> None:
        """SIGKILL every process in the job, forks in flight included, and wait until it is empty.

        Called once the job's init is in its cgroups; seen empty after that, they stay empty (only
        root moves a process in), so later calls (a supervisor's ending paths) read nothing."""
        if self._emptied:
            return
        if self.populated():
            hierarchy, path = self._tracking()
            hierarchy.dialect.kill(path)
            deadline = time.monotonic() + 10
            while self.populated() and time.monotonic() < deadline:
                time.sleep(0.002)
            if self.populated():
                return
        self._emptied = True

    def signal_all(self, signum: int, spare: int | None = None) -> None:
        for pid in self.pids():
            if pid != spare:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    def oom_kills(self) -> int:
        found = self._dir("memory")
        return found[0].dialect.oom_kills(found[1]) if found else 0

    def usage(self) -> Usage:
        usage = Usage(oom_kills=self.oom_kills())
        counter = self._in(self.host.cpu_counter)
        if counter:
            usage.cpu_seconds = counter[0].dialect.cpu_seconds(counter[1])
        memory = self._dir("memory")
        if memory:
            usage.memory_bytes, usage.memory_peak_bytes = memory[0].dialect.memory(memory[1])
        io = self._dir("io")
        if io:
            usage.io_read_bytes, usage.io_write_bytes = io[0].dialect.io_bytes(io[1])
        pids = self._dir("pids")
        if pids:
            current = _int_file(os.path.join(pids[1], "pids.current")) or 0
            peak = _int_file(os.path.join(pids[1], "pids.peak"))
            usage.pids = max(current - 1, 0)
            self._pids_peak = max(self._pids_peak, (peak if peak is not None else current) - 1)
            usage.pids_peak = self._pids_peak
        return usage

    @property
    def name(self) -> str:
        """The job's cgroup folder name (the same in every hierarchy)."""
        return os.path.basename(next(iter(self.dirs.values())))

    def remove(self) -> None:
        """rmdir the job's cgroups, then the project folder if no other job uses it."""
        for path in self.dirs.values():
            for _ in range(200):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    time.sleep(0.005)
            try:
                os.rmdir(os.path.dirname(path))
            except OSError:
                pass
