"""The local backend: jobs run on this host in the sandbox engine (Sandbox.launch_captured).

Each job's supervisor process owns the job's output (the log file in its folder) and its outcome
(the result file), and listens on a control socket in the folder, so it outlives the executor: a
restarted executor connects to it again, or reads from the result file how the job ended. A job
whose supervisor and outcome are both gone is lost; what is left of it (its cgroup, by the name
the result file gave) is killed and removed.
"""

from __future__ import annotations

import asyncio
import os
import socket

from ..sandbox import CaptureFiles, RunningJob, Sandbox, SandboxError, unix_address
from ..spec import Outcome
from .supervision import Backend, JobEvents, JobHandle, Launch, StartError

# The result file until a supervisor takes the job (its first word, the cgroup, replaces this before
# the job's command may run): found after a restart with no supervisor to reach, the job never ran.
UNSTARTED = b'{"unstarted": true}'


class LocalBackend(Backend):
    def __init__(self, sandbox: Sandbox, log_cap: int):
        self.sandbox = sandbox
        self.log_cap = log_cap

    def start(self, launch: Launch, events: JobEvents) -> JobHandle:
        return self.complete(launch, self.begin(launch), events)

    def begin(self, launch: Launch) -> RunningJob:
        """The folder, its files and the spawner's answer: blocking work, fit for a thread."""
        try:
            return self._launch(launch)
        except (OSError, SandboxError) as exc:
            raise StartError(str(exc)) from None

    def complete(self, launch: Launch, begun: RunningJob, events: JobEvents) -> JobHandle:
        return _LocalHandle(self, launch, begun, events)

    def abandon(self, begun: RunningJob) -> None:
        begun.close()

    def _launch(self, launch: Launch) -> RunningJob:
        """The supervisor gets the log and result files and the control socket's listener; the
        executor keeps only its own connection."""
        folder = launch.folder
        folder.make(launch.spec.uid, launch.spec.gid)
        flags = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        log = os.open(folder.log, flags | os.O_WRONLY | os.O_APPEND, 0o600)
        result = os.open(folder.result, flags | os.O_WRONLY | os.O_TRUNC, 0o600)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            os.write(result, UNSTARTED)
            if os.path.exists(folder.control):
                os.unlink(folder.control)
            with unix_address(folder.control) as address:
                listener.bind(address)
            os.chmod(folder.control, 0o600)
            listener.listen(8)
            return self.sandbox.launch_captured(launch.spec, CaptureFiles(log, result, listener.fileno(), self.log_cap))
        finally:
            os.close(log)
            os.close(result)
            listener.close()

    def attach(self, launch: Launch, events: JobEvents) -> JobHandle | None:
        try:
            running = RunningJob.attach(launch.folder.control, launch.id)
        except OSError:
            if launch.folder.read_result().get("unstarted"):  # the executor stopped before handing it over
                events.unstarted(launch.id)
            else:
                self.settle(launch, events)
            return None
        return _LocalHandle(self, launch, running, events)

    def settle(self, launch: Launch, events: JobEvents) -> None:
        """A job with no supervisor to talk to: its result file says how it ended, or it is lost."""
        result = launch.folder.read_result()
        if "reason" in result:
            events.exited(launch.id, Outcome.from_dict(result))
            return
        if result.get("cgroup"):
            self.sandbox.remove_leftovers(result["cgroup"])
        events.lost(launch.id, "the job's supervisor vanished without an outcome")


class _LocalHandle(JobHandle):
    """The executor's connection to a job's supervisor, read by the event loop as events arrive."""

    def __init__(self, backend: LocalBackend, launch: Launch, running: RunningJob, events: JobEvents):
        self.backend = backend
        self.launch = launch
        self.running = running
        self.events = events
        self.attached = True
        running.control.setblocking(False)
        asyncio.get_running_loop().add_reader(running.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.running.control.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            event = self.running.handle(data)
        except SandboxError:  # the supervisor went away without saying how the job ended
            self.detach()
            self.backend.settle(self.launch, self.events)
            return
        if event["event"] == "metrics":
            self.events.metrics(self.launch.id, self.running.usage)
        elif event["event"] == "exit":
            self.detach()
            self.events.exited(self.launch.id, self.running.outcome)  # type: ignore[arg-type]

    def stop(self, grace_s: float | None) -> None:
        self.running.stop(grace_s)

    def detach(self) -> None:
        if not self.attached:
            return
        self.attached = False
        try:
            asyncio.get_running_loop().remove_reader(self.running.fileno())
        except (RuntimeError, ValueError):
            pass
        self.running.close()
