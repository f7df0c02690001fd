"""The per-job supervisor: outside the sandbox, it owns the job's cgroups, deadline and exit status.

One supervisor process per job, forked from the spawner into a session of its own, so it does not
depend on whoever asked for the job. It talks over a SOCK_SEQPACKET control socket: JSON events
out (started, metrics about every second, exit), JSON requests in (stop). A client that goes away
does not end the job.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from dataclasses import dataclass

from ..spec import Outcome, Reason, SpecError, Usage
from . import libc
from .cgroups import JobCgroup
from .devices import io_devices
from .launch import STATUS, HostContext, InitPipes, init_main
from .launch_spec import LaunchSpec
from .mounts import acting_as

METRICS_INTERVAL_S = 1.0


class Channel:
    """The control socket; sends never block the supervisor, so a stalled client costs nothing."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.open = True

    def send(self, event: dict) -> None:
        if not self.open:
            return
        try:
            self.sock.send(json.dumps(event).encode(), socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        except OSError:
            self.open = False

    def receive(self) -> dict | None:
        """The next request, or None when the client has gone (the job goes on)."""
        try:
            data = self.sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return {}
        except OSError:
            data = b""
        if not data:
            self.open = False
            return None
        try:
            request = json.loads(data)
        except ValueError:
            return {}
        return request if isinstance(request, dict) else {}


@dataclass
class _Running:
    init_pid: int
    status_fd: int
    started: float


def supervise(spec: LaunchSpec, context: HostContext, stdio: list[int], channel: Channel) -> None:
    """Run one job from cgroup creation to cgroup removal and report its outcome."""
    outcome = _run(spec, context, stdio, channel)
    channel.send({"event": "exit", "outcome": outcome.to_dict()})


def _run(spec: LaunchSpec, context: HostContext, stdio: list[int], channel: Channel) -> Outcome:
    try:
        devices, warnings = [], []
        if spec.limits.io_bps is not None:
            with acting_as(spec.requester_uid, spec.requester_gid, spec.requester_groups):
                devices, warnings = io_devices(spec)
        cgroup = context.cgroups.create(spec.name, spec.limits, devices)
    except SpecError as exc:
        return Outcome(Reason.START_ERROR, error=str(exc))
    try:
        running, error = _start(spec, cgroup, context, stdio)
        if error:
            return _finish(cgroup, running, None, Outcome(Reason.START_ERROR, error=error))
        channel.send({"event": "started", "pid": running.init_pid, "warnings": warnings})
        return _watch(spec, cgroup, running, channel)
    except OSError as exc:
        return Outcome(Reason.START_ERROR, error=f"could not start the sandbox: {exc}")
    finally:
        cgroup.kill()
        cgroup.remove()


def _start(spec: LaunchSpec, cgroup: JobCgroup, context: HostContext, stdio: list[int]) -> tuple[_Running, str]:
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    placed_r, placed_w = os.pipe2(os.O_CLOEXEC)
    libc.unshare(libc.CLONE_NEWPID)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        for fd in (error_r, status_r, placed_w):
            os.close(fd)
        init_main(spec, cgroup, context, stdio, InitPipes(error_w, status_w, placed_r))
    for fd in (error_w, status_w, placed_r, *stdio):
        os.close(fd)
    try:
        cgroup.add_to_v2(pid)
        os.write(placed_w, b"1")
    finally:
        os.close(placed_w)
    error = b""
    while chunk := os.read(error_r, 4096):
        error += chunk
    os.close(error_r)
    return _Running(pid, status_r, started), error.decode(errors="replace")


def _watch(spec: LaunchSpec, cgroup: JobCgroup, running: _Running, channel: Channel) -> Outcome:
    timeout = spec.limits.timeout_s
    deadline = running.started + timeout if timeout else None
    poller = select.poll()
    poller.register(running.status_fd, select.POLLIN)
    poller.register(channel.sock, select.POLLIN)
    next_sample = time.monotonic() + METRICS_INTERVAL_S
    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return _stop(spec, cgroup, running, Reason.TIMEOUT, None)
        if now >= next_sample:
            channel.send({"event": "metrics", "usage": _usage(cgroup, running).to_dict()})
            next_sample = now + METRICS_INTERVAL_S
        wait = min(next_sample, deadline or next_sample) - now
        for fd, _ in poller.poll(max(wait, 0) * 1000):
            if fd == running.status_fd:
                return _finish(cgroup, running, _read_status(running.status_fd), None)
            request = channel.receive()
            if request is None:
                poller.unregister(channel.sock)
            elif request.get("op") == "stop":
                grace = float(request.get("grace_s", spec.stop_grace_s))
                return _stop(spec, cgroup, running, Reason.STOPPED, grace)


def _read_status(fd: int) -> int | None:
    data = os.read(fd, STATUS.size)
    return STATUS.unpack(data)[0] if len(data) == STATUS.size else None


def _stop(spec: LaunchSpec, cgroup: JobCgroup, running: _Running, reason: Reason, grace: float | None) -> Outcome:
    """SIGTERM to every process of the job, a grace period, then SIGKILL of the whole tree."""
    grace = spec.stop_grace_s if grace is None else grace
    cgroup.signal_all(signal.SIGTERM, spare=running.init_pid)
    ready, _, _ = select.select([running.status_fd], [], [], grace)
    status = _read_status(running.status_fd) if ready else None
    cgroup.kill()
    if status is None:
        status = _read_status(running.status_fd)
    return _finish(cgroup, running, signal.SIGKILL if status is None else status, Outcome(reason))


def _usage(cgroup: JobCgroup, running: _Running) -> Usage:
    usage = cgroup.usage()
    usage.wall_seconds = round(time.monotonic() - running.started, 3)
    return usage


def _finish(cgroup: JobCgroup, running: _Running, status: int | None, decided: Outcome | None) -> Outcome:
    """Wait for init, empty the cgroup, read the final counters, and say how the job ended."""
    _, init_status = os.waitpid(running.init_pid, 0)
    os.close(running.status_fd)
    cgroup.kill()
    usage = _usage(cgroup, running)
    outcome = decided or _classify(status if status is not None else init_status, usage)
    if status is not None and outcome.exit_code is None and outcome.signal is None:
        outcome.exit_code, outcome.signal = _split(status)
    outcome.usage = usage
    return outcome


def _split(status: int) -> tuple[int | None, int | None]:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def _classify(status: int, usage: Usage) -> Outcome:
    code, signum = _split(status)
    failed = code != 0
    if usage.oom_kills and failed and (signum in (None, signal.SIGKILL)):
        return Outcome(Reason.OOM, exit_code=code, signal=signum)
    if signum is not None:
        return Outcome(Reason.SIGNAL, signal=signum)
    return Outcome(Reason.EXIT, exit_code=code)
