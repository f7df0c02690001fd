"""The spawner: a single-threaded, pre-imported process that forks one supervisor per job.

Namespaces and fork do not mix with threads, and a fresh Python costs tens of milliseconds, so the
caller (an asyncio daemon, a test) starts this process once and sends it launch requests with the
job's stdio and control socket attached (SCM_RIGHTS). Started as
`python -I -m jupyter_worker.sandbox.spawner FD CGROUP_ROOT RUNTIME_DIR`.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys

from ..spec import SpecError
from .cgroups import CgroupError, CgroupHost
from .launch import HostContext
from .launch_spec import LaunchSpec
from .seccomp import compile_filter
from .supervisor import Channel, supervise

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


def serve(sock: socket.socket, cgroup_root: str, runtime_dir: str) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = prepare(cgroup_root, runtime_dir)
    gc.freeze()
    hello = {"ready": True, "cgroup_mode": context.cgroups.mode, "problem": context.cgroups.problem}
    sock.send(json.dumps(hello).encode())
    while True:
        message, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, 4)
        if not message:
            return
        sock.send(json.dumps(_launch(message, fds, sock, context)).encode())


def _launch(message: bytes, fds: list[int], sock: socket.socket, context: HostContext) -> dict:
    try:
        if len(fds) != 4:
            raise SpecError("a launch needs stdin, stdout, stderr and a control socket")
        spec = LaunchSpec.from_dict(json.loads(message))
    except (SpecError, ValueError, TypeError) as exc:
        for fd in fds:
            os.close(fd)
        return {"error": str(exc)}
    pid = os.fork()
    if pid == 0:
        _become_supervisor(sock, spec, context, fds)
    for fd in fds:
        os.close(fd)
    return {"pid": pid}


def _become_supervisor(sock: socket.socket, spec: LaunchSpec, context: HostContext, fds: list[int]) -> None:
    try:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        supervise(spec, context, fds[:3], Channel(socket.socket(fileno=fds[3])))
    finally:
        os._exit(0)


def main() -> None:
    fd, cgroup_root, runtime_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    serve(socket.socket(fileno=fd), cgroup_root, runtime_dir)


if __name__ == "__main__":
    main()
