"""A job's metric history: one sample a second while it runs, bounded, kept with the job.

The supervisor reports each running job's usage about once a second (supervision.JobEvents.metrics);
`Series` turns those reports into points {t, cpu_percent, memory_bytes, pids} and keeps at most
MAX_POINTS of them: when full, neighbours are merged in pairs and each later point covers twice
as many seconds (its `span`), so a job of any length is drawn whole at an even resolution. A merged
point starts at its first second, averages CPU over its seconds and keeps the highest memory and
process count (a chart of memory against its limit shows the peaks, never smooths them away).

New points are kept in memory until they are appended, every PERSIST_EVERY_S, to the file `metrics`
in the job's folder (root's, 0700: executor/folders.py), one line a point; the history is read
back from it when asked for, and at a halving, after which the file is rewritten whole (rare: log2
of the job's length over MAX_POINTS times). So a running job costs the executor a few points of
memory, and the history outlives the job and a restart of the executor, and goes with the job's
folder when it is deleted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from ..spec import Usage

MAX_POINTS = 1200
PERSIST_EVERY_S = 10.0
FILE_NAME = "metrics"
_MAX_FILE_BYTES = 4 << 20  # a history file beyond this is not ours to read (a point is ~40 bytes)


@dataclass
class Point:
    """Seconds from t on (span of them): CPU in percent of one core, memory and processes at most."""

    t: float
    cpu_percent: float
    memory_bytes: int
    pids: int
    span: int = 1

    def merged(self, later: Point) -> Point:
        span = self.span + later.span
        cpu = (self.cpu_percent * self.span + later.cpu_percent * later.span) / span
        return Point(self.t, cpu, max(self.memory_bytes, later.memory_bytes), max(self.pids, later.pids), span)

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "cpu_percent": round(self.cpu_percent, 2),
            "memory_bytes": self.memory_bytes,
            "pids": self.pids,
        }

    def line(self) -> str:
        return f"{self.t:.3f} {self.cpu_percent:.2f} {self.memory_bytes} {self.pids} {self.span}\n"

    @classmethod
    def parse(cls, line: str) -> Point | None:
        try:
            t, cpu, memory, pids, span = line.split()
            return cls(float(t), float(cpu), int(memory), int(pids), max(1, int(span)))
        except ValueError:  # a line cut short by a crash while it was written
            return None


def halved(points: list[Point]) -> list[Point]:
    """Neighbours merged in pairs (an odd last point stays as it is)."""
    merged = [points[i].merged(points[i + 1]) for i in range(0, len(points) - 1, 2)]
    if len(points) % 2:
        merged.append(points[-1])
    return merged


def bounded(points: list[Point], limit: int = MAX_POINTS) -> list[Point]:
    while len(points) > limit:
        points = halved(points)
    return points


class Series:
    """One running job's history: in memory only the points its file does not hold yet (a job
    costs the executor a few points however long it runs), and the seconds of the next point."""

    def __init__(self, path: str, kept: list[Point] | None = None):
        self.path = path
        kept = kept or []
        self.count = len(kept)  # points in all: the file's and the fresh ones
        # each point covers `stride` reports; reports are gathered in `pending` until it is whole
        self.stride = max((p.span for p in kept), default=1)
        self.fresh: list[Point] = []  # whole points the file does not hold yet
        self.pending: Point | None = None
        self.last_persist = time.monotonic()
        self._cpu: tuple[float, float] | None = None  # (cpu_seconds, wall_seconds) of the last report

    @classmethod
    def resume(cls, folder_dir: str) -> Series:
        """The series of a job followed again after a restart: its file's points go on."""
        path = os.path.join(folder_dir, FILE_NAME)
        return cls(path, load(path))

    def add(self, now: float, usage: Usage) -> None:
        """A usage report: CPU over the time since the last one (the first: since the job began)."""
        cpu_s, wall_s = usage.cpu_seconds, usage.wall_seconds
        last_cpu, last_wall = self._cpu or (0.0, 0.0)
        self._cpu = (cpu_s, wall_s)
        elapsed = wall_s - last_wall
        cpu = max(0.0, 100.0 * (cpu_s - last_cpu) / elapsed) if elapsed > 0 else 0.0
        point = Point(now, cpu, usage.memory_bytes, usage.pids)
        self.pending = point if self.pending is None else self.pending.merged(point)
        if self.pending.span >= self.stride:
            self.fresh.append(self.pending)
            self.pending, self.count = None, self.count + 1
            if self.count >= MAX_POINTS:
                self._halve()

    def _halve(self) -> None:
        """The bound reached: the whole history merged in pairs, its file written anew (a few
        times in a job's life: at 1200 points, then at 2400 s, 4800 s... of it)."""
        points = halved(self.whole())
        self.stride *= 2
        self.count, self.fresh = len(points), []
        try:
            _replace(self.path, "".join(point.line() for point in points))
        except OSError:  # not written: the history is lost (as in persist), never kept in memory
            self.count = 0

    def whole(self) -> list[Point]:
        """Every whole point: the file's, then the fresh ones."""
        kept = load(self.path) if self.count > len(self.fresh) else []
        return [*kept, *self.fresh]

    def samples(self) -> list[dict[str, Any]]:
        """Every point, the seconds not yet whole as the last one."""
        shown = self.whole() if self.pending is None else [*self.whole(), self.pending]
        return [point.to_dict() for point in shown]

    def persist(self, final: bool = False) -> None:
        """Append the fresh points to the file (at the job's end, the seconds not yet whole too).
        Never raises: a history that cannot be kept is a history lost, not a job or an executor
        failing; what could not be written is dropped, so memory stays bounded."""
        if final and self.pending is not None:
            self.fresh.append(self.pending)
            self.pending, self.count = None, self.count + 1
        self.last_persist = time.monotonic()
        if not self.fresh:
            return
        text = "".join(point.line() for point in self.fresh)
        try:
            _append(self.path, text)
        except OSError:
            self.count -= len(self.fresh)
        self.fresh = []

    def due(self, now: float) -> bool:
        return now - self.last_persist >= PERSIST_EVERY_S


def load(path: str) -> list[Point]:
    """A job's points as its file holds them ([] when there is none), at most MAX_POINTS."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd) as f:
        text = f.read(_MAX_FILE_BYTES)
    return bounded([point for line in text.splitlines() if (point := Point.parse(line)) is not None])


def reply(points: list[dict[str, Any]], memory_mb: int | None, cpu_percent: float | None) -> dict[str, Any]:
    """The `metrics` operation's answer (docs/protocol.md)."""
    return {
        "samples": points,
        "memory_limit_bytes": memory_mb << 20 if memory_mb is not None else None,
        "cpu_limit_percent": float(cpu_percent) if cpu_percent is not None else None,
    }


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _replace(path: str, text: str) -> None:
    temporary = path + ".new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)
