"""cgroup v2, v1 and hybrid hosts behind one interface: create a job's cgroups, limit, watch, kill.

On a hybrid host the v1 controllers enforce the limits while the controller-less v2 tree tracks the
job (cgroup.kill, cgroup.events, cpu.stat). Job cgroups are made beneath the caller's own cgroup in
each hierarchy, under a folder named after the project, and removed when the job ends.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field

from ..spec import Limits, SpecError, Usage

PROJECT_DIR = "jupyter-worker"
EXECUTOR_LEAF = "jupyter-worker-executor"
_PERIOD_US = 100_000
_V1_CONTROLLERS = {"memory", "cpu", "cpuacct", "pids", "blkio", "freezer", "cpuset"}
_V2_CONTROLLERS = ("memory", "cpu", "pids", "io", "cpuset")


class CgroupError(SpecError):
    """A limit or a cgroup operation this host cannot give; the job is refused."""


@dataclass
class Hierarchy:
    mountpoint: str
    version: int
    controllers: frozenset[str]
    own: str

    @property
    def own_dir(self) -> str:
        return os.path.join(self.mountpoint, self.own.lstrip("/"))


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


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
                host.v2 = Hierarchy(mountpoint, 2, available, path)
                continue
            names = frozenset(o for o in options.split(",") if o in _V1_CONTROLLERS)
            if not names or names not in own:
                continue
            hierarchy = Hierarchy(mountpoint, 1, names, _relative(own[names], mount_root))
            for name in names:
                host.v1.setdefault(name, hierarchy)
        return host

    @property
    def mode(self) -> str:
        if self.v2 and self.v1:
            return "hybrid"
        return "v2" if self.v2 else ("v1" if self.v1 else "none")

    def backend(self, controller: str) -> Hierarchy | None:
        """The hierarchy that enforces a controller: v2 where it is available there, else v1."""
        v1_name = "blkio" if controller == "io" else controller
        if self.v2 and controller in self.v2.controllers:
            return self.v2
        return self.v1.get(v1_name)

    @property
    def uses_v2(self) -> bool:
        """Whether jobs get a v2 cgroup: on v2 hosts, and on hybrid hosts without a v1 freezer.

        Joining a v2 cgroup takes the kernel's global threadgroup lock and waits for an RCU grace
        period (5-15 ms here); v1 cgroups can be joined without it, so a hybrid host with the v1
        freezer tracks and kills jobs through v1 and starts them faster.
        """
        return self.v2 is not None and (not self.v1 or "freezer" not in self.v1)

    def can_kill(self) -> str | None:
        """How this host kills a whole job tree, or None if it cannot."""
        if self.uses_v2:
            return "cgroup.kill" if kernel_at_least(5, 14) else "cgroup.freeze"
        if "freezer" in self.v1:
            return "freezer"
        return None

    def refusals(self, limits: Limits, devices_error: str | None = None) -> list[str]:
        """Every requested limit this host cannot enforce, each with its reason."""
        wanted = {
            "memory": limits.memory_mb,
            "cpu": limits.cpu_percent,
            "pids": limits.pids,
            "io": limits.io_bps,
            "cpuset": limits.cpuset,
        }
        why = self.problem or f"cgroup {self.mode}; see `jupyter-worker doctor`"
        problems = [
            f"{name} limit: the {name} controller is not available under {self.root} ({why})"
            for name, value in wanted.items()
            if value is not None and self.backend(name) is None
        ]
        if limits.memory_mb is not None and self.backend("memory") and not self._swap_excluded():
            problems.append("memory limit: swap is on and this host cannot exclude it from the job")
        if limits.io_bps is not None and devices_error:
            problems.append(f"I/O limit: {devices_error}")
        if self.can_kill() is None:
            problems.append("no way to kill a whole job tree (needs cgroup v2 or the v1 freezer)")
        return problems

    def _swap_excluded(self) -> bool:
        if not swap_in_use():
            return True
        memory = self.backend("memory")
        name = "memory.swap.max" if memory is self.v2 else "memory.memsw.limit_in_bytes"
        return memory is not None and os.path.exists(os.path.join(memory.own_dir, name))

    def create(self, name: str) -> JobCgroup:
        """Make a job's cgroups, before its limits are known (JobCgroup.apply sets them later)."""
        problems = self.refusals(Limits())
        if problems:
            raise CgroupError("; ".join(problems))
        dirs: dict[str, str] = {}
        try:
            for hierarchy in self._hierarchies():
                base = os.path.join(hierarchy.own_dir, PROJECT_DIR)
                dirs[hierarchy.mountpoint] = _make_child(hierarchy, base, name, self)
        except OSError as exc:
            JobCgroup(self, dirs).remove()
            raise CgroupError(f"cgroup setup failed: {exc}") from exc
        return JobCgroup(self, dirs)

    def _hierarchies(self) -> list[Hierarchy]:
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
        wanted = [c for c in _V2_CONTROLLERS if c in self.v2.controllers]
        if not wanted:
            return
        control = os.path.join(self.v2.own_dir, "cgroup.subtree_control")
        if set(wanted) <= set(_read(control).split()):
            return
        try:
            _write(control, " ".join("+" + c for c in wanted))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            self._move_own_processes_to_leaf()
            _write(control, " ".join("+" + c for c in wanted))

    def find_job(self, name: str) -> JobCgroup | None:
        """The cgroups of a job by its name, where any are left."""
        dirs = {}
        for hierarchy in self._hierarchies():
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
        present = {int(p) for p in _read(os.path.join(self.v2.own_dir, "cgroup.procs")).split()}
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


def _make_child(hierarchy: Hierarchy, base: str, name: str, host: CgroupHost) -> str:
    """mkdir base/name, remaking base if a finishing job removed it meanwhile."""
    path = os.path.join(base, name)
    for _ in range(5):
        try:
            os.makedirs(base, exist_ok=True)
            if hierarchy.version == 2:
                _enable_in(base, host)
            elif "cpuset" in hierarchy.controllers:
                _copy_cpuset(os.path.dirname(base), base)
            os.mkdir(path)
            if hierarchy.version == 1 and "cpuset" in hierarchy.controllers:
                _copy_cpuset(base, path)
            return path
        except FileNotFoundError:
            continue
    raise CgroupError(f"could not create {path}")


def _enable_in(base: str, host: CgroupHost) -> None:
    assert host.v2 is not None
    wanted = [c for c in _V2_CONTROLLERS if c in host.v2.controllers]
    if wanted and not set(wanted) <= set(_read(os.path.join(base, "cgroup.subtree_control")).split()):
        _write(os.path.join(base, "cgroup.subtree_control"), " ".join("+" + c for c in wanted))


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

    def _dir(self, controller: str) -> tuple[Hierarchy, str] | None:
        hierarchy = self.host.backend(controller)
        if hierarchy is None or hierarchy.mountpoint not in self.dirs:
            return None
        return hierarchy, self.dirs[hierarchy.mountpoint]

    def _enforcing(self, controller: str) -> tuple[Hierarchy, str]:
        found = self._dir(controller)
        if found is None:
            raise CgroupError(f"{controller} limit: no {controller} cgroup for this job")
        return found

    @property
    def tracking_dir(self) -> str:
        if self.host.v2 and self.host.v2.mountpoint in self.dirs:
            return self.dirs[self.host.v2.mountpoint]
        return self.dirs[self.host.v1["freezer"].mountpoint]

    def add_to_v2(self, pid: int) -> None:
        """Move a process into the job's v2 cgroup; its children are born inside.

        Writing cgroup.procs takes the kernel's global threadgroup lock, which waits for an RCU
        grace period (milliseconds), so the supervisor does it while the init builds the root.
        """
        if self.host.v2 and self.host.v2.mountpoint in self.dirs:
            _write(os.path.join(self.dirs[self.host.v2.mountpoint], "cgroup.procs"), str(pid))

    def join_v1(self) -> None:
        """Move the calling single-threaded process into the job's v1 cgroups.

        '0' written to a v1 tasks file moves the writer's own thread without the kernel's global
        threadgroup lock, which makes joining cheap; for a single-threaded init, the thread is the
        whole process.
        """
        for mountpoint, path in self.dirs.items():
            if self.host.v2 is None or mountpoint != self.host.v2.mountpoint:
                _write(os.path.join(path, "tasks"), "0")

    def apply(self, limits: Limits, io_devices: list[str]) -> None:
        if limits.memory_mb is not None:
            self._limit_memory(limits.memory_mb << 20)
        if limits.cpu_percent is not None:
            self._limit_cpu(limits.cpu_percent * _PERIOD_US // 100)
        if limits.pids is not None:
            _write(os.path.join(self._enforcing("pids")[1], "pids.max"), str(limits.pids + 1))
        if limits.io_bps is not None:
            self._limit_io(limits.io_bps, io_devices)
        if limits.cpuset is not None:
            _write(os.path.join(self._enforcing("cpuset")[1], "cpuset.cpus"), limits.cpuset)

    def _limit_memory(self, limit: int) -> None:
        hierarchy, path = self._enforcing("memory")
        if hierarchy.version == 2:
            _write(os.path.join(path, "memory.max"), str(limit))
            if os.path.exists(os.path.join(path, "memory.swap.max")):
                _write(os.path.join(path, "memory.swap.max"), "0")
            return
        _write(os.path.join(path, "memory.limit_in_bytes"), str(limit))
        if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
            _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(limit))
        _write(os.path.join(path, "memory.swappiness"), "0")

    def _limit_cpu(self, quota: int) -> None:
        hierarchy, path = self._enforcing("cpu")
        quota = max(quota, 1000)
        if hierarchy.version == 2:
            _write(os.path.join(path, "cpu.max"), f"{quota} {_PERIOD_US}")
            return
        _write(os.path.join(path, "cpu.cfs_period_us"), str(_PERIOD_US))
        _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota))

    def _limit_io(self, bps: int, devices: list[str]) -> None:
        hierarchy, path = self._enforcing("io")
        for device in devices:
            if hierarchy.version == 2:
                _write(os.path.join(path, "io.max"), f"{device} rbps={bps} wbps={bps}")
            else:
                _write(os.path.join(path, "blkio.throttle.read_bps_device"), f"{device} {bps}")
                _write(os.path.join(path, "blkio.throttle.write_bps_device"), f"{device} {bps}")

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in _read(os.path.join(self.tracking_dir, "cgroup.procs")).split()]
        except OSError:
            return []

    def populated(self) -> bool:
        if self.host.v2 and self.host.v2.mountpoint in self.dirs:
            events = _keyed(os.path.join(self.tracking_dir, "cgroup.events"))
            return events.get("populated", 0) == 1
        return bool(self.pids())

    def kill(self) -> None:
        """SIGKILL every process in the job, forks in flight included, and wait until it is empty."""
        if not self.populated():
            return
        kill_file = os.path.join(self.tracking_dir, "cgroup.kill")
        if os.path.exists(kill_file):
            _write(kill_file, "1")
        else:
            self._freeze_and_kill(self.host.can_kill())
        deadline = time.monotonic() + 10
        while self.populated() and time.monotonic() < deadline:
            time.sleep(0.002)

    def _freeze_and_kill(self, how: str | None) -> None:
        state = os.path.join(self.tracking_dir, "cgroup.freeze" if how == "cgroup.freeze" else "freezer.state")
        frozen, thawed = ("1", "0") if how == "cgroup.freeze" else ("FROZEN", "THAWED")
        _write(state, frozen)
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        _write(state, thawed)

    def signal_all(self, signum: int, spare: int | None = None) -> None:
        for pid in self.pids():
            if pid != spare:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    def oom_kills(self) -> int:
        found = self._dir("memory")
        if found is None:
            return 0
        hierarchy, path = found
        name = "memory.events" if hierarchy.version == 2 else "memory.oom_control"
        return _keyed(os.path.join(path, name)).get("oom_kill", 0)

    def usage(self) -> Usage:
        usage = Usage(oom_kills=self.oom_kills())
        usage.cpu_seconds = self._cpu_seconds()
        self._memory_into(usage)
        self._io_into(usage)
        found = self._dir("pids")
        if found:
            current = _int_file(os.path.join(found[1], "pids.current")) or 0
            peak = _int_file(os.path.join(found[1], "pids.peak"))
            usage.pids = max(current - 1, 0)
            self._pids_peak = max(self._pids_peak, (peak if peak is not None else current) - 1)
            usage.pids_peak = self._pids_peak
        return usage

    def _cpu_seconds(self) -> float:
        if self.host.v2 and self.host.v2.mountpoint in self.dirs:
            stat = _keyed(os.path.join(self.dirs[self.host.v2.mountpoint], "cpu.stat"))
            return stat.get("usage_usec", 0) / 1e6
        found = self.host.v1.get("cpuacct")
        if found and found.mountpoint in self.dirs:
            return (_int_file(os.path.join(self.dirs[found.mountpoint], "cpuacct.usage")) or 0) / 1e9
        return 0.0

    def _memory_into(self, usage: Usage) -> None:
        found = self._dir("memory")
        if not found:
            return
        hierarchy, path = found
        if hierarchy.version == 2:
            usage.memory_bytes = _int_file(os.path.join(path, "memory.current")) or 0
            usage.memory_peak_bytes = _int_file(os.path.join(path, "memory.peak")) or usage.memory_bytes
        else:
            usage.memory_bytes = _int_file(os.path.join(path, "memory.usage_in_bytes")) or 0
            usage.memory_peak_bytes = _int_file(os.path.join(path, "memory.max_usage_in_bytes")) or 0

    def _io_into(self, usage: Usage) -> None:
        found = self._dir("io")
        if not found:
            return
        hierarchy, path = found
        try:
            if hierarchy.version == 2:
                for line in _read(os.path.join(path, "io.stat")).splitlines():
                    stats = dict(part.split("=") for part in line.split()[1:])
                    usage.io_read_bytes += int(stats.get("rbytes", 0))
                    usage.io_write_bytes += int(stats.get("wbytes", 0))
                return
            for line in _read(os.path.join(path, "blkio.throttle.io_service_bytes")).splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1] == "Read":
                    usage.io_read_bytes += int(parts[2])
                elif len(parts) == 3 and parts[1] == "Write":
                    usage.io_write_bytes += int(parts[2])
        except OSError:
            pass

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
