"""Why a queued job waits, in words its owner reads ("4 of 4 running slots in use"), and its place.

The scheduler (service.Executor._schedule_once) says, for each job it could not start, which cap held
it back; `Waits` numbers the jobs still waiting in the order they would be started (oldest first, as
the scheduler goes), so position 1 is the next to start once what holds it back is gone.
"""

from __future__ import annotations

from typing import Any


def slots_full(running: int, cap: int) -> str:
    """The executor's own cap on jobs at once (Policy.max_concurrent_jobs)."""
    return f"{running} of {cap} running slots in use"


def own_cap(running: int) -> str:
    """The owner's cap (Policy.max_jobs_per_user or their user_limits/group_limits entry)."""
    return f"you have {running} job{'' if running == 1 else 's'} running, your maximum"


def disk_held(wanted_mb: int, usable: int) -> str:
    """Its disk limit does not fit beside what the running jobs' disk limits hold."""
    return (
        f"waiting for disk room: its {wanted_mb} MiB disk limit does not fit beside the running jobs' "
        f"({usable >> 20} MiB free beyond the reserve)"
    )


def numbered(reasons: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """(job id, reason) in the scheduler's order -> each job's {"position", "reason"}."""
    return {job_id: {"position": index, "reason": reason} for index, (job_id, reason) in enumerate(reasons, 1)}
