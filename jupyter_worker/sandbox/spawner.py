"""The spawner: a single-threaded, pre-imported process that forks one supervisor per job.

Namespaces and fork do not mix with threads, and a fresh Python costs tens of milliseconds, so the
caller (an asyncio daemon, a test) starts this process once and sends it launch requests with the
job's stdio and control socket attached (SCM_RIGHTS). It keeps a few standby supervisors whose
sandboxes are already prepared and hands each request to one; once that job has started, it forks
a replacement (preparing one during a start would contend for the kernel's mount and cgroup locks).
Started as
`python -I -c ... FD CGROUP_ROOT RUNTIME_DIR POOL_SIZE` by engine.Sandbox.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SpecError
from .cgroups import CgroupError, CgroupHost
from .launch import HostContext
from .launch_spec import MAX_LAUNCH_MESSAGE, fit_launch_messages
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


@dataclass
class _Standby:
    pid: int
    link: socket.socket


def serve(sock: socket.socket, cgroup_root: str, runtime_dir: str, pool_size: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        context = prepare(cgroup_root, runtime_dir)
    except UntrustedBinary as exc:
        sock.send(json.dumps({"ready": False, "error": str(exc)}).encode())  # the engine's one error
        return
    rehearse_shared(context)
    gc.freeze()
    pool = [_new_standby(context, sock, []) for _ in range(pool_size)]
    starting: list[socket.socket] = []
    hello = {"ready": True, "cgroup_mode": context.cgroups.mode, "problem": context.cgroups.problem}
    sock.send(json.dumps(hello).encode())
    while True:
        ready = select.select([sock, *starting], [], [])[0]
        for link in ready:
            if link is not sock:
                starting.remove(link)
                link.close()
                if len(pool) < pool_size:  # a burst that emptied the pool must not grow it for good
                    pool.append(_new_standby(context, sock, [*pool, *starting]))
        if sock not in ready:
            continue
        message, fds, _, _ = socket.recv_fds(sock, MAX_LAUNCH_MESSAGE, 5)
        if not message:
            break
        reply = _launch(message, fds, pool, lambda: _new_standby(context, sock, [*pool, *starting]))
        sock.send(json.dumps(reply).encode())
        if "pid" in reply:
            starting.append(pool.pop(0).link)
    _shut_down(pool, starting)


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


def _new_standby(context: HostContext, sock: socket.socket, others: list) -> _Standby:
    """Fork a standby; it must not hold the caller's socket or any other standby's link."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fit_launch_messages(ours, theirs)
    pid = os.fork()
    if pid == 0:
        try:
            for other in [sock, ours, *(o.link if isinstance(o, _Standby) else o for o in others)]:
                other.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            standby(context, theirs)
        finally:
            os._exit(0)
    theirs.close()
    return _Standby(pid, ours)


def _shut_down(pool: list[_Standby], starting: list[socket.socket]) -> None:
    """Standbys take their sandboxes apart when told there is no job; wait until they are gone."""
    for link in starting:
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
