"""The two processes inside the sandbox: its init (pid 1) and the job it starts.

The init joins the job's cgroups before anything else, enters fresh mount, uts, ipc and net
namespaces and builds the shared part of the root, all before a job exists; given a job, it adds
the job's own mounts and pivots. The job process, forked before any job too, execs the native job
stage (native/job.c) at once; told the job, it enters a fresh cgroup namespace, drops every
privilege, applies seccomp last and execs the command. Setup errors travel to the supervisor over a
close-on-exec pipe, so an empty pipe at EOF proves the exec happened. The job inherits fds 0-2 and,
with display, the display pipe at DISPLAY_FD (3); nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import signal
import socket
import struct
from dataclasses import dataclass
from typing import NoReturn

from ..spec import NetworkMode
from . import libc
from .cgroups import CgroupHost, JobCgroup
from .launch_spec import DISPLAY_FD, MAX_LAUNCH_MESSAGE, LaunchSpec, fit_launch_messages, job_env
from .mounts import (
    DEFAULT_TMP_MB,
    Bind,
    RootPlan,
    SetupError,
    Tree,
    UserNamespaceChild,
    acting_as,
    finish_root,
    open_source,
    prepare_root,
    write_identity,
)
from .native import INIT_NAME, JOB_STAGE_ERROR_FD, JOB_STAGE_NAME
from .netns import loopback_up

_HIGH_FD = 100
STATUS = struct.Struct("i")


@dataclass(frozen=True)
class HostContext:
    """What the spawner prepares once and every job shares."""

    cgroups: CgroupHost
    seccomp_program: bytes
    new_root: str
    job_stage: int  # native/jw-job, opened once: a rebuild of the package never reaches a running engine
    native_init: int  # native/jw-init, the same; both checked as opened (native.open_trusted)


@dataclass(frozen=True)
class InitLines:
    """The init's lines to its supervisor: the job (spec and stdio), 'placed in the v2 cgroup' and
    'limits set' in; setup errors and the job's wait status out."""

    job: socket.socket
    error_fd: int
    status_fd: int
    limits_set_fd: int
    placed_fd: int


def _report(fd: int, message: str) -> None:
    """A setup error on the error pipe, with its NUL (the native stages' messages end so too)."""
    try:
        os.write(fd, message.encode(errors="replace")[:4000] + b"\0")
    except OSError:
        pass


def _set_oom_score_adj(value: int) -> bool:
    """Spare the init from the OOM killer; lowering needs CAP_SYS_RESOURCE, which a host may withhold."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        return False
    return True


def _open_binds(spec: LaunchSpec) -> list[Bind]:
    """Open every client-named source with the requester's permissions, before any mount."""
    binds = []
    wanted = [(p, p, False, True) for p in spec.python_prefixes]
    wanted += [(m.source, m.destination, m.rw, False) for m in spec.mounts]
    with acting_as(spec.requester_uid, spec.requester_gid, spec.requester_groups):
        for source, destination, rw, prefix in wanted:
            fd, is_dir = open_source(source)
            binds.append(Bind(fd, destination, rw, is_dir, or_where_resolved=prefix))
    return binds


def rehearse_parse() -> LaunchSpec:
    """Parse a job as a real one is parsed, before any job asks. A forked process copies each page
    it shares with its parent at its first write there (reference counts, the allocator): some 250
    pages for a parse, about a millisecond better spent while a standby waits than while a job starts."""
    return LaunchSpec.from_dict(json.loads(json.dumps({"spec": LaunchSpec(["true"]).to_dict()}))["spec"])


def _normal_priority() -> None:
    """Prepared (at the idle priority its standby is prepared at): wait for the job, and run it, at
    the normal one, so neither waits behind every running job on a busy host."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _rehearse_finish(new_root: str) -> None:
    """The start of _finish_sandbox for a sample job (see rehearse_parse): its order for the job
    stage made, its binds opened as its requester, and its identity files written (a job's own
    replace those that differ: mounts.write_identity). Best effort, as every rehearsal: one that
    fails costs the job time, nothing else."""
    with contextlib.suppress(Exception):
        spec = rehearse_parse()
        _job_order(spec, reset_oom=True)
        for bind in _open_binds(spec):
            os.close(bind.fd)
        plan = RootPlan(new_root, spec.uid, spec.gid, spec.user, spec.hostname, DEFAULT_TMP_MB, None, [], False)
        write_identity(plan)


def _receive_job(job: socket.socket) -> tuple[bytes, list[int]]:
    """Wait for the job (spec and stdio: stdin, stdout, stderr and, with display, the display pipe);
    a closed line means there will be none."""
    message, stdio, _, _ = socket.recv_fds(job, MAX_LAUNCH_MESSAGE, DISPLAY_FD + 1)
    if not message:
        os._exit(0)
    job.close()
    return message, stdio


def _wait_for(fd: int) -> None:
    """One byte from the supervisor or the init says go; a closed pipe says stop here."""
    if os.read(fd, 1) != b"1":
        os._exit(0)
    os.close(fd)


def _finish_sandbox(
    spec: LaunchSpec, tree: Tree, new_root: str, work_device: str | None, mapper: UserNamespaceChild
) -> None:
    binds = _open_binds(spec)
    plan = RootPlan(
        new_root,
        spec.uid,
        spec.gid,
        spec.user,
        spec.hostname,
        DEFAULT_TMP_MB if spec.limits.tmp_mb is None else spec.limits.tmp_mb,
        spec.work_dir,
        binds,
        spec.network is NetworkMode.HOST,
        spec.link.resolv_conf() if spec.link else None,
        work_device,
        spec.limits.disk_mb,
        requester_uid=spec.requester_uid,
        requester_gid=spec.requester_gid,
        mapper=mapper,
    )
    if not (binds and plan.maps_ids):
        mapper.end()  # not needed: it exits while the root is finished
    finish_root(tree, plan)
    mapper.reap()  # gone before the job runs: it counts toward the job's process limit
    for bind in binds:
        os.close(bind.fd)
    libc.sethostname(spec.hostname)


def init_main(cgroup: JobCgroup, context: HostContext, lines: InitLines) -> NoReturn:
    """Pid 1 of the job's pid namespace: prepare the sandbox, take a job, start it, reap, report.

    Everything before _receive_job happens before any job asks (the spawner keeps standbys): cgroup
    placement, namespaces, the shared part of the root, and the fork of the job process, which
    waits, with no user code, until the root is finished and the limits are set.
    """
    try:
        cgroup.join()
        lines.job.send(b"joined")
        host_network = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        libc.unshare(libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET)
        loopback_up()
        tree = prepare_root(context.new_root)
        spared = _set_oom_score_adj(-1000)
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
        _wait_for(lines.placed_fd)
        # Before the shedding: the job stage's exec keeps root's capabilities only with a bounding
        # set; it sheds the same itself (native/job.c).
        job_pid, job_line, ready_w = _fork_job(context, lines, host_network)
        # Before the shedding too: the mapper's exec keeps the capabilities its unshare may need.
        mapper = UserNamespaceChild(context.native_init)
        _shed_inheritable_privileges()
        _rehearse_finish(context.new_root)
        _normal_priority()
        message, stdio = _receive_job(lines.job)
        request = json.loads(message)
        spec = LaunchSpec.from_dict(request["spec"])
        socket.send_fds(job_line, [_job_order(spec, spared)], stdio)
        job_line.close()
        if spec.network is NetworkMode.HOST:
            libc.setns(host_network, libc.CLONE_NEWNET)
        os.close(host_network)
        _finish_sandbox(spec, tree, context.new_root, request.get("work_device"), mapper)
        _wait_for(lines.limits_set_fd)
    except BaseException as exc:
        _report(lines.error_fd, f"sandbox setup failed: {exc}")
        os._exit(125)
    _become_native_init(context.native_init, job_pid, lines, ready_w)


def _fork_job(context: HostContext, lines: InitLines, host_network: int) -> tuple[int, socket.socket, int]:
    """Fork the job process ahead of its job; it is born inside every job cgroup and execs the native
    job stage (native/job.c) at once, so the command's exec later tears down a few pages, not a
    copy of this Python process (~0.1 ms a MiB here)."""
    job_ours, job_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fit_launch_messages(job_ours, job_theirs)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            fds = [job_theirs.fileno(), ready_r, lines.error_fd, host_network]
            _exec_job_stage(context.job_stage, fds, context.seccomp_program)
        except BaseException as exc:
            _report(lines.error_fd, f"sandbox setup failed: could not exec the job stage: {exc}")
        os._exit(127)
    job_theirs.close()
    os.close(ready_r)
    return pid, job_ours, ready_w


def _exec_job_stage(job_stage: int, fds: list[int], seccomp_program: bytes) -> NoReturn:
    """Exec jw-job (by its fd) with its lines at fds 3-6 (job line, ready, error pipe, host
    network) and the seccomp program at 7, each in job.c's order; nothing else but 0-2 goes with it."""
    program = os.memfd_create("jw-seccomp", os.MFD_CLOEXEC)
    os.write(program, seccomp_program)
    os.lseek(program, 0, os.SEEK_SET)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD) for fd in [*fds, program, job_stage]]
    for target, fd in enumerate(high[:-1], start=3):
        os.dup2(fd, target, inheritable=True)
    stage = high[-1]  # close-on-exec: fexecve of a binary needs no fd after the exec
    os.closerange(3 + len(fds) + 1, stage)
    os.closerange(stage + 1, os.sysconf("SC_OPEN_MAX"))
    try:
        os.execve(stage, [JOB_STAGE_NAME], {})
    except OSError as exc:
        _report(JOB_STAGE_ERROR_FD, f"sandbox setup failed: could not exec the job stage: {exc}")
    os._exit(127)


def _job_order(spec: LaunchSpec, reset_oom: bool) -> bytes:
    """What jw-job needs of the job, as its NUL-terminated fields (job.c): uid, gid, host network,
    reset the OOM score, display, cwd, user, then argv and env, each counted. No field may hold a
    NUL (the spec's checks refuse them; checked again, so no field can shift into the next)."""
    env = job_env(spec)
    fields = [
        str(spec.uid),
        str(spec.gid),
        str(int(spec.network is NetworkMode.HOST)),
        str(int(reset_oom)),
        str(int(spec.display)),
        spec.cwd,
        spec.user,
        str(len(spec.argv)),
        *spec.argv,
        str(len(env)),
        *(f"{name}={value}" for name, value in env.items()),
    ]
    encoded = [os.fsencode(field) for field in fields]
    if any(b"\0" in field for field in encoded):
        raise SetupError("the command or its environment holds a NUL byte")
    return b"\0".join(encoded) + b"\0"


def _become_native_init(native_init: int, job_pid: int, lines: InitLines, ready_w: int) -> NoReturn:
    """Exec the native init (native/init.c), which holds nothing of the job's (its output ends when
    its processes end), then releases the job (ready_w), reaps every orphan and, when the job
    process ends, writes its wait status to the status line (a SOCK_SEQPACKET socket) and exits,
    ending the namespace. The job is released only by it: a failed exec leaves the job process to
    read EOF and end, so no command runs without the native init in place. The error pipe goes with
    it: a step of its that fails is reported there, and it closes the pipe once the job is
    released, so the pipe's EOF tells the supervisor the job started (the job stage's copy closes
    at the command's exec)."""
    fds = [lines.status_fd, ready_w, lines.error_fd]
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        os.execve(native_init, [INIT_NAME, str(job_pid), *map(str, fds)], {})
    except OSError as exc:
        _report(lines.error_fd, f"sandbox setup failed: could not exec the native init: {exc}")
    os._exit(125)


def _reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, the spawner SIGCHLD; ignored signals survive exec."""
    for signum in range(1, signal.NSIG):
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _shed_inheritable_privileges() -> None:
    """What the init's native init inherits at exec: no capability bounding set, no inheritable
    capabilities, default signals, no core dumps (the job stage sheds the same for the job:
    native/job.c; the native init drops every capability itself)."""
    libc.empty_bounding_set()
    libc.clear_inheritable_capabilities()
    _reset_signals()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
