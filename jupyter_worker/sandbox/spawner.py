"""The spawner: a single-threaded, pre-imported process that forks one supervisor per job.

Namespaces and fork do not mix with threads, and a fresh Python costs tens of milliseconds, so the
caller (an asyncio daemon, a test) starts this process once and sends it launch requests with the
job's stdio and control socket attached (SCM_RIGHTS). It keeps a few standby supervisors whose
sandboxes are already prepared and hands each request to one, then forks a replacement. Started as
`python -I -m jupyter_worker.sandbox.spawner FD CGROUP_ROOT RUNTIME_DIR POOL_SIZE`.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass

from ..spec import SpecError
from .cgroups import CgroupError, CgroupHost
from .launch import HostContext
from .launch_spec import LaunchSpec
from .seccomp import compile_filter
from .supervisor import standby

_MAX_REQUEST = 1 << 20


def prepare(cgroup_root: str, runtime_dir: str) -> HostContext:
    """Everything jobs share, done once: cgroup layout and delegation, the seccomp program."""
    host = CgroupHost.detect(cgroup_root)
    try:
        host.enable_v2_controllers()
    except (CgroupError, OSError) as exc:
        host.refuse_v2_controllers(str(exc))
    new_root = os.path.join(runtime_dir, "root")
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    os.makedirs(new_root, mode=0o700, exist_ok=True)
    return HostContext(host, compile_filter(), new_root)


@dataclass
class _Standby:
    pid: int
    link: socket.socket


def serve(sock: socket.socket, cgroup_root: str, runtime_dir: str, pool_size: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = prepare(cgroup_root, runtime_dir)
    gc.freeze()
    pool: list[_Standby] = []
    for _ in range(pool_size):
        pool.append(_new_standby(context, sock, pool))
    hello = {"ready": True, "cgroup_mode": context.cgroups.mode, "problem": context.cgroups.problem}
    sock.send(json.dumps(hello).encode())
    while True:
        message, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, 4)
        if not message:
            break
        reply = _launch(message, fds, pool[0])
        sock.send(json.dumps(reply).encode())
        if "pid" in reply:
            pool.pop(0).link.close()
            pool.append(_new_standby(context, sock, pool))
    _shut_down(pool)


def _launch(message: bytes, fds: list[int], standby: _Standby) -> dict:
    """Check the request and hand it, with its descriptors, to a prepared standby."""
    try:
        if len(fds) != 4:
            raise SpecError("a launch needs stdin, stdout, stderr and a control socket")
        LaunchSpec.from_dict(json.loads(message))
        socket.send_fds(standby.link, [message], fds)
    except (SpecError, ValueError, TypeError, OSError) as exc:
        return {"error": str(exc)}
    finally:
        for fd in fds:
            os.close(fd)
    return {"pid": standby.pid}


def _new_standby(context: HostContext, sock: socket.socket, pool: list[_Standby]) -> _Standby:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            for other in [sock, ours, *(s.link for s in pool)]:
                other.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            standby(context, theirs)
        finally:
            os._exit(0)
    theirs.close()
    return _Standby(pid, ours)


def _shut_down(pool: list[_Standby]) -> None:
    """Standbys take their sandboxes apart when told there is no job; wait until they are gone."""
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
