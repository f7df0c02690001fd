"""The state folder's disk: which finished jobs go, and whether a job's disk limit fits.

Which finished jobs go: those older than retention_days; then, user by user, the oldest of a user
whose finished jobs keep more than max_kept_disk_per_user; then the oldest while all finished jobs
keep more than retention_max_bytes. Running and queued jobs are never candidates. Sizes are the
blocks a job's folder takes (its sparse /work image counts what was written to it), measured off
the event loop.

Whether a job's disk fits: its disk limit must fit in the free space of the state folder's
filesystem, less the reserve, less what the running jobs may still write to their own images
(their limit less what their image already takes), so running jobs that all fill their /work do
not fill the host's disk.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence

RETAIN_EVERY_S = 60.0
DAY_S = 86400


def expired(
    finished: Sequence[tuple],
    size_of: Callable[[str], int],
    now: float,
    *,
    days: float,
    max_bytes: int,
    per_user_bytes: int = 0,
) -> list[str]:
    """The ids to delete among finished jobs given as (id, finished_at[, owner]), oldest first;
    days 0 keeps any age, per_user_bytes 0 sets no per-user quota."""
    keep_after = now - days * DAY_S if days else None
    sizes = {entry[0]: size_of(entry[0]) for entry in finished}
    owners = {entry[0]: entry[2] if len(entry) > 2 else None for entry in finished}
    per_user: dict[object, int] = {}
    for job_id, owner in owners.items():
        per_user[owner] = per_user.get(owner, 0) + sizes[job_id]
    total = sum(sizes.values())
    doomed = []
    for entry in finished:
        job_id, finished_at, owner = entry[0], entry[1], owners[entry[0]]
        too_old = keep_after is not None and finished_at < keep_after
        over_quota = bool(per_user_bytes) and owner is not None and per_user[owner] > per_user_bytes
        if too_old or over_quota or total > max_bytes:
            doomed.append(job_id)
            total -= sizes[job_id]
            per_user[owner] -= sizes[job_id]
    return doomed


class Room(str, enum.Enum):
    """Whether a job's disk fits on the state folder's filesystem now."""

    FITS = "fits"
    WAIT = "wait"  # not now: running jobs hold room that their end gives back
    NEVER = "never"  # not even with every running job gone


def room(wanted: int, free: int, reserve: int, running: Sequence[tuple[int, int]]) -> Room:
    """wanted: the job's disk limit in bytes; free: the filesystem's free bytes now; running: each
    running job's (limit, bytes its image takes already), in bytes."""
    held = sum(max(0, limit - taken) for limit, taken in running)
    if wanted > free - reserve:  # a running job's end gives back what it held, not what it wrote
        return Room.NEVER
    return Room.FITS if wanted <= free - reserve - held else Room.WAIT


def free_bytes(path: str) -> int:
    """Bytes free for ordinary users on the filesystem of path (what jobs' images may take)."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def no_room_message(wanted_mb: int, free: int, reserve: int) -> str:
    """The start error of a job whose disk can never fit."""
    usable = max(0, free - reserve) >> 20
    return (
        f"disk limit: {wanted_mb} MiB does not fit on the executor's disk "
        f"({usable} MiB free beyond its reserve); ask for less with --max-disk"
    )
