"""The per-job supervisor: outside the sandbox, it prepares the job's sandbox and starts the job.

One supervisor process per job, forked from the spawner into a session of its own before the job
exists (a standby, which prepares the sandbox ahead), so it does not depend on whoever asked for
the job. It talks over control connections (control.Channels): JSON events out (started, metrics
about every second, exit), JSON requests in (stop). A client that goes away does not end the job.
With capture (control.Capture) it also owns the job's output and writes its outcome to a file.
Once the job runs, the supervisor hands it over to the spawner's monitor (sandbox/monitor.py) and
exits; a job the spawner can no longer take (it is stopping) is followed here, by a monitor of
its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
import uuid
from dataclasses import dataclass

from ..errors import SpecError
from ..spec import NetworkMode, Outcome, Reason, Usage
from . import libc, network
from .cgroups import JobCgroup
from .control import Capture, Channels
from .devices import io_devices
from .disk import DiskError, JobDisk
from .launch import HostContext, InitLines, init_main, rehearse_parse
from .launch_spec import MAX_LAUNCH_MESSAGE, LaunchSpec, fit_launch_messages
from .monitor import Monitor, Watched, classify
from .mounts import acting_as

DEFAULT_LOG_CAP = 1 << 30


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

    def greeting(self) -> dict:
        """What a connection that attaches before the job has started is told first."""
        return {"event": "attached", "started": False}


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
    started = _run(job, context, prepared, disk)
    if isinstance(started, Outcome):
        link.close()
        if disk is not None:
            disk.close()  # before the outcome is told: a job said ended holds no device
        _report(job, started)
        prepared.cgroup.remove()
        return
    _follow(started, context, link)


def _follow(job: Watched, context: HostContext, link: socket.socket) -> None:
    """Hand the running job to the spawner's monitor, or follow it here to its end: a job that has
    ended already (a short command: its outcome is told sooner without a handover), or one the
    spawner can no longer take (it is stopping)."""
    if not select.select([job.status_fd], [], [], 0)[0]:
        handover = job.handover()
        try:
            socket.send_fds(link, [handover.encode()], handover.fds)
        except OSError:
            pass
        else:
            link.close()
            job.close()
            if job.disk is not None:
                job.disk.close()
            return
    link.close()  # the spawner prepares the next standby
    monitor = Monitor(context.cgroups)
    monitor.add(job)
    monitor.run()


def _rehearse(context: HostContext, prepared: _Prepared) -> None:
    """Walk, before the job asks, the code its start and end take here: parse, refusals, usage, the
    outcome's event (launch.rehearse_parse says why). Its usage is read on a copy of the cgroup.
    Best effort: a rehearsal that fails costs the job time, nothing else."""
    with contextlib.suppress(Exception):
        spec = rehearse_parse()
        context.cgroups.refusals(spec.limits)
        usage = JobCgroup(context.cgroups, prepared.cgroup.dirs).usage()
        json.dumps({"event": "exit", "outcome": classify(0, usage).to_dict()})


def rehearse_shared(context: HostContext) -> None:
    """In the spawner, before it freezes its heap and forks standbys: the pure part of _rehearse,
    run often enough for Python to specialize its bytecode (3.11: after 8 calls). Every supervisor
    then inherits that code ready and the caches it fills, shared, instead of writing its own copy
    of those pages: about 0.2 MiB less a running job (bench/executor.py many_sleepers)."""
    for _ in range(10):
        with contextlib.suppress(Exception):
            spec = rehearse_parse()
            context.cgroups.refusals(spec.limits)
            json.dumps({"event": "exit", "outcome": classify(0, Usage()).to_dict()})


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
    # The job's wait status comes on a SOCK_SEQPACKET line, not a pipe: the monitor peeks at it
    # (MSG_PEEK), so a monitor killed after reading it leaves it for its successor.
    status_r, status_w = (end.detach() for end in socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET))
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


def _run(job: _Job, context: HostContext, prepared: _Prepared, disk: JobDisk | None) -> Watched | Outcome:
    """Hand the job to the waiting init, limit its cgroups meanwhile, then let it start: the job to
    follow, or why it did not start.

    The init says 'joined' once inside the job's v1 cgroups (a standby may still be preparing when
    its job arrives). The init finishes the root while the limits are written (and, for the isolated
    network, its eth0 is made); it lets the job run only after the 'limits set' byte, so no user
    code runs unlimited.
    """
    cgroup = prepared.cgroup
    started = time.monotonic()
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
        return _start_failed(prepared, started, str(exc))
    _close_all(job.stdio)
    error = _release(prepared)
    if error:
        return _start_failed(prepared, started, error)
    if disk is not None:
        disk.watch(prepared.init_pid)
    job.channels.broadcast({"event": "started", "pid": prepared.init_pid, "warnings": warnings})
    watched = Watched(
        key=cgroup.name,
        cgroup=cgroup,
        init_pid=prepared.init_pid,
        init_fd=os.pidfd_open(prepared.init_pid),  # our child, not yet reaped: no other process's pid
        status_fd=prepared.status_fd,
        started=started,
        timeout_s=job.spec.limits.timeout_s,
        stop_grace_s=job.spec.stop_grace_s,
        channels=job.channels,
        capture=job.capture,
        disk=disk,
    )
    job.channels.greeting = watched.greeting
    os.set_blocking(prepared.status_fd, False)
    return watched


def _start_failed(prepared: _Prepared, started: float, error: str) -> Outcome:
    """The job did not start: wait for its init, empty its cgroups, and say why with what it used."""
    os.waitpid(prepared.init_pid, 0)
    os.close(prepared.status_fd)
    prepared.cgroup.kill()
    outcome = Outcome(Reason.START_ERROR, error=error)
    outcome.usage = prepared.cgroup.usage()
    outcome.usage.wall_seconds = round(time.monotonic() - started, 3)
    return outcome


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
