"""Where a job runs, and how the executor follows it while it does.

This is the seam between the job's state machine (service.Executor) and the place a job runs. A
`Backend` starts a job and, after a restart of the executor, attaches to it again; it reports
through `JobEvents`: the job's usage now and then, and its end (`exited` with an outcome, or
`lost` when nobody can tell how it ended). The executor knows nothing else of where the job is:
the local backend (executor/local.py) runs it in the sandbox engine on this host; a batch
scheduler would be another backend.

`Supervision` keeps the jobs that run: their handles, their latest usage (persisted about every
METRICS_FLUSH_S), and who waits for news of them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..sandbox import LaunchSpec
from ..spec import Outcome, Reason, Usage
from .folders import JobFolder
from .store import JobStore

METRICS_FLUSH_S = 2.0


@dataclass(frozen=True)
class Launch:
    """A job as a backend gets it: its id, the LaunchSpec built when it was submitted, its folder
    (where its log and result are kept, whichever backend runs it)."""

    id: str
    spec: LaunchSpec
    folder: JobFolder


class StartError(Exception):
    """A backend could not start a job; the message is recorded as the job's error."""


class JobEvents(Protocol):
    """What a backend reports of a job it started or attached to; after exited or lost, nothing more."""

    def metrics(self, job_id: str, usage: Usage) -> None: ...

    def exited(self, job_id: str, outcome: Outcome) -> None: ...

    def lost(self, job_id: str, why: str) -> None: ...


class JobHandle(abc.ABC):
    """A job a backend runs, as long as the executor follows it."""

    @abc.abstractmethod
    def stop(self, grace_s: float | None) -> None:
        """Ask the job to end: SIGTERM, then after the grace period (None: the job's own) SIGKILL.
        The end comes later, as an event."""

    @abc.abstractmethod
    def detach(self) -> None:
        """Stop following the job, which goes on (it outlives the executor); no more events."""


class Backend(abc.ABC):
    """A place where jobs run."""

    @abc.abstractmethod
    def start(self, launch: Launch, events: JobEvents) -> JobHandle:
        """Start the job; StartError (or a WorkerError) if it cannot be."""

    @abc.abstractmethod
    def attach(self, launch: Launch, events: JobEvents) -> JobHandle | None:
        """Follow a job started before the executor restarted. None if it no longer runs, once
        events has been told how it ended (exited, or lost)."""


@dataclass
class _Live:
    handle: JobHandle
    usage: Usage | None = None
    dirty: bool = False
    waiters: set[asyncio.Event] = field(default_factory=set)

    def wake(self) -> None:
        for waiter in self.waiters:
            waiter.set()


class Supervision:
    """The running jobs the executor follows; each one's end goes to on_end(job_id, outcome)."""

    def __init__(self, backend: Backend, store: JobStore, on_end: Callable[[str, Outcome], None]):
        self.backend = backend
        self.store = store
        self.on_end = on_end
        self.live: dict[str, _Live] = {}

    def start(self, launch: Launch) -> None:
        self.live[launch.id] = _Live(self.backend.start(launch, self))

    def attach(self, launch: Launch) -> None:
        handle = self.backend.attach(launch, self)
        if handle is not None:
            self.live[launch.id] = _Live(handle)

    def stop(self, job_id: str, grace_s: float | None) -> None:
        live = self.live.get(job_id)
        if live is not None:
            live.handle.stop(grace_s)

    def usage(self, job_id: str) -> dict[str, Any]:
        """The job's latest usage while it runs ({} before its first report and once it ended)."""
        live = self.live.get(job_id)
        return live.usage.to_dict() if live is not None and live.usage is not None else {}

    @contextlib.contextmanager
    def news(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job reports and when it ends (never, if it does not run)."""
        event = asyncio.Event()
        live = self.live.get(job_id)
        if live is not None:
            live.waiters.add(event)
        try:
            yield event
        finally:
            if live is not None:
                live.waiters.discard(event)

    # ---- JobEvents, from the backends

    def metrics(self, job_id: str, usage: Usage) -> None:
        live = self.live.get(job_id)
        if live is not None:
            live.usage, live.dirty = usage, True
            live.wake()

    def exited(self, job_id: str, outcome: Outcome) -> None:
        self._forget(job_id)
        self.on_end(job_id, outcome)

    def lost(self, job_id: str, why: str) -> None:
        self._forget(job_id)
        self.on_end(job_id, Outcome(Reason.LOST, error=why))

    def _forget(self, job_id: str) -> None:
        live = self.live.pop(job_id, None)
        if live is not None:
            live.handle.detach()
            live.wake()

    # ---- metrics

    def flush(self) -> None:
        """Persist the latest usage of the running jobs that reported since the last flush."""
        records = []
        for job_id, live in self.live.items():
            if live.dirty and live.usage is not None:
                record = self.store.get(job_id)
                if record is not None and not record.finished:
                    record.metrics = live.usage.to_dict()
                    records.append(record)
            live.dirty = False
        if records:
            self.store.save_many(records)

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.flush()

    def close(self) -> None:
        """The executor stops: the jobs go on; their last usage is kept."""
        self.flush()
        for job_id in list(self.live):
            self._forget(job_id)
