"""The sandbox engine's Python API: start the spawner once, then launch, watch and stop jobs.

    with Sandbox() as sandbox:
        job = sandbox.launch(LaunchSpec(["python3", "-c", "print(1)"]), stdout=fd)
        outcome = job.wait()

Needs root. Safe to call from a threaded or asyncio program: all forking happens in the spawner.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import SpecError
from ..spec import Outcome, Usage
from .cgroups import CgroupHost
from .control import unix_address
from .launch_spec import MAX_LAUNCH_MESSAGE, LaunchSpec, fit_launch_messages
from .native import init_problem

RUNTIME_PARENT = "/run"
RUNTIME_PREFIX = "jupyter-worker-sandbox-"
# The spawner runs this very copy of the package, whatever the environment would import first;
# -I keeps PYTHONPATH and the working directory out of a root process.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SPAWNER_ENTRY = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from jupyter_worker.sandbox.spawner import main; main()"
)
DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"


class SandboxError(RuntimeError):
    """The engine itself cannot work here (not root, spawner gone); not a problem of one job."""


class RunningJob:
    """A launched job: read its events, stop it, wait for its outcome."""

    def __init__(self, control: socket.socket, name: str):
        self.control = control
        self.name = name
        self.started: dict | None = None
        self.usage = Usage()
        self.outcome: Outcome | None = None

    @classmethod
    def attach(cls, control_path: str, name: str) -> RunningJob:
        """Reconnect to a captured job's supervisor (see Sandbox.launch_captured); OSError if it is gone."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            with unix_address(control_path) as address:
                sock.connect(address)
        except OSError:
            sock.close()
            raise
        return cls(sock, name)

    def fileno(self) -> int:
        return self.control.fileno()

    def events(self, timeout: float | None = None) -> Iterator[dict]:
        """Events as they come (started, metrics, exit); ends after exit or when timeout passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.outcome is None:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not select.select([self.control], [], [], wait)[0]:
                return
            event = self.handle(self.control.recv(1 << 20))
            yield event

    def handle(self, data: bytes) -> dict:
        """Take one raw event off the control socket (also for callers that poll it themselves)."""
        if not data:
            raise SandboxError(f"the supervisor of job {self.name} ended without an outcome")
        event = json.loads(data)
        if event["event"] == "started" or (event["event"] == "attached" and event.get("started")):
            self.started = event
        elif event["event"] == "metrics":
            self.usage = Usage(**event["usage"])
        elif event["event"] == "exit":
            self.outcome = Outcome.from_dict(event["outcome"])
            self.usage = self.outcome.usage
        return event

    def wait(self, timeout: float | None = None) -> Outcome | None:
        for _ in self.events(timeout):
            pass
        return self.outcome

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM the job's processes, then after the grace period SIGKILL what is left."""
        if self.outcome is not None:
            return
        request = {"op": "stop"} if grace_s is None else {"op": "stop", "grace_s": grace_s}
        try:
            self.control.send(json.dumps(request).encode())
        except OSError:
            pass

    def close(self) -> None:
        self.control.close()

    def __enter__(self) -> RunningJob:
        return self

    def __exit__(self, *exc: object) -> None:
        """Leaving the block ends the job: stopped at once if it still runs (and is still ours)."""
        if self.outcome is None and self.control.fileno() != -1:
            self.stop(grace_s=0)
            self.wait()
        self.close()


@dataclass
class CaptureFiles:
    """Descriptors a captured job's supervisor takes over (see Sandbox.launch_captured)."""

    log: int
    result: int
    listener: int
    log_cap: int


@dataclass
class RunResult:
    outcome: Outcome
    stdout: bytes
    stderr: bytes


class Sandbox:
    """Owns one spawner process; launch() may be called from any thread."""

    def __init__(self, cgroup_root: str = DEFAULT_CGROUP_ROOT, runtime_dir: str | None = None, standbys: int = 2):
        """runtime_dir: where the spawner keeps its folders; by default a private one under /run,
        made at start and removed at close, never a folder shared with others (such as the executor
        socket's, which must stay open to every user)."""
        self.cgroup_root = cgroup_root
        self.runtime_dir = runtime_dir or ""
        self._own_runtime_dir = runtime_dir is None
        self.standbys = standbys
        self.info: dict = {}
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise SandboxError("the sandbox engine needs root; start the executor as root")
        if problem := init_problem():
            raise SandboxError(problem)
        if self._own_runtime_dir:
            self.runtime_dir = tempfile.mkdtemp(prefix=RUNTIME_PREFIX, dir=RUNTIME_PARENT)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fit_launch_messages(ours, theirs)
        command = [
            sys.executable,
            "-I",
            "-c",
            _SPAWNER_ENTRY,
            _PACKAGE_PARENT,
            str(theirs.fileno()),
            self.cgroup_root,
            self.runtime_dir,
            str(self.standbys),
        ]
        self._process = subprocess.Popen(
            command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True
        )
        theirs.close()
        self._sock = ours
        hello = ours.recv(65536)
        if not hello:
            self.close()
            raise SandboxError("the sandbox spawner failed to start (see its output above)")
        self.info = json.loads(hello)
        if "error" in self.info:  # the spawner refused (an untrusted native binary): one clear error
            self.close()
            raise SandboxError(self.info["error"])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            self._process.wait()
            self._process = None
        if self._own_runtime_dir and self.runtime_dir:
            _remove_empty_folders(self.runtime_dir)
            self.runtime_dir = ""

    def launch(
        self, spec: LaunchSpec, stdin: int | None = None, stdout: int | None = None, stderr: int | None = None
    ) -> RunningJob:
        """Start a job; its outcome (including a refused limit) arrives through the returned handle."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            stdio = [fd if fd is not None else null for fd in (stdin, stdout, stderr)]
            return self._send({"spec": spec.to_dict()}, stdio, spec)
        finally:
            os.close(null)

    def launch_captured(self, spec: LaunchSpec, capture: CaptureFiles) -> RunningJob:
        """Start a job whose supervisor owns its output and outcome, so both outlive this process.

        The supervisor appends the job's stdout and stderr to capture.log (output.read_chunks reads
        it), writes the outcome as JSON to capture.result, and accepts further control connections
        on capture.listener (a listening SOCK_SEQPACKET socket) after this one is gone.
        """
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fds = [null, capture.log, capture.result, capture.listener]
            return self._send({"spec": spec.to_dict(), "capture": {"log_cap": capture.log_cap}}, fds, spec)
        finally:
            os.close(null)

    def _send(self, request: dict, fds: list[int], spec: LaunchSpec) -> RunningJob:
        if self._sock is None:
            raise SandboxError("the sandbox is not started")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                message = json.dumps(request).encode()
                if len(message) > MAX_LAUNCH_MESSAGE - 4096:  # the supervisor adds a little on its way
                    raise SpecError("the command, its environment and its mounts are too large in all")
                socket.send_fds(self._sock, [message], [*fds, theirs.fileno()])
                reply = self._sock.recv(65536)
        finally:
            theirs.close()
        if not reply:
            ours.close()
            raise SandboxError("the sandbox spawner has gone")
        answer = json.loads(reply)
        if "error" in answer:
            ours.close()
            raise SpecError(answer["error"])
        return RunningJob(ours, spec.name)

    def remove_leftovers(self, name: str) -> bool:
        """Kill and remove what is left of a job whose supervisor is gone, by the cgroup name its
        result file gave; True if anything was."""
        cgroup = CgroupHost.detect(self.cgroup_root).find_job(name)
        if cgroup is None:
            return False
        cgroup.kill()
        cgroup.remove()
        return True

    def run(self, spec: LaunchSpec, stdin: bytes = b"") -> RunResult:
        """Run to the end and return the outcome with the captured output."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
            inp.write(stdin)
            inp.seek(0)
            with self.launch(spec, inp.fileno(), out.fileno(), err.fileno()) as job:
                outcome = job.wait()
            out.seek(0)
            err.seek(0)
            assert outcome is not None
            return RunResult(outcome, out.read(), err.read())


def _remove_empty_folders(runtime_dir: str) -> None:
    """The spawner's folders, once its standbys are gone; rmdir only, so nothing mounted or left
    inside is ever deleted through them."""
    for folder in (os.path.join(runtime_dir, "root"), runtime_dir):
        try:
            os.rmdir(folder)
        except OSError:
            pass
