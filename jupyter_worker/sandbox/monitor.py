"""The monitor: one process that follows every running job of a spawner, from its start to its end.

A standby supervisor prepares a sandbox, starts its job and hands the running job over (a
`Handover`: the job's facts, and its descriptors over SCM_RIGHTS) to the spawner, which keeps the
descriptors and passes them on to its monitor; the standby then exits. So a running job costs one
small record here instead of a Python process of its own.

The monitor owns each job's deadline, metrics, stop requests, output (into its log) and outcome
(into its result file), as the per-job supervisor did; it never blocks on one job's clients. The
spawner (its keeper) holds a copy of every descriptor, so a monitor that dies (kill -9) loses
nothing: the jobs' pipes, control connections and listeners stay open, and a new monitor is given
every job again with what the old one noted of it (`Monitor._note`: a stop under way, the outcome
once decided, where the log last ended on a whole record); the job's status is only ever peeked
at, and its output taken from its pipe only once in the log, so both are there for the successor
too. A failure in the handling of one job ends that job (as lost, saying why), never the others.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import math
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..spec import MAX_STOP_GRACE_S, Outcome, Reason, Usage
from .cgroups import CgroupHost, JobCgroup
from .control import Capture, Channels
from .disk import JobDisk, open_live
from .launch import STATUS
from .launch_spec import MAX_LAUNCH_MESSAGE

METRICS_INTERVAL_S = 1.0
MAX_HANDOVER_FDS = 250  # below the kernel's SCM_MAX_FD (253) for one message


@dataclass
class Handover:
    """A running job as passed between processes: its facts (JSON) and descriptors (in `fds` order:
    the status pipe, then with capture the log, the result file, the listener and the output pipes,
    then the control connections)."""

    facts: dict[str, Any]
    fds: list[int]

    def encode(self) -> bytes:
        return json.dumps(self.facts).encode()

    @classmethod
    def decode(cls, message: bytes, fds: list[int]) -> Handover:
        return cls(json.loads(message), fds)


@dataclass
class Watched:
    """One running job, as the monitor follows it."""

    key: str  # the name of its cgroup: unique among jobs
    cgroup: JobCgroup
    init_pid: int
    init_fd: int  # a pidfd of the init, readable once it (and with it every process of the job) is gone
    status_fd: int
    started: float  # time.monotonic(), which every process on the host shares
    timeout_s: float | None
    stop_grace_s: float
    channels: Channels
    capture: Capture | None
    disk: JobDisk | None = None
    status: int | None = None  # the job's wait status, once its init has written it
    decided: Reason | None = None  # why it is being ended (stopped, timed out), once asked
    kill_at: float | None = None  # when a stop under way kills what is left
    outcome: dict | None = None  # once decided, before the result file is written
    log_whole: int = 0  # a size of the log last noted to the keeper (it ended on a whole record)

    def handover(self) -> Handover:
        """The job as a new owner takes it (see Monitor.adopt)."""
        fds = [self.init_fd, self.status_fd]
        facts: dict[str, Any] = {
            "key": self.key,
            "dirs": self.cgroup.dirs,
            "init_pid": self.init_pid,
            "started": self.started,
            "timeout_s": self.timeout_s,
            "stop_grace_s": self.stop_grace_s,
            "capture": None,
        }
        if self.capture is not None:
            log = self.capture.log
            facts["capture"] = {"log_cap": log.cap, "display_cap": log.display_cap, "cgroup": self.capture.cgroup}
            facts["log_whole"] = log.size  # nothing is being written as it is handed over
            facts["capture"]["streams"] = list(self.capture.streams.values())
            fds += [log.fd, self.capture.result_fd, *self.capture.streams]
        facts["listener"] = self.channels.listener is not None
        if self.channels.listener is not None:
            fds.append(self.channels.listener.fileno())
        facts["disk"] = None
        if self.disk is not None:  # its handle on /work, which the keeper must not hold (keeper.py)
            facts["disk"] = {"image": self.disk.image, "root": self.disk.root is not None}
            fds += [self.disk.root] if self.disk.root is not None else []
        connections = [c.fileno() for c in self.channels.connections][: MAX_HANDOVER_FDS - len(fds)]
        facts["connections"] = len(connections)
        return Handover(facts, fds + connections)

    def greeting(self) -> dict:
        """What a newly attached connection is told first."""
        return {"event": "attached", "started": True, "pid": self.init_pid}

    def fds(self) -> list[int]:
        output = self.capture.fds() if self.capture is not None else []
        status = [self.status_fd] if self.status is None else []
        return [self.init_fd, *status, *output, *self.channels.fds()]

    def close(self) -> None:
        """Every descriptor this owner holds of the job (the job itself is not touched)."""
        self.channels.close()
        for fd in (self.init_fd, self.status_fd):
            if fd >= 0:
                os.close(fd)
        self.init_fd = self.status_fd = -1
        if self.capture is not None:
            self.capture.close()


def adopt(cgroups: CgroupHost, handover: Handover) -> Watched:
    """A Watched from a handover, taking ownership of its descriptors."""
    facts, fds = handover.facts, list(handover.fds)
    init_fd, status_fd = fds.pop(0), fds.pop(0)
    capture = None
    if facts["capture"] is not None:
        options = facts["capture"]
        log_fd, result_fd = fds.pop(0), fds.pop(0)
        pipes = {fds.pop(0): stream for stream in options["streams"]}
        whole = facts.get("log_whole", 0)
        capture = Capture.adopt(log_fd, result_fd, options["log_cap"], options["display_cap"], pipes, whole=whole)
        capture.cgroup = options["cgroup"]
    listener = socket.socket(fileno=fds.pop(0)) if facts["listener"] else None
    disk = None
    if facts["disk"] is not None:
        image = facts["disk"]["image"]
        root = fds.pop(0) if facts["disk"]["root"] else open_live(facts["init_pid"], image)
        disk = JobDisk.held(image, root)
    connections = [socket.socket(fileno=fd) for fd in fds]
    job = Watched(
        key=facts["key"],
        cgroup=JobCgroup(cgroups, facts["dirs"]),
        init_pid=facts["init_pid"],
        init_fd=init_fd,
        status_fd=status_fd,
        started=facts["started"],
        timeout_s=facts["timeout_s"],
        stop_grace_s=facts["stop_grace_s"],
        channels=Channels(None, listener, dict),
        capture=capture,
        disk=disk,
        decided=Reason(facts["decided"]) if facts.get("decided") else None,
        log_whole=facts.get("log_whole", 0),
        kill_at=facts.get("kill_at"),
        outcome=facts.get("outcome"),
    )
    job.channels.connections = connections
    job.channels.greeting = job.greeting
    os.set_blocking(status_fd, False)
    return job


class Monitor:
    """Follows many running jobs in one loop: their status pipes, output pipes, control connections
    and timers (metrics every second, deadlines, the end of stop grace periods).

    keeper: the spawner's line, on which jobs arrive and to which every change is noted (so a new
    monitor could take over); None for a monitor of its own job (a standby that keeps its job)."""

    def __init__(self, cgroups: CgroupHost, keeper: socket.socket | None = None):
        self.cgroups = cgroups
        self.keeper = keeper
        self.jobs: dict[str, Watched] = {}
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, str, str]] = []
        self._order = itertools.count()
        if keeper is not None:
            self.selector.register(keeper, selectors.EVENT_READ, None)

    def add(self, job: Watched) -> None:
        """Follow a job: what an earlier owner noted of it goes on from where it was."""
        self.jobs[job.key] = job
        if job.outcome is not None:  # decided, maybe written already: written again, the same
            self._report(job, Outcome.from_dict(job.outcome))
            return
        if job.channels.listener is not None:
            job.channels.listener.setblocking(False)  # an accept never waits: the loop serves every job
        for fd in job.fds():
            self.selector.register(fd, selectors.EVENT_READ, job.key)
        job.channels.joined = lambda connection: self._joined(job, connection)
        job.channels.leaving = lambda connection: self._leaving(job, connection)
        now = time.monotonic()
        self._at(now + METRICS_INTERVAL_S, job, "sample")
        if job.timeout_s:
            self._at(job.started + job.timeout_s, job, "deadline")
        if job.kill_at is not None:  # a stop under way: its SIGTERM again, in case it was not sent
            job.cgroup.signal_all(signal.SIGTERM, spare=job.init_pid)
            self._at(job.kill_at, job, "kill")

    def run(self) -> None:
        """Until no job is left and no keeper can send another."""
        while self.jobs or self.keeper is not None:
            self._fire_timers()
            wait = max(self.timers[0][0] - time.monotonic(), 0) if self.timers else None
            for key, _ in self.selector.select(wait):
                if key.data is None:
                    self._from_keeper()
                else:
                    self._guarded(key.data, lambda job, fd=key.fd: self._readable(job, fd))

    def _from_keeper(self) -> None:
        try:
            message, fds, _, _ = socket.recv_fds(self.keeper, MAX_LAUNCH_MESSAGE, MAX_HANDOVER_FDS)  # type: ignore[arg-type]
        except OSError:
            message, fds = b"", []
        if not message:  # the spawner has gone: the jobs here go on, and no new one comes
            self.selector.unregister(self.keeper)
            self.keeper.close()  # type: ignore[union-attr]
            self.keeper = None
            return
        try:
            job = adopt(self.cgroups, Handover.decode(message, fds))
        except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
            for fd in fds:
                os.close(fd)
            _complain(f"a job handed over could not be taken: {exc!r}")
            return
        self.jobs[job.key] = job
        self._guarded(job.key, self.add)

    def _guarded(self, key: str, step: Callable[[Watched], None]) -> None:
        """One step for one job; a failure ends that job (as lost, saying why) and no other."""
        job = self.jobs.get(key)
        if job is None:
            return
        try:
            step(job)
        except Exception as exc:  # one job's failure must not end every job
            if key not in self.jobs:
                _complain(f"ending job {key}: {exc!r}")
                return
            try:
                self._fail(job, exc)
            except Exception as again:
                _complain(f"ending job {key} as lost: {again!r}")

    def _readable(self, job: Watched, fd: int) -> None:
        if fd == job.init_fd:
            self._end(job)
        elif fd == job.status_fd:
            self._read_status(job)
        elif job.capture is not None and fd in job.capture.streams:
            if job.capture.pump(fd) is False:
                # unwatched before it is closed: the keeper's copy keeps the pipe alive, and epoll
                # would go on reporting it under a number the next open may reuse
                self.selector.unregister(fd)
                job.capture.release(fd)
        else:
            self._from_client(job, fd)

    def _from_client(self, job: Watched, fd: int) -> None:
        request = job.channels.handle(fd)
        if request and request.get("op") == "stop":
            self._stop(job, Reason.STOPPED, _grace(request, job.stop_grace_s))

    def _joined(self, job: Watched, connection: socket.socket) -> None:
        self.selector.register(connection, selectors.EVENT_READ, job.key)
        self._tell_keeper({"op": "joined", "key": job.key}, [connection.fileno()])

    def _leaving(self, job: Watched, connection: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(connection)
        self._tell_keeper({"op": "left", "key": job.key, "ino": _inode(connection)})

    def _fire_timers(self) -> None:
        now = time.monotonic()
        samples = []
        while self.timers and self.timers[0][0] <= now:
            when, _, key, kind = heapq.heappop(self.timers)
            job = self.jobs.get(key)
            if job is None or job.status is not None:  # ended: its init is about to say so
                continue
            if kind == "sample":
                samples.append(job)
            elif kind == "deadline":
                self._guarded(key, lambda job: self._stop(job, Reason.TIMEOUT, None))
            elif kind == "kill" and job.kill_at == when:
                self._guarded(key, self._kill)
        for job in samples:
            self._guarded(job.key, self._sample)

    def _sample(self, job: Watched) -> None:
        job.channels.broadcast({"event": "metrics", "usage": _usage(job).to_dict()})
        if job.capture is not None and job.capture.log.size != job.log_whole:
            # where a successor starts looking for a torn record (Capture.adopt)
            job.log_whole = job.capture.log.size
            self._note(job, log_whole=job.log_whole)
        self._at(time.monotonic() + METRICS_INTERVAL_S, job, "sample")

    def _stop(self, job: Watched, reason: Reason, grace: float | None) -> None:
        """SIGTERM to every process of the job but its init; what is left is killed after the grace
        period (a second stop may shorten it; the first reason stays)."""
        kill_at = time.monotonic() + (job.stop_grace_s if grace is None else grace)
        if job.kill_at is not None and job.kill_at <= kill_at:
            return
        first = job.decided is None
        job.decided = job.decided or reason
        job.kill_at = kill_at
        self._note(job, decided=job.decided.value, kill_at=kill_at)  # first: a successor then stops it too
        if first:
            job.cgroup.signal_all(signal.SIGTERM, spare=job.init_pid)
        self._at(kill_at, job, "kill")

    def _read_status(self, job: Watched) -> None:
        """The job's wait status, which its init sends just before it exits (then, at its exit,
        the pidfd says the job has ended). Peeked, not taken: a successor reads it again."""
        data = _peek(job.status_fd)
        if data is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(job.status_fd)
        if len(data) == STATUS.size:
            job.status = STATUS.unpack(data)[0]

    def _kill(self, job: Watched) -> None:
        """The grace period is over: kill the whole tree (the init's pidfd then says it is gone)."""
        job.cgroup.send_kill()

    def _end(self, job: Watched) -> None:
        """The init has exited, and the kernel has reaped every other process of its namespace
        before that: read the final counters and say how the job ended."""
        if job.status is None:
            self._read_status(job)
        status = job.status
        if status is None and job.decided is not None:
            status = signal.SIGKILL  # stopped, and its init killed before it could tell
        job.cgroup.kill()  # empty already, but for a process moved in from outside the namespace
        usage = _usage(job)
        decided = Outcome(job.decided) if job.decided is not None else None
        outcome = _outcome(status, usage, decided)
        self._note(job, outcome=outcome.to_dict())
        self._report(job, outcome)

    def _report(self, job: Watched, outcome: Outcome) -> None:
        """The outcome goes to the result file first (it must survive us), then to every connection;
        the job is forgotten here and by the keeper whatever fails (whose copies then close, so the
        executor finds the job ended, by its result file, or lost), then its cgroups go."""
        self._forget(job)
        try:
            if job.disk is not None:
                job.disk.close()  # before the outcome is told: a job said ended holds no device
            if job.capture is not None:
                job.capture.finish(outcome)
            job.channels.broadcast({"event": "exit", "outcome": outcome.to_dict()})
        finally:
            job.close()
            self._tell_keeper({"op": "done", "key": job.key})
        job.cgroup.kill()
        job.cgroup.remove()

    def _fail(self, job: Watched, exc: Exception) -> None:
        _complain(f"following job {job.key} failed, so it is ended as lost: {exc!r}")
        try:
            job.cgroup.kill()
        finally:
            self._report(job, Outcome(Reason.LOST, error=f"the supervisor failed while following the job: {exc}"))

    def _forget(self, job: Watched) -> None:
        self.jobs.pop(job.key, None)
        if len(self.timers) > 8 * len(self.jobs) + 64:  # a forgotten job's timers stay until due: drop them
            self.timers = [timer for timer in self.timers if timer[2] in self.jobs]
            heapq.heapify(self.timers)
        for fd in job.fds():
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)

    def _at(self, when: float, job: Watched, kind: str) -> None:
        heapq.heappush(self.timers, (when, next(self._order), job.key, kind))

    def _note(self, job: Watched, **facts: Any) -> None:
        self._tell_keeper({"op": "note", "key": job.key, **facts})

    def _tell_keeper(self, message: dict, fds: list[int] | None = None) -> None:
        if self.keeper is None:
            return
        try:
            socket.send_fds(self.keeper, [json.dumps(message).encode()], fds or [])
        except OSError:
            pass  # the spawner has gone: the monitor goes on alone (see _from_keeper)


def _complain(words: str) -> None:
    """To the spawner's stderr, which is the executor's log; never an error of its own (a closed
    log must not end the monitor)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"jupyter-worker monitor: {words}", file=sys.stderr, flush=True)


def _peek(fd: int) -> bytes | None:
    """The status message (a SOCK_SEQPACKET line), left in place; b'' at the end, None if none yet."""
    line = socket.socket(fileno=fd)
    try:
        return line.recv(STATUS.size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    finally:
        line.detach()


def _inode(connection: socket.socket) -> int:
    return os.fstat(connection.fileno()).st_ino


def _grace(request: dict, default: float) -> float:
    """The grace period a stop asks for, within 0..MAX_STOP_GRACE_S (a timer takes no inf or NaN,
    and an error here would lose the job); the job's own if it is not a number."""
    try:
        grace = float(request.get("grace_s", default))
    except (TypeError, ValueError, OverflowError):
        return default
    return min(max(grace, 0.0), MAX_STOP_GRACE_S) if math.isfinite(grace) else default


def _usage(job: Watched) -> Usage:
    usage = job.cgroup.usage()
    usage.wall_seconds = round(time.monotonic() - job.started, 3)
    if job.disk is not None:
        usage.disk_bytes = job.disk.used_bytes()
    return usage


def _outcome(status: int | None, usage: Usage, decided: Outcome | None) -> Outcome:
    if decided is not None:
        outcome = decided
    elif status is not None:
        outcome = classify(status, usage)
    else:  # the init ended without the job's status
        outcome = Outcome(Reason.LOST, error="the job's init ended without saying how the job ended")
    if status is not None and outcome.exit_code is None and outcome.signal is None:
        outcome.exit_code, outcome.signal = _split(status)
    outcome.usage = usage
    return outcome


def _split(status: int) -> tuple[int | None, int | None]:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def classify(status: int, usage: Usage) -> Outcome:
    """How a job whose wait status is `status` ended."""
    code, signum = _split(status)
    failed = code != 0
    if usage.oom_kills and failed and (signum in (None, signal.SIGKILL)):
        return Outcome(Reason.OOM, exit_code=code, signal=signum)
    if signum is not None:
        return Outcome(Reason.SIGNAL, signal=signum)
    return Outcome(Reason.EXIT, exit_code=code)
