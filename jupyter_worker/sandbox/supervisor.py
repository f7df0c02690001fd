"""The per-job supervisor: outside the sandbox, it owns the job's cgroups, deadline and exit status.

One supervisor process per job, forked from the spawner into a session of its own before the job
exists (a standby, which prepares the sandbox ahead), so it does not depend on whoever asked for
the job. It talks over control connections (control.Channels): JSON events out (started, metrics
about every second, exit), JSON requests in (stop). A client that goes away does not end the job.
With capture (control.Capture) it also owns the job's output and writes its outcome to a file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import socket
import time
import uuid
from dataclasses import dataclass

from ..errors import SpecError
from ..spec import MAX_STOP_GRACE_S, NetworkMode, Outcome, Reason, Usage
from . import libc, network
from .cgroups import JobCgroup
from .control import Capture, Channels
from .devices import io_devices
from .disk import DiskError, JobDisk
from .launch import STATUS, HostContext, InitLines, init_main, rehearse_parse
from .launch_spec import MAX_LAUNCH_MESSAGE, LaunchSpec, fit_launch_messages
from .mounts import acting_as

METRICS_INTERVAL_S = 1.0
DEFAULT_LOG_CAP = 1 << 30


@dataclass
class _Running:
    init_pid: int
    status_fd: int
    started: float
    disk: JobDisk | None = None


@dataclass
class _Prepared:
    """A sandbox made before its job: cgroups, and an init waiting in them for a job."""

    cgroup: JobCgroup
    init_pid: int
    job: socket.socket
    error_fd: int
    status_fd: int
    limits_set_fd: int


@dataclass
class _Job:
    """A job as handed over by the spawner: its request (raw and parsed), stdio, and what it talks to."""

    spec: LaunchSpec
    message: bytes
    stdio: list[int]
    channels: Channels
    capture: Capture | None
    running: _Running | None = None

    def greeting(self) -> dict:
        """What a newly attached connection is told first."""
        if self.running is None:
            return {"event": "attached", "started": False}
        return {"event": "attached", "started": True, "pid": self.running.init_pid}


def _take_job(message: bytes, fds: list[int]) -> _Job:
    """Parse a launch request: {"spec": ..., "capture": {"log_cap": N} or absent} with its fds.

    Without capture the fds are stdin, stdout, stderr, control; with capture they are stdin, the
    log file, the result file, a listening socket for later connections, and the control socket.
    Only a captured job has a display pipe: its output goes to the log like stdout's.
    """
    request = json.loads(message)
    spec = LaunchSpec.from_dict(request["spec"])
    capture_options = request.get("capture")
    if capture_options is None:
        if spec.display:
            raise SpecError("display: only a job whose output is captured has a display channel")
        job = _Job(spec, message, fds[:3], Channels(socket.socket(fileno=fds[3]), None, dict), None)
    else:
        capture = Capture(fds[1], fds[2], int(capture_options.get("log_cap", DEFAULT_LOG_CAP)), spec.display)
        listener = socket.socket(fileno=fds[3])
        channels = Channels(socket.socket(fileno=fds[4]), listener, dict)
        job = _Job(spec, message, [fds[0], *capture.job_ends], channels, capture)
    job.channels.greeting = job.greeting
    return job


def standby(context: HostContext, link: socket.socket) -> None:
    """Prepare a sandbox, wait for the spawner to hand over a job, run it to its end.

    Preparing runs at idle priority, so it never takes a CPU from a job being started; waiting runs
    at the normal one, so a job handed over on a busy host is not left behind every running job. The link
    stays open until the job has started: its closing tells the spawner to prepare the next
    standby, whose mounts and cgroup moves would otherwise contend with this start. A link
    closed without a job means the spawner is shutting down: the sandbox is taken apart.
    """
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    prepared, problem = None, ""
    try:
        prepared = _prepare(context)
    except (SpecError, OSError) as exc:
        problem = f"could not prepare the sandbox: {exc}"
    else:
        _rehearse(context, prepared)
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    message, fds, _, _ = socket.recv_fds(link, MAX_LAUNCH_MESSAGE, 5)
    if not message:
        if prepared:
            _discard(prepared)
        link.close()
        return
    try:
        job = _take_job(message, fds)
    except (SpecError, ValueError, TypeError, KeyError, IndexError) as exc:
        link.close()
        if prepared:
            _discard(prepared)
        _refuse_request(fds, f"invalid launch request: {exc}")
        return
    if prepared is None:
        link.close()
        _close_all(job.stdio)
        error = "; ".join(context.cgroups.refusals(job.spec.limits)) or problem
        _report(job, Outcome(Reason.START_ERROR, error=error))
        return
    try:
        disk = _make_disk(job)
    except DiskError as exc:
        link.close()
        _close_all(job.stdio)
        _discard(prepared)
        _report(job, Outcome(Reason.START_ERROR, error=str(exc)))
        return
    try:
        outcome = _run(job, context, prepared, link, disk)
    finally:
        if disk is not None:
            disk.close()  # before the outcome is told: a job said ended holds no device
    _report(job, outcome)
    prepared.cgroup.remove()


def _rehearse(context: HostContext, prepared: _Prepared) -> None:
    """Walk, before the job asks, the code its start and end take here: parse, refusals, usage, the
    outcome's event (launch.rehearse_parse says why). Its usage is read on a copy of the cgroup.
    Best effort: a rehearsal that fails costs the job time, nothing else."""
    with contextlib.suppress(Exception):
        spec = rehearse_parse()
        context.cgroups.refusals(spec.limits)
        usage = JobCgroup(context.cgroups, prepared.cgroup.dirs).usage()
        json.dumps({"event": "exit", "outcome": _classify(0, usage).to_dict()})


def rehearse_shared(context: HostContext) -> None:
    """In the spawner, before it freezes its heap and forks standbys: the pure part of _rehearse,
    run often enough for Python to specialize its bytecode (3.11: after 8 calls). Every supervisor
    then inherits that code ready and the caches it fills, shared, instead of writing its own copy
    of those pages: about 0.2 MiB less a running job (bench/executor.py many_sleepers)."""
    for _ in range(10):
        with contextlib.suppress(Exception):
            spec = rehearse_parse()
            context.cgroups.refusals(spec.limits)
            json.dumps({"event": "exit", "outcome": _classify(0, Usage()).to_dict()})


def _make_disk(job: _Job) -> JobDisk | None:
    """A job with a disk limit gets its /work on an image of that size (sandbox/disk.py); its
    init learns the device from the request, where it replaces nothing the executor sent."""
    spec = job.spec
    if spec.limits.disk_mb is None or spec.work_dir is None:
        return None
    disk = JobDisk(spec.work_dir, spec.limits.disk_mb, spec.uid, spec.gid)
    request = json.loads(job.message)
    request["work_device"] = disk.device
    job.message = json.dumps(request).encode()
    return disk


def _refuse_request(fds: list[int], error: str) -> None:
    """A request that cannot be parsed still gets its answer, on its control socket (the last fd)."""
    control = socket.socket(fileno=fds[-1])
    _close_all(fds[:-1])
    outcome = Outcome(Reason.START_ERROR, error=error)
    Channels(control, None, dict).broadcast({"event": "exit", "outcome": outcome.to_dict()})
    control.close()


def _report(job: _Job, outcome: Outcome) -> None:
    """The outcome goes to the result file first (it must survive us), then to every connection."""
    if job.capture is not None:
        job.capture.finish(outcome)
    job.channels.broadcast({"event": "exit", "outcome": outcome.to_dict()})
    job.channels.close()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _prepare(context: HostContext) -> _Prepared:
    cgroup = context.cgroups.create(uuid.uuid4().hex)
    try:
        return _prepare_in(cgroup, context)
    except BaseException:  # a standby that could not be prepared leaves no cgroup behind
        cgroup.kill()
        cgroup.remove()
        raise


def _prepare_in(cgroup: JobCgroup, context: HostContext) -> _Prepared:
    job_ours, job_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fit_launch_messages(job_ours, job_theirs)
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    limits_r, limits_w = os.pipe2(os.O_CLOEXEC)
    placed_r, placed_w = os.pipe2(os.O_CLOEXEC)
    libc.unshare(libc.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        job_ours.close()
        for fd in (error_r, status_r, limits_w, placed_w):
            os.close(fd)
        init_main(cgroup, context, InitLines(job_theirs, error_w, status_w, limits_r, placed_r))
    job_theirs.close()
    for fd in (error_w, status_w, limits_r, placed_r):
        os.close(fd)
    try:
        cgroup.place(pid)
        os.write(placed_w, b"1")
    except BaseException:  # the init reads EOF and exits: reaped before its cgroup is removed
        os.close(placed_w)
        job_ours.close()
        _close_all([error_r, status_r, limits_w])
        os.waitpid(pid, 0)
        raise
    os.close(placed_w)
    return _Prepared(cgroup, pid, job_ours, error_r, status_r, limits_w)


def _discard(prepared: _Prepared) -> None:
    """Tell the waiting init there is no job: it exits, and its namespaces with it."""
    prepared.job.close()
    os.waitpid(prepared.init_pid, 0)
    for fd in (prepared.error_fd, prepared.status_fd, prepared.limits_set_fd):
        os.close(fd)
    prepared.cgroup.kill()
    prepared.cgroup.remove()


def _apply_limits(spec: LaunchSpec, context: HostContext, cgroup: JobCgroup) -> list[str]:
    """Refuse what this host cannot enforce; otherwise set every limit. Returns warnings."""
    problems = context.cgroups.refusals(spec.limits)
    if problems:
        raise SpecError("; ".join(problems))
    devices, warnings = [], []
    if spec.limits.io_bps is not None:
        with acting_as(spec.requester_uid, spec.requester_gid, spec.requester_groups):
            devices, warnings = io_devices(spec)
    cgroup.apply(spec.limits, devices)
    return warnings


def _run(job: _Job, context: HostContext, prepared: _Prepared, link: socket.socket, disk: JobDisk | None) -> Outcome:
    """Hand the job to the waiting init, limit its cgroups meanwhile, then let it start; follow it.

    The init says 'joined' once inside the job's v1 cgroups (a standby may still be preparing when
    its job arrives). The init finishes the root while the limits are written (and, for the isolated
    network, its eth0 is made); it lets the job run
    only after the 'limits set' byte, so no user code runs unlimited. The outcome goes out as soon as the job's
    processes are gone; the empty cgroups are removed after it.
    """
    cgroup = prepared.cgroup
    running = _Running(prepared.init_pid, prepared.status_fd, time.monotonic(), disk)
    try:
        try:
            os.sched_setscheduler(prepared.init_pid, os.SCHED_OTHER, os.sched_param(0))
            prepared.job.recv(16)
            socket.send_fds(prepared.job, [job.message], job.stdio)
        except OSError:
            pass
        prepared.job.close()
        if job.capture is not None:
            job.capture.begin(cgroup.name, prepared.init_pid)
        try:
            warnings = _apply_limits(job.spec, context, cgroup)
            if job.spec.network is NetworkMode.ISOLATED:
                network.attach(job.spec.link, prepared.init_pid, job.spec.limits.net_bps)
        except (SpecError, OSError, network.NetworkError) as exc:
            _close_all(job.stdio)
            os.close(prepared.limits_set_fd)
            return _finish(cgroup, running, None, Outcome(Reason.START_ERROR, error=str(exc)))
        _close_all(job.stdio)
        error = _release(prepared)
        if error:
            return _finish(cgroup, running, None, Outcome(Reason.START_ERROR, error=error))
        if disk is not None:
            disk.watch(running.init_pid)
        job.running = running
        job.channels.broadcast({"event": "started", "pid": running.init_pid, "warnings": warnings})
        link.close()
        return _watch(job, cgroup, running)
    finally:
        link.close()
        cgroup.kill()


def _release(prepared: _Prepared) -> str:
    """Let the init start the job; returns its setup error, or '' once the command was exec'd."""
    try:
        os.write(prepared.limits_set_fd, b"1")
    except OSError:
        pass
    os.close(prepared.limits_set_fd)
    error = b""
    while chunk := os.read(prepared.error_fd, 4096):
        error += chunk
    os.close(prepared.error_fd)
    # each message ends with a NUL; the first says why (one after it only that a line then broke)
    return error.split(b"\0", 1)[0].decode(errors="replace")


def _watch(job: _Job, cgroup: JobCgroup, running: _Running) -> Outcome:
    """Until the job ends: its output to the log, metrics out, stop requests in, the deadline."""
    timeout = job.spec.limits.timeout_s
    deadline = running.started + timeout if timeout else None
    next_sample = time.monotonic() + METRICS_INTERVAL_S
    output = job.capture.fds() if job.capture else []
    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return _stop(job, cgroup, running, Reason.TIMEOUT, None)
        if now >= next_sample:
            job.channels.broadcast({"event": "metrics", "usage": _usage(cgroup, running).to_dict()})
            next_sample = now + METRICS_INTERVAL_S
        wait = min(next_sample, deadline or next_sample) - now
        ready = select.select([running.status_fd, *output, *job.channels.fds()], [], [], max(wait, 0))[0]
        for fd in ready:
            if fd == running.status_fd:
                return _finish(cgroup, running, _read_status(running.status_fd), None)
            if fd in output:
                job.capture.pump(fd)  # type: ignore[union-attr]
                output = job.capture.fds()  # type: ignore[union-attr]
                continue
            request = job.channels.handle(fd)
            if request and request.get("op") == "stop":
                grace = _grace(request, job.spec.stop_grace_s)
                return _stop(job, cgroup, running, Reason.STOPPED, grace)


def _grace(request: dict, default: float) -> float:
    """The grace period a stop asks for, within 0..MAX_STOP_GRACE_S (select() takes no inf or NaN,
    and an error here would lose the job); the job's own if it is not a number."""
    try:
        grace = float(request.get("grace_s", default))
    except (TypeError, ValueError, OverflowError):
        return default
    return min(max(grace, 0.0), MAX_STOP_GRACE_S) if math.isfinite(grace) else default


def _read_status(fd: int) -> int | None:
    data = os.read(fd, STATUS.size)
    return STATUS.unpack(data)[0] if len(data) == STATUS.size else None


def _stop(job: _Job, cgroup: JobCgroup, running: _Running, reason: Reason, grace: float | None) -> Outcome:
    """SIGTERM to every process of the job, a grace period, then SIGKILL of the whole tree."""
    grace = job.spec.stop_grace_s if grace is None else grace
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
    if running.disk is not None:
        usage.disk_bytes = running.disk.used_bytes()
    return usage


def _finish(cgroup: JobCgroup, running: _Running, status: int | None, decided: Outcome | None) -> Outcome:
    """Wait for init, empty the cgroup, read the final counters, and say how the job ended."""
    _, init_status = os.waitpid(running.init_pid, 0)
    os.close(running.status_fd)
    cgroup.kill()
    usage = _usage(cgroup, running)
    if decided is not None:
        outcome = decided
    elif status is not None:
        outcome = _classify(status, usage)
    else:  # the init ended without the job's status: its own exit code is not the job's
        error = f"the job's init ended without saying how the job ended ({_said(init_status)})"
        outcome = Outcome(Reason.LOST, error=error)
    if status is not None and outcome.exit_code is None and outcome.signal is None:
        outcome.exit_code, outcome.signal = _split(status)
    outcome.usage = usage
    return outcome


def _said(status: int) -> str:
    code, signum = _split(status)
    return f"exit code {code}" if code is not None else f"signal {signum}"


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
