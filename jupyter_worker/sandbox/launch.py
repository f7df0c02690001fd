"""The two processes inside the sandbox: its init (pid 1) and the job it starts.

The init joins the job's cgroups before anything else, enters fresh mount, uts, ipc and net
namespaces and builds the shared part of the root, all before a job exists; given a job, it adds
the job's own mounts, pivots, enters a fresh cgroup namespace and forks the job. The job drops every
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
from .launch_spec import DISPLAY_FD, LaunchSpec, job_env
from .mounts import (
    DEFAULT_TMP_MB,
    Bind,
    RootPlan,
    Tree,
    UserNamespaceChild,
    acting_as,
    finish_root,
    open_source,
    prepare_root,
    write_identity,
)
from .native import INIT_NAME, open_init
from .netns import loopback_up
from .seccomp import LoadableFilter

_HIGH_FD = 100
STATUS = struct.Struct("i")


@dataclass(frozen=True)
class HostContext:
    """What the spawner prepares once and every job shares."""

    cgroups: CgroupHost
    seccomp_program: bytes
    new_root: str


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
    try:
        os.write(fd, message.encode(errors="replace")[:4000])
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
    """The start of _finish_sandbox for a sample job (see rehearse_parse): its binds opened as its
    requester, and its identity files written (a job's own replace them). Best effort, as every
    rehearsal: one that fails costs the job time, nothing else."""
    with contextlib.suppress(Exception):
        spec = rehearse_parse()
        for bind in _open_binds(spec):
            os.close(bind.fd)
        plan = RootPlan(new_root, spec.uid, spec.gid, spec.user, spec.hostname, DEFAULT_TMP_MB, None, [], False)
        write_identity(plan)


def _receive_job(job: socket.socket) -> tuple[bytes, list[int]]:
    """Wait for the job (spec and stdio: stdin, stdout, stderr and, with display, the display pipe);
    a closed line means there will be none."""
    message, stdio, _, _ = socket.recv_fds(job, 1 << 20, DISPLAY_FD + 1)
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


@dataclass(frozen=True)
class _JobLines:
    """What the job process gets from its init: the job (forwarded), 'the sandbox is ready', the
    host's network namespace (for network 'host'), and whether the init's OOM shield needs undoing."""

    job: socket.socket
    ready_fd: int
    host_network_fd: int
    reset_oom: bool


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
        native_init = open_init()
        spared = _set_oom_score_adj(-1000)
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
        _shed_inheritable_privileges()
        _wait_for(lines.placed_fd)
        job_pid, job_line, ready_w = _fork_job(context, lines, host_network, spared)
        mapper = UserNamespaceChild()
        _rehearse_finish(context.new_root)
        _normal_priority()
        message, stdio = _receive_job(lines.job)
        socket.send_fds(job_line, [message], stdio)
        job_line.close()
        request = json.loads(message)
        spec = LaunchSpec.from_dict(request["spec"])
        if spec.network is NetworkMode.HOST:
            libc.setns(host_network, libc.CLONE_NEWNET)
        os.close(host_network)
        _finish_sandbox(spec, tree, context.new_root, request.get("work_device"), mapper)
        _wait_for(lines.limits_set_fd)
        os.write(ready_w, b"1")
        os.close(ready_w)
    except BaseException as exc:
        _report(lines.error_fd, f"sandbox setup failed: {exc}")
        os._exit(125)
    _become_native_init(native_init, job_pid, lines)


def _fork_job(
    context: HostContext, lines: InitLines, host_network: int, reset_oom: bool
) -> tuple[int, socket.socket, int]:
    """Fork the job process ahead of its job; it is born inside every job cgroup."""
    job_ours, job_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    syscall_filter = LoadableFilter(context.seccomp_program)
    pid = os.fork()
    if pid == 0:
        job_ours.close()
        os.close(ready_w)
        lines.job.close()
        job_main(_JobLines(job_theirs, ready_r, host_network, reset_oom), lines.error_fd, syscall_filter)
    job_theirs.close()
    os.close(ready_r)
    return pid, job_ours, ready_w


def _become_native_init(native_init: int, job_pid: int, lines: InitLines) -> NoReturn:
    """Exec the native init (native/init.c), which holds nothing of the job's (its output ends when
    its processes end), reaps every orphan and, when the job process ends, writes its wait status
    to the status pipe and exits, ending the namespace. The error pipe is close-on-exec: its EOF
    tells the supervisor the exec happened; otherwise the supervisor reads why it did not."""
    os.set_inheritable(lines.status_fd, True)
    try:
        os.execve(native_init, [INIT_NAME, str(job_pid), str(lines.status_fd)], {})
    except OSError as exc:
        _report(lines.error_fd, f"sandbox setup failed: could not exec the native init: {exc}")
    os._exit(125)


def _arrange_fds(stdio: list[int], error_fd: int) -> int:
    """0-2 become the job's stdio, DISPLAY_FD its display pipe if it has one (both inherited), the
    next fd the close-on-exec error pipe; everything else is closed. Returns the error pipe's fd."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD) for fd in [*stdio, error_fd]]
    for target, fd in enumerate(high[:-1]):
        os.dup2(fd, target, inheritable=True)
    error = len(high) - 1
    os.dup2(high[-1], error, inheritable=False)
    os.closerange(error + 1, os.sysconf("SC_OPEN_MAX"))
    return error


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
    """What the job inherits at fork: no capability bounding set, default signals, no core dumps."""
    libc.empty_bounding_set()
    _reset_signals()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _drop_privileges(spec: LaunchSpec) -> None:
    os.setgroups([])
    os.setresgid(spec.gid, spec.gid, spec.gid)
    os.setresuid(spec.uid, spec.uid, spec.uid)
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)


def job_main(lines: _JobLines, error_fd: int, syscall_filter: LoadableFilter) -> NoReturn:
    """Become the job: own session, no privileges, scrubbed environment, seccomp, exec."""
    spec = None
    try:
        with contextlib.suppress(Exception):
            job_env(rehearse_parse())  # best effort
        _normal_priority()
        message, stdio = _receive_job(lines.job)
        spec = LaunchSpec.from_dict(json.loads(message)["spec"])
        if len(stdio) != (DISPLAY_FD + 1 if spec.display else 3):
            raise RuntimeError(f"the job came with {len(stdio)} fds for its output, display {spec.display}")
        env = job_env(spec)
        _wait_for(lines.ready_fd)
        if spec.network is NetworkMode.HOST:
            libc.setns(lines.host_network_fd, libc.CLONE_NEWNET)
        os.close(lines.host_network_fd)
        libc.unshare(libc.CLONE_NEWCGROUP)
        os.setsid()
        if lines.reset_oom:
            _set_oom_score_adj(0)
        error_fd = _arrange_fds(stdio, error_fd)
        _drop_privileges(spec)
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        _enter_cwd(spec.cwd, spec.user)
        os.umask(0o022)
        syscall_filter.install()
        os.execvpe(spec.argv[0], spec.argv, env)
    except FileNotFoundError:
        _report(error_fd, f"command not found: {spec.argv[0] if spec else '?'}")
    except PermissionError:
        _report(error_fd, f"permission denied: {spec.argv[0] if spec else '?'}")
    except BaseException as exc:
        _report(error_fd, f"could not start the command: {exc}")
    os._exit(127)


def _enter_cwd(cwd: str, user: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as exc:  # who was refused: root's jobs run as another user (docs/sandbox.md)
        raise RuntimeError(f"working directory {cwd}: {exc.strerror} (to {user}, whom the job runs as)") from None
