"""Where a job runs, and how the executor follows it while it does.

This is the seam between the job's state machine (service.Executor) and the place a job runs. A
`Backend` starts a job and, after a restart of the executor, attaches to it again; it reports
through `JobEvents`: the job's usage now and then, and its end (`exited` with an outcome, or
`lost` when nobody can tell how it ended). The executor knows nothing else of where the job is:
the local backend (executor/local.py) runs it in the sandbox engine on this host; a batch
scheduler would be another backend.

`Supervision` keeps the jobs that run: their handles, their latest usage (persisted about every
METRICS_FLUSH_S) and their metric history (executor/history.py: a point a second, kept in the job's
folder). `Newsroom` keeps who waits for news of which job, and wakes them when there is
some: the job's log grew (inotify, one watch per followed job shared by all its followers), its
status changed (the executor says so), its usage changed. A quiet job's followers cost nothing.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import WorkerError
from ..sandbox import LaunchSpec, libc
from ..spec import Outcome, Reason, Usage
from . import history
from .folders import JobFolder
from .store import JobStore

METRICS_FLUSH_S = 2.0
UNWATCHED_POLL_S = 1.0  # how often a follower looks at a log inotify cannot watch (watches used up)
_LOG_EVENTS = libc.IN_MODIFY | libc.IN_DELETE_SELF | libc.IN_MOVE_SELF


@dataclass(frozen=True)
class Launch:
    """A job as a backend gets it: its id, the LaunchSpec built when it was submitted (its uid and
    gid say whom it runs as, on whichever host), its folder (where its log, result and returned
    files are kept, whichever backend runs it), where on a cluster it asked to go, and its owner."""

    id: str
    spec: LaunchSpec
    folder: JobFolder
    placement: dict[str, str] = dataclasses.field(default_factory=dict)
    owner: str = ""


class StartError(Exception):
    """A backend could not start a job; the message is recorded as the job's error."""


class JobEvents(Protocol):
    """What a backend reports of a job it started or attached to; after exited or lost, nothing more."""

    def metrics(self, job_id: str, usage: Usage) -> None: ...

    def exited(self, job_id: str, outcome: Outcome) -> None: ...

    def lost(self, job_id: str, why: str) -> None: ...

    def unstarted(self, job_id: str) -> None:
        """Found after a restart: the executor stopped before the job reached where it runs, so it
        never ran; it waits to be started again."""

    def waiting(self, job_id: str, why: str, details: dict[str, str]) -> None:
        """Still waiting in the backend's own queue (a cluster's): why, in words; details (the
        cluster's id of the job) go into the record's placement."""

    def running(self, job_id: str, node: str, details: dict[str, str]) -> None:
        """It runs now, on node."""


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
    """A place where jobs run. A backend whose jobs wait in a queue of its own (a cluster's) reports
    waiting, then running; the local backend's jobs run as soon as they start."""

    name = "local"

    def describe(self) -> dict[str, Any]:
        """What capabilities and the doctor show of it (partitions a cluster offers...)."""
        return {}

    def close(self) -> None:  # noqa: B027 - most backends keep nothing beyond their jobs' handles
        """The executor stops; its jobs go on (they are attached again at the next start)."""

    @abc.abstractmethod
    def start(self, launch: Launch, events: JobEvents) -> JobHandle:
        """Start the job; StartError (or a WorkerError) if it cannot be."""

    def begin(self, launch: Launch) -> Any:
        """The blocking part of a start (files, folders, talking to a helper process), run in a
        thread off the event loop; whatever `complete` needs. StartError if the job cannot start.
        By default nothing: `complete` starts the job."""
        return None

    def complete(self, launch: Launch, begun: Any, events: JobEvents) -> JobHandle:
        """The rest of a start, on the event loop, given what `begin` returned."""
        return self.start(launch, events)

    def abandon(self, begun: Any) -> None:  # noqa: B027 - nothing to let go of by default
        """A begun start nobody completes (the executor is stopping): the job goes on without us."""

    @abc.abstractmethod
    def attach(self, launch: Launch, events: JobEvents) -> JobHandle | None:
        """Follow a job started before the executor restarted. None if it no longer runs, once
        events has been told how it ended (exited, or lost)."""


class Newsroom:
    """Followers of jobs, each an asyncio.Event set when its job has news; the log watches behind them."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self.wakeups = 0  # events set, ever: a quiet job's followers add none (tests and bench read it)
        self._fd: int | None = None
        self._watches: dict[str, int] = {}  # job id -> watch descriptor
        self._jobs: dict[int, str] = {}  # watch descriptor -> job id

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self.waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self.waiters.get(job_id, set())
            waiters.discard(event)
            if not waiters:
                self.waiters.pop(job_id, None)
                self._unwatch(job_id)

    def wake(self, job_id: str) -> None:
        for event in self.waiters.get(job_id, ()):
            if not event.is_set():
                self.wakeups += 1
                event.set()

    def watch_log(self, job_id: str, path: str) -> float | None:
        """Watch the job's log for its followers: None once watched (wait for news), else how long a
        follower may wait before it looks again (no log yet: its start is news; no watch to be had)."""
        if job_id in self._watches:
            return None
        try:
            if self._fd is None:
                self._fd = libc.inotify_init()
                asyncio.get_running_loop().add_reader(self._fd, self._readable)
            wd = libc.inotify_add_watch(self._fd, path, _LOG_EVENTS)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            logging.getLogger(__name__).warning("cannot watch %s (%s): its followers poll it", path, exc)
            return UNWATCHED_POLL_S
        self._watches[job_id], self._jobs[wd] = wd, job_id
        return None

    def _unwatch(self, job_id: str) -> None:
        wd = self._watches.pop(job_id, None)
        if wd is not None and self._fd is not None:
            self._jobs.pop(wd, None)
            with contextlib.suppress(OSError):  # already gone with its file (IN_IGNORED is on its way)
                libc.inotify_rm_watch(self._fd, wd)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 64 << 10)
        except BlockingIOError:
            return
        for wd, mask in libc.inotify_events(data):
            if mask & libc.IN_Q_OVERFLOW:  # events were dropped: everyone looks again
                for job_id in list(self.waiters):
                    self.wake(job_id)
                continue
            job_id = self._jobs.get(wd)
            if job_id is None:
                continue
            if mask & libc.IN_IGNORED:  # the log went away (the job was deleted): its watch with it
                self._jobs.pop(wd, None)
                self._watches.pop(job_id, None)
            self.wake(job_id)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        self._watches.clear()
        self._jobs.clear()


@dataclass
class _Live:
    handle: JobHandle
    series: history.Series
    usage: Usage | None = None
    dirty: bool = False


class Supervision:
    """The running jobs the executor follows; each one's end goes to on_end(job_id, outcome)."""

    def __init__(
        self,
        backends: dict[str, Backend],
        store: JobStore,
        on_end: Callable[[str, Outcome], None],
        on_progress: Callable[[str, str | None, str | None, dict[str, str]], None] | None = None,
        on_unstarted: Callable[[str], None] | None = None,
    ):
        self.backends = backends
        self.store = store
        self.on_end = on_end
        # a cluster's word on a job: (job id, node when it runs, why when it waits, details)
        self.on_progress = on_progress
        self.on_unstarted = on_unstarted
        self.live: dict[str, _Live] = {}
        self.newsroom = Newsroom()
        self._starting: dict[str, asyncio.Task] = {}  # the jobs whose start is under way
        # one thread starts jobs, in the order they were started: as before, one start at a time
        self._launcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jupyter-worker-start")

    def start(self, backend: str, launch: Launch) -> None:
        series = history.Series(os.path.join(launch.folder.dir, history.FILE_NAME))
        self.live[launch.id] = _Live(self.backends[backend].start(launch, self), series)

    def start_soon(self, backend: str, launch: Launch, failed: Callable[[str, str], None]) -> None:
        """Start the job with the blocking part of its start (Backend.begin) in a thread, so the
        event loop goes on serving; failed(job_id, why) if it cannot start. The job is live from
        now on: a stop asked meanwhile is carried out once it has started. The thread begins
        after the current callback returns, so after the caller's store writes are committed
        (a job is never running before its RUNNING is in the store)."""
        live = _Live(_Starting(), history.Series(os.path.join(launch.folder.dir, history.FILE_NAME)))
        self.live[launch.id] = live
        starting = self._start_off_loop(self.backends[backend], launch, live, failed)
        task = asyncio.get_running_loop().create_task(starting)
        self._starting[launch.id] = task
        task.add_done_callback(lambda _: self._starting.pop(launch.id, None))

    async def _start_off_loop(
        self, backend: Backend, launch: Launch, live: _Live, failed: Callable[[str, str], None]
    ) -> None:
        starting = live.handle
        try:
            begun = await asyncio.get_running_loop().run_in_executor(self._launcher, backend.begin, launch)
            if self.live.get(launch.id) is not live:  # the executor is stopping: the job runs on, attached after
                backend.abandon(begun)
                return
            self._complete(backend, launch, begun, live)
        except Exception as exc:  # whatever it is, the job ends as a start error, never stays RUNNING
            if not isinstance(exc, (StartError, WorkerError)):
                logging.getLogger(__name__).exception("starting job %s", launch.id)
            if self.live.get(launch.id) is live:
                del self.live[launch.id]
                failed(launch.id, str(exc) or type(exc).__name__)
            return
        self.newsroom.wake(launch.id)  # its log exists now: followers that found none look again
        if isinstance(starting, _Starting) and starting.stopping and self.live.get(launch.id) is live:
            live.handle.stop(starting.grace_s)

    def _complete(self, backend: Backend, launch: Launch, begun: Any, live: _Live) -> None:
        """The start's last step. Should it fail, the job begun runs on under its supervisor, so it
        is followed as after a restart (attach) rather than recorded as never started."""
        try:
            live.handle = backend.complete(launch, begun, self)
            return
        except Exception:
            logging.getLogger(__name__).exception("completing the start of job %s: attaching to it", launch.id)
        backend.abandon(begun)
        live.handle = _Detached()
        handle = backend.attach(launch, self)  # may report the job's end, which forgets it
        if handle is None:
            if self.live.get(launch.id) is live:
                del self.live[launch.id]
        elif self.live.get(launch.id) is live:
            live.handle = handle

    async def started(self, job_id: str) -> None:
        """Until the job's start under way (if any) has handed it to its backend, or failed."""
        task = self._starting.get(job_id)
        if task is not None:
            await asyncio.wait({task})  # not cancelled with the waiter: the start goes on

    async def starts_done(self) -> None:
        """Until the starts under way have begun or failed (a stop asked meanwhile reaches its job)."""
        while self._starting:
            await asyncio.wait(set(self._starting.values()))

    def attach(self, backend: str, launch: Launch) -> None:
        chosen = self.backends.get(backend)
        if chosen is None:  # a job of a backend since turned off: nobody can follow it
            self.lost(launch.id, f"the {backend} backend is not enabled in this executor any more")
            return
        # recorded live before attaching: a backend may report the job's end while attaching
        live = _Live(_Detached(), history.Series.resume(launch.folder.dir))
        self.live[launch.id] = live
        handle = chosen.attach(launch, self)
        if handle is None:
            self.live.pop(launch.id, None)
        elif launch.id in self.live:
            live.handle = handle

    def stop(self, job_id: str, grace_s: float | None) -> None:
        live = self.live.get(job_id)
        if live is not None:
            live.handle.stop(grace_s)

    def usage(self, job_id: str) -> dict[str, Any]:
        """The job's latest usage while it runs ({} before its first report and once it ended)."""
        live = self.live.get(job_id)
        return live.usage.to_dict() if live is not None and live.usage is not None else {}

    def samples(self, job_id: str) -> list[dict[str, Any]] | None:
        """A running job's metric history (None when it is not running here: read its file)."""
        live = self.live.get(job_id)
        return live.series.samples() if live is not None else None

    def news(self, job_id: str) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set whenever the job's usage changes, its log grows (once watched), its status
        changes (the executor tells the newsroom) and when it ends."""
        return self.newsroom.subscribe(job_id)

    # ---- JobEvents, from the backends

    def metrics(self, job_id: str, usage: Usage) -> None:
        live = self.live.get(job_id)
        if live is not None:
            news = live.usage is None or dataclasses.replace(live.usage, wall_seconds=usage.wall_seconds) != usage
            live.usage, live.dirty = usage, True
            live.series.add(time.time(), usage)
            if news:  # a sleeping job whose only change is the clock wakes nobody
                self.newsroom.wake(job_id)

    def exited(self, job_id: str, outcome: Outcome) -> None:
        self._forget(job_id)
        self.on_end(job_id, outcome)

    def lost(self, job_id: str, why: str) -> None:
        self._forget(job_id)
        self.on_end(job_id, Outcome(Reason.LOST, error=why))

    def unstarted(self, job_id: str) -> None:
        self.live.pop(job_id, None)
        if self.on_unstarted is not None:
            self.on_unstarted(job_id)

    def waiting(self, job_id: str, why: str, details: dict[str, str]) -> None:
        if job_id in self.live and self.on_progress is not None:
            self.on_progress(job_id, None, why, details)

    def running(self, job_id: str, node: str, details: dict[str, str]) -> None:
        if job_id in self.live and self.on_progress is not None:
            self.on_progress(job_id, node, None, details)

    def _forget(self, job_id: str) -> None:
        live = self.live.pop(job_id, None)
        if live is not None:
            live.handle.detach()
            live.series.persist(final=True)
            self.newsroom.wake(job_id)

    # ---- metrics

    def flush(self) -> None:
        """Persist the latest usage of the running jobs that reported since the last flush, and
        their metric history every history.PERSIST_EVERY_S."""
        records = []
        now = time.monotonic()
        for job_id, live in self.live.items():
            if live.series.due(now):
                live.series.persist()
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
        for backend in self.backends.values():
            backend.close()
        self.newsroom.close()
        self._launcher.shutdown(wait=False)  # a start under way finishes in its thread; its job is attached next time


class _Starting(JobHandle):
    """The handle of a job while its start is under way: a stop is kept for when it has started."""

    def __init__(self) -> None:
        self.stopping = False
        self.grace_s: float | None = None

    def stop(self, grace_s: float | None) -> None:
        self.stopping, self.grace_s = True, grace_s

    def detach(self) -> None:
        pass


class _Detached(JobHandle):
    """The handle of a job while its backend attaches to it: nothing to stop or detach yet."""

    def stop(self, grace_s: float | None) -> None:
        pass

    def detach(self) -> None:
        pass
