"""The keeper: the spawner's copy of every running job's descriptors, and the monitor it feeds.

A standby hands its started job over to the spawner (monitor.Handover); the keeper keeps the
descriptors and sends copies to the monitor, a child process that follows every running job. The
monitor notes to the keeper what a successor would need (a connection that joined or left, a stop
under way, the outcome once decided) and says when a job is done.
A monitor that dies (kill -9, a crash) is replaced at once, and the new one is given every job as
last noted: the jobs' pipes, connections and listeners never closed, so no job, no output and no
outcome is lost. A monitor that keeps dying (MAX_RESTARTS within RESTART_WINDOW_S) gives its
jobs up: they are killed and their copies closed, so the executor records them as lost rather than
waiting on them for ever; the next monitor starts with no job.
"""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field

from .cgroups import CgroupHost, JobCgroup
from .launch_spec import MAX_LAUNCH_MESSAGE, fit_launch_messages
from .monitor import MAX_HANDOVER_FDS, Handover, Monitor

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


@dataclass
class _Kept:
    facts: dict
    fds: list[int]  # as handed over, but for the connections
    connections: dict[int, int] = field(default_factory=dict)  # socket inode: fd

    def handover(self) -> Handover:
        connections = list(self.connections.values())[: MAX_HANDOVER_FDS - len(self.fds)]
        return Handover({**self.facts, "connections": len(connections)}, [*self.fds, *connections])

    def close(self) -> None:
        for fd in [*self.fds, *self.connections.values()]:
            os.close(fd)
        self.fds, self.connections = [], {}


class Keeper:
    """Keeps the running jobs' descriptors and a monitor that follows them (see the module)."""

    def __init__(self, cgroups: CgroupHost):
        self.cgroups = cgroups
        self.jobs: dict[str, _Kept] = {}
        self.link: socket.socket | None = None
        self.pidfd = -1
        self.starts: collections.deque[float] = collections.deque(maxlen=MAX_RESTARTS)

    def fds(self) -> list[int]:
        """What the spawner's loop watches for the keeper: the monitor's line and its pidfd."""
        return [self.link.fileno(), self.pidfd] if self.link is not None else []

    def start_monitor(self) -> None:
        """Fork a monitor and give it every kept job."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        fit_launch_messages(ours, theirs)
        pid = os.fork()
        if pid == 0:
            try:
                _become_monitor(self.cgroups, theirs)
            finally:
                os._exit(0)
        theirs.close()
        self.link, self.pidfd = ours, os.pidfd_open(pid)
        self.starts.append(time.monotonic())
        for kept in self.jobs.values():
            self._send(kept)

    def take(self, message: bytes, fds: list[int]) -> None:
        """A job handed over by its standby: kept, and passed on to the monitor."""
        try:
            facts = json.loads(message)
            count = int(facts.pop("connections"))
            key = str(facts["key"])
        except (ValueError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            return
        base, connections = fds[: len(fds) - count], fds[len(fds) - count :]
        kept = _Kept(facts, base, {os.fstat(fd).st_ino: fd for fd in connections})
        self.jobs[key] = kept
        self._send(kept)
        if (facts.get("disk") or {}).get("root"):
            # The handle on the job's /work keeps its filesystem mounted: only the monitor may hold
            # it, which closes it before it tells the outcome; a successor opens its own.
            os.close(kept.fds.pop())
            facts["disk"]["root"] = False

    def readable(self, fd: int) -> None:
        if self.link is not None and fd == self.link.fileno():
            self._hear()
        elif fd == self.pidfd:
            self._monitor_ended()

    def _send(self, kept: _Kept) -> None:
        handover = kept.handover()
        try:
            socket.send_fds(self.link, [handover.encode()], handover.fds)  # type: ignore[arg-type]
        except OSError:
            pass  # the monitor is gone: its successor is given every job (_monitor_ended)

    def _hear(self) -> bool:
        """One message from the monitor; False at the end of its line."""
        try:
            message, fds, _, _ = socket.recv_fds(self.link, MAX_LAUNCH_MESSAGE, 1)  # type: ignore[arg-type]
        except OSError:
            message, fds = b"", []
        if not message:
            return False
        try:
            note = json.loads(message)
            kept = self.jobs.get(note.get("key"))
        except (ValueError, AttributeError, TypeError):
            kept = None
        if kept is None:
            for fd in fds:
                os.close(fd)
            return True
        op = note.pop("op")
        if op == "joined" and fds:
            kept.connections[os.fstat(fds[0]).st_ino] = fds[0]
        elif op == "left" and note.get("ino") in kept.connections:
            os.close(kept.connections.pop(note["ino"]))
        elif op == "note":
            kept.facts.update({k: v for k, v in note.items() if k in ("decided", "kill_at", "outcome", "log_whole")})
        elif op == "done":
            del self.jobs[note["key"]]
            kept.close()
        return True

    def _monitor_ended(self) -> None:
        """Take what the dead monitor said, then start its successor; if it keeps dying, its jobs
        are given up first (killed, their copies closed: the executor records them lost)."""
        while self._hear():
            pass
        self.link.close()  # type: ignore[union-attr]
        os.close(self.pidfd)
        self.link, self.pidfd = None, -1
        if len(self.starts) == MAX_RESTARTS and time.monotonic() - self.starts[0] < RESTART_WINDOW_S:
            self.give_up()
            self.starts.clear()  # a fresh monitor for the jobs to come
        self.start_monitor()

    def give_up(self) -> None:
        for kept in self.jobs.values():
            try:
                JobCgroup(self.cgroups, kept.facts["dirs"]).kill()
            except OSError:
                pass
            kept.close()
        self.jobs = {}

    def linger(self) -> None:
        """The spawner is told to stop: the monitor goes on while jobs run, kept by a process of
        its own (the spawner's caller waits for the spawner, not for its jobs); then it ends."""
        if self.jobs and os.fork() == 0:
            _name("jw-keeper")
            while self.jobs and self.link is not None:
                for fd in wait_readable([self.link.fileno(), self.pidfd]):
                    self.readable(fd)
        if self.link is not None:
            self.link.close()  # a monitor with no job and no keeper ends


def wait_readable(fds: list[int], timeout_s: float | None = None) -> list[int]:
    """The readable ones of fds (poll: the kept descriptors take a spawner past select's 1024)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _ in poller.poll(None if timeout_s is None else timeout_s * 1000)]


def _become_monitor(cgroups: CgroupHost, link: socket.socket) -> None:
    """In the forked child: nothing of the spawner's but the line to it (not the daemon's socket,
    no standby's link, no kept descriptor: each job comes again on the line)."""
    close_all_but([link.fileno()])
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    _name("jw-monitor")
    Monitor(cgroups, link).run()


def close_all_but(keep: list[int]) -> None:
    """Close every descriptor but 0-2 and keep (close_range, between them)."""
    kept = sorted({0, 1, 2, *keep})
    for low, high in zip(kept, [*kept[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
        os.closerange(low + 1, high)


def _name(name: str) -> None:
    """The process's name in ps and top (its command line stays the spawner's)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name)
    except OSError:
        pass
