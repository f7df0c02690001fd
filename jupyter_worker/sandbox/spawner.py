"""The spawner: a single-threaded, pre-imported process that forks one supervisor per job.

Namespaces and fork do not mix with threads, and a fresh Python costs tens of milliseconds, so the
caller (an asyncio daemon, a test) starts this process once and sends it launch requests with the
job's stdio and control socket attached (SCM_RIGHTS). It keeps a few standby supervisors whose
sandboxes are already prepared and hands each request to one; once that job has started, it forks
a replacement (preparing one during a start would contend for the kernel's mount and cgroup locks).
A standby whose job has started hands it over here; the spawner keeps a copy of its descriptors
(keeper.Keeper) and passes it on to its monitor (monitor.Monitor), one process for every running
job. Started as
`python -I -c ... FD CGROUP_ROOT RUNTIME_DIR POOL_SIZE` by engine.Sandbox.
"""

from __future__ import annotations

import errno
import functools
import gc
import json
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SpecError
from . import libc
from .cgroups import CgroupError, CgroupHost
from .keeper import Keeper, close_all_but, wait_readable
from .launch import HostContext
from .launch_spec import MAX_LAUNCH_MESSAGE, fit_launch_messages
from .monitor import MAX_HANDOVER_FDS
from .native import INIT_PATH, JOB_STAGE_PATH, UntrustedBinary, open_trusted
from .seccomp import compile_filter
from .supervisor import rehearse_shared, standby


def prepare(cgroup_root: str, runtime_dir: str) -> HostContext:
    """Everything jobs share, done once: cgroup layout and delegation, the seccomp program, and the
    native binaries, opened once and checked on what was opened (open_trusted): no standby opens
    them by path, so a binary swapped after the check never runs."""
    host = CgroupHost.detect(cgroup_root)
    try:
        host.enable_v2_controllers()
    except (CgroupError, OSError) as exc:
        host.refuse_v2_controllers(str(exc))
    new_root = os.path.join(runtime_dir, "root")
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    os.makedirs(new_root, mode=0o700, exist_ok=True)
    job_stage = open_trusted(JOB_STAGE_PATH)
    native_init = open_trusted(INIT_PATH)
    return HostContext(host, compile_filter(), new_root, job_stage, native_init)


SHUT_DOWN_WAIT_S = 30.0  # for a start under way when the spawner is told to stop


@dataclass
class _Standby:
    pid: int
    link: socket.socket


def serve(sock: socket.socket, cgroup_root: str, runtime_dir: str, pool_size: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A handed-over job's init outlives its standby: orphaned, it becomes ours, and is reaped
    # (SIGCHLD ignored) when it ends.
    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    job_fd_limit = _raise_fd_limit()
    try:
        context = prepare(cgroup_root, runtime_dir)
    except UntrustedBinary as exc:
        sock.send(json.dumps({"ready": False, "error": str(exc)}).encode())  # the engine's one error
        return
    rehearse_shared(context)
    gc.freeze()
    keeper = Keeper(context.cgroups)
    keeper.start_monitor()
    fork = functools.partial(_new_standby, context, job_fd_limit)
    pool = [fork() for _ in range(pool_size)]
    starting: dict[int, socket.socket] = {}
    hello = {"ready": True, "cgroup_mode": context.cgroups.mode, "problem": context.cgroups.problem}
    sock.send(json.dumps(hello).encode())
    while True:
        ready = wait_readable([sock.fileno(), *starting, *keeper.fds()])
        for fd in ready:
            if fd in starting and _from_standby(starting[fd], keeper):
                starting.pop(fd).close()
                if len(pool) < pool_size:  # a burst that emptied the pool must not grow it for good
                    pool.append(fork())
            elif fd != sock.fileno():
                keeper.readable(fd)
        if sock.fileno() not in ready:
            continue
        message, fds, _, _ = socket.recv_fds(sock, MAX_LAUNCH_MESSAGE, 5)
        if not message:
            break
        reply = _launch(message, fds, pool, fork)
        sock.send(json.dumps(reply).encode())
        if "pid" in reply:
            link = pool.pop(0).link
            starting[link.fileno()] = link
    _shut_down(pool, list(starting.values()), keeper)
    keeper.linger()


def _from_standby(link: socket.socket, keeper: Keeper) -> bool:
    """A starting standby's line is readable: its job, handed over once started (kept, and passed
    to the monitor), or its end; True at the end (the standby's job has started, or failed to)."""
    try:
        message, fds, _, _ = socket.recv_fds(link, MAX_LAUNCH_MESSAGE, MAX_HANDOVER_FDS)
    except OSError:
        return True
    if not message:
        return True
    keeper.take(message, fds)
    return False


def _raise_fd_limit() -> int:
    """Let the spawner (and its monitor) hold every running job's descriptors; returns the limit
    as it was, which each standby puts back so that no job gets more than before."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft


def _launch(message: bytes, fds: list[int], pool: list[_Standby], fork: Callable[[], _Standby]) -> dict:
    """Hand the request, with its descriptors, to the first prepared standby, which validates it.
    A standby that is gone (its link broken: killed, or its preparation ended it) is dropped and
    the next one tried, so one dead standby does not fail every later launch."""
    try:
        if len(fds) not in (4, 5):
            raise SpecError("a launch needs stdin, stdout, stderr (or log, result, listener) and a control socket")
        for _ in range(len(pool) + 2):
            if not pool:
                pool.append(fork())
            try:
                socket.send_fds(pool[0].link, [message], fds)
            except (BrokenPipeError, ConnectionError):
                pool.pop(0).link.close()
                continue
            return {"pid": pool[0].pid}
        raise OSError(errno.EPIPE, "no standby could take the job: each one ended before it")
    except (SpecError, OSError) as exc:
        return {"error": str(exc)}
    finally:
        for fd in fds:
            os.close(fd)


def _new_standby(context: HostContext, fd_limit: int) -> _Standby:
    """Fork a standby; it holds nothing of the spawner's but its own link and the native binaries
    (not the caller's socket, no other standby's link, no running job's kept descriptors)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    fit_launch_messages(ours, theirs)
    pid = os.fork()
    if pid == 0:
        try:
            close_all_but([theirs.fileno(), context.job_stage, context.native_init])
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            standby(context, theirs)
        finally:
            os._exit(0)
    theirs.close()
    return _Standby(pid, ours)


def _shut_down(pool: list[_Standby], starting: list[socket.socket], keeper: Keeper) -> None:
    """Standbys take their sandboxes apart when told there is no job; wait until they are gone.
    A start under way is waited for, so its job is handed over and kept like every other."""
    for link in starting:
        while wait_readable([link.fileno()], SHUT_DOWN_WAIT_S) and not _from_standby(link, keeper):
            pass
        link.close()
    for item in pool:
        item.link.shutdown(socket.SHUT_WR)
    for item in pool:
        item.link.recv(1)
        item.link.close()


def main() -> None:
    fd, cgroup_root, runtime_dir, pool_size = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    serve(socket.socket(fileno=fd), cgroup_root, runtime_dir, pool_size)


if __name__ == "__main__":
    main()
