"""Which finished jobs go: those older than retention_days, then the oldest while the jobs kept
take more than retention_max_bytes. Running and queued jobs are never candidates."""

from __future__ import annotations

from collections.abc import Callable

RETAIN_EVERY_S = 60.0
DAY_S = 86400


def expired(
    finished: list[tuple[str, float]], size_of: Callable[[str], int], now: float, days: float, max_bytes: int
) -> list[str]:
    """The ids to delete among finished jobs given as (id, finished_at), oldest first; days 0 keeps
    any age."""
    keep_after = now - days * DAY_S if days else None
    sizes = {job_id: size_of(job_id) for job_id, _ in finished}
    total = sum(sizes.values())
    doomed = []
    for job_id, finished_at in finished:
        too_old = keep_after is not None and finished_at < keep_after
        if too_old or total > max_bytes:
            doomed.append(job_id)
            total -= sizes[job_id]
    return doomed
