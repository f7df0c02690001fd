"""What this host can give a job, whatever the policy says: its memory, its CPU time, its CPUs.

A job's cgroups are made beneath the executor's own, so the least of the host's RAM (MemTotal) and
the memory limits of the executor's cgroup and its ancestors bounds what a job can have; likewise
the CPUs the executor may run on (its affinity) and any CPU quota above it (cpu.max, or
cpu.cfs_quota_us on cgroup v1). A request above these is refused `invalid`, naming the host's
figure (a limit the host cannot reach is no limit: the job would be killed or starved long before
it, and the user would have been told nothing); a default above them is lowered to them.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from ..limits import BY_FIELD, Limits
from ..sandbox.cgroups import CgroupHost, Hierarchy

_NO_LIMIT = 1 << 62  # cgroup v1 says "no memory limit" with a number near 2**63


@dataclass(frozen=True)
class Capacity:
    """The host's figures (None where unknown): memory in bytes, CPU in percent of one core, CPUs."""

    memory_bytes: int | None
    cpu_percent: float | None
    cpus: frozenset[int] | None

    @property
    def memory_mb(self) -> int | None:
        return self.memory_bytes >> 20 if self.memory_bytes is not None else None

    def check(self, asked: Limits) -> None:
        """Refuse (invalid) a request for more than the host has."""
        if asked.memory_mb is not None and self.memory_mb is not None and asked.memory_mb > self.memory_mb:
            shown = BY_FIELD["memory_mb"].show(asked.memory_mb)
            raise SpecError(f"memory limit: {shown} is more than this host has ({gib(self.memory_bytes or 0)})")
        if asked.cpu_percent is not None and self.cpu_percent is not None and asked.cpu_percent > self.cpu_percent:
            raise SpecError(
                f"CPU limit: {asked.cpu_percent:g} % is more than this host has "
                f"({self.cpu_percent:g} %: {cores(self.cpu_percent)})"
            )
        if asked.cpuset is not None and self.cpus is not None:
            missing = first_missing(asked.cpuset, self.cpus)
            if missing is not None:
                raise SpecError(f"cpuset: CPU {missing} is not one this host has (it has {ranges(self.cpus)})")

    def lowered(self, limits: Limits) -> Limits:
        """Limits that came from a default or a maximum, lowered to what the host has."""
        changes: dict[str, Any] = {}
        if limits.memory_mb is not None and self.memory_mb is not None and limits.memory_mb > self.memory_mb:
            changes["memory_mb"] = self.memory_mb
        if limits.cpu_percent is not None and self.cpu_percent is not None and limits.cpu_percent > self.cpu_percent:
            changes["cpu_percent"] = int(self.cpu_percent)
        return Limits(**{**limits.to_dict(), **changes}) if changes else limits

    def to_dict(self) -> dict[str, Any]:
        """As capabilities shows it."""
        return {
            "memory_bytes": self.memory_bytes,
            "memory_mb": self.memory_mb,
            "cpu_percent": self.cpu_percent,
            "cpus": ranges(self.cpus) if self.cpus is not None else None,
        }


@functools.cache
def host() -> Capacity:
    """This host's figures as the executor's process sees them, read once."""
    return read()


def read(cgroup_root: str = "/sys/fs/cgroup") -> Capacity:
    memory = _mem_total()
    cpus: frozenset[int] | None = None
    with contextlib.suppress(OSError):
        cpus = frozenset(os.sched_getaffinity(0))
    cpu_percent = 100.0 * len(cpus) if cpus else None
    try:
        cgroups = CgroupHost.detect(cgroup_root)
    except (OSError, ValueError):
        cgroups = None
    if cgroups is not None:
        if (limit := _least(cgroups.backend("memory"), ("memory.max", "memory.limit_in_bytes"))) is not None:
            memory = limit if memory is None else min(memory, limit)
        if (quota := _cpu_quota(cgroups.backend("cpu"))) is not None:
            cpu_percent = quota if cpu_percent is None else min(cpu_percent, quota)
    return Capacity(memory, cpu_percent, cpus)


def _mem_total() -> int | None:
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/meminfo") as f:
        line = next(line for line in f if line.startswith("MemTotal:"))
        return int(line.split()[1]) * 1024
    return None


def _ancestors(hierarchy: Hierarchy) -> list[str]:
    """The executor's cgroup folder and those above it, up to the hierarchy's root."""
    folders, folder = [], hierarchy.own_dir
    root = os.path.normpath(hierarchy.mountpoint)
    while True:
        folders.append(folder)
        if os.path.normpath(folder) == root or len(folder) <= len(root):
            return folders
        folder = os.path.dirname(folder)


def _read_number(path: str) -> int | None:
    with contextlib.suppress(OSError, ValueError), open(path) as f:
        text = f.read().strip()
        return None if text == "max" else int(text)
    return None


def _least(hierarchy: Hierarchy | None, names: tuple[str, ...]) -> int | None:
    """The lowest memory limit set on the executor's cgroup or above it (None: none is)."""
    if hierarchy is None:
        return None
    found = [
        value
        for folder in _ancestors(hierarchy)
        for name in names
        if (value := _read_number(os.path.join(folder, name))) is not None and 0 < value < _NO_LIMIT
    ]
    return min(found, default=None)


def _cpu_quota(hierarchy: Hierarchy | None) -> float | None:
    """The lowest CPU quota on the executor's cgroup or above it, in percent of one core."""
    if hierarchy is None:
        return None
    found = []
    for folder in _ancestors(hierarchy):
        with contextlib.suppress(OSError, ValueError), open(os.path.join(folder, "cpu.max")) as f:
            quota, period = f.read().split()
            if quota != "max" and int(period) > 0:
                found.append(100.0 * int(quota) / int(period))
        quota_us = _read_number(os.path.join(folder, "cpu.cfs_quota_us"))
        period_us = _read_number(os.path.join(folder, "cpu.cfs_period_us"))
        if quota_us is not None and quota_us > 0 and period_us:
            found.append(100.0 * quota_us / period_us)
    return min(found, default=None)


def first_missing(text: str, cpus: frozenset[int]) -> int | None:
    """The first CPU a list ('0-2,5', syntax already checked by limits.py) names that is not in cpus.
    A range is walked at most len(cpus) + 1 steps: '0-4000000000' costs no more than '0-3'."""
    for part in text.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        for cpu in range(first, min(last, first + len(cpus)) + 1):
            if cpu not in cpus:
                return cpu
    return None


def ranges(cpus: frozenset[int]) -> str:
    """{0, 1, 2, 5} -> '0-2,5'."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


def gib(size: int) -> str:
    """Bytes in GiB (MiB below one GiB), rounded down as a promise of what there is."""
    if size >= 1 << 30:
        return f"{size >> 30} GiB"
    return f"{size >> 20} MiB"


def cores(percent: float) -> str:
    count = percent / 100
    return f"{count:g} core{'' if count == 1 else 's'}"
