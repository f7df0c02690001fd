"""The local backend: jobs run on this host in the sandbox engine (Sandbox.launch_captured).

Each job's supervisor process owns the job's output (the log file in its folder) and its outcome
(the result file), and listens on a control socket in the folder, so it outlives the executor: a
restarted executor connects to it again, or reads from the result file how the job ended. A job
whose supervisor and outcome are both gone is lost; what is left of it (its cgroup, by the name
the result file gave) is killed and removed.

A job's folder is made ahead (`Spares`): a thread keeps a few folders ready under jobs/.spare-*, with
/work, the log, the result file and the control socket's listener, so a start only renames one to
the job's id and gives /work to the job's uid (on this host's ext4, making those five files costs
the kernel more than the rest of the executor's work for a job). A stopped executor's spares
are removed at the next start; a job's folder that exists already (a start tried before a
restart) is used as it is.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import shutil
import socket
import uuid
from dataclasses import dataclass

from ..sandbox import CaptureFiles, RunningJob, Sandbox, SandboxError, unix_address
from ..spec import Outcome
from .folders import JobFolder
from .supervision import Backend, JobEvents, JobHandle, Launch, StartError

# The result file until a supervisor takes the job (its first word, the cgroup, replaces this before
# the job's command may run): found after a restart with no supervisor to reach, the job never ran.
UNSTARTED = b'{"unstarted": true}'
SPARE_PREFIX = ".spare-"
SPARES = 4  # folders kept ready: a start takes one, the thread makes the next meanwhile


@dataclass
class _Spare:
    """A folder made ahead, and its open files: the log, the result file, the listening socket."""

    dir: str
    log: int
    result: int
    listener: socket.socket

    def close(self) -> None:
        os.close(self.log)
        os.close(self.result)
        self.listener.close()


class Spares:
    """Folders made ahead by a thread of their own (see the module's docstring)."""

    def __init__(self, jobs_dir: str, count: int = SPARES):
        self.jobs_dir = jobs_dir
        self.count = count
        self.ready: collections.deque[_Spare] = collections.deque()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jupyter-worker-spares")
        self._thread.submit(self._sweep_then_fill)

    def take(self) -> _Spare | None:
        """A ready folder (None if none is); the thread makes another."""
        try:
            spare = self.ready.popleft()
        except IndexError:
            spare = None
        with contextlib.suppress(RuntimeError):  # closed: the executor is stopping
            self._thread.submit(self._fill)
        return spare

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        while self.ready:
            self.ready.popleft().close()

    def _sweep_then_fill(self) -> None:
        """A stopped executor's spares first (no job has them), then the pool."""
        with contextlib.suppress(OSError):  # as the executor makes it: root's alone
            os.makedirs(self.jobs_dir, mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            for name in os.listdir(self.jobs_dir):
                if name.startswith(SPARE_PREFIX):
                    shutil.rmtree(os.path.join(self.jobs_dir, name), ignore_errors=True)
        self._fill()

    def _fill(self) -> None:
        while len(self.ready) < self.count:
            try:
                self.ready.append(self._make())
            except OSError:  # a full disk, say: starts make their folders themselves meanwhile
                return

    def _make(self) -> _Spare:
        folder = JobFolder(os.path.join(self.jobs_dir, SPARE_PREFIX + uuid.uuid4().hex))
        folder.make(0, 0)
        try:
            log, result, listener = _open_files(folder)
        except BaseException:  # a half-made spare is not left for the next start to find
            shutil.rmtree(folder.dir, ignore_errors=True)
            raise
        return _Spare(folder.dir, log, result, listener)


def _open_files(folder: JobFolder) -> tuple[int, int, socket.socket]:
    """The log, the result file (saying unstarted) and the control socket's listener, in folder."""
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
    except BaseException:
        os.close(log)
        os.close(result)
        listener.close()
        raise
    return log, result, listener


class LocalBackend(Backend):
    def __init__(self, sandbox: Sandbox, log_cap: int, jobs_dir: str | None = None):
        """jobs_dir: where job folders are made ahead (Spares); None: each start makes its own."""
        self.sandbox = sandbox
        self.log_cap = log_cap
        self.spares = Spares(jobs_dir) if jobs_dir is not None else None

    def close(self) -> None:
        if self.spares is not None:
            self.spares.close()

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
        log, result, listener = self._folder(launch)
        try:
            return self.sandbox.launch_captured(launch.spec, CaptureFiles(log, result, listener.fileno(), self.log_cap))
        finally:
            os.close(log)
            os.close(result)
            listener.close()

    def _folder(self, launch: Launch) -> tuple[int, int, socket.socket]:
        """The job's folder, /work its uid's, and its open files: a spare renamed to the job's id
        when one is ready (and the job has no folder yet), else made now."""
        folder, spec = launch.folder, launch.spec
        spare = self.spares.take() if self.spares is not None and not os.path.exists(folder.dir) else None
        if spare is not None:
            try:
                os.rename(spare.dir, folder.dir)
                os.chown(folder.work, spec.uid, spec.gid)
                return spare.log, spare.result, spare.listener
            except OSError:
                spare.close()
                if os.path.isdir(spare.dir):  # not renamed: it is nobody's
                    shutil.rmtree(spare.dir, ignore_errors=True)
        folder.make(spec.uid, spec.gid)
        return _open_files(folder)

    def attach(self, launch: Launch, events: JobEvents) -> JobHandle | None:
        try:
            running = RunningJob.attach(launch.folder.control, launch.id)
        except OSError:
            # never handed over: the executor stopped before a supervisor had the job's files, which
            # says its result file (still unstarted), or which it had not yet made (no result file,
            # maybe no folder: killed before or within _folder); a supervisor only ever writes to a
            # result file that exists, so a missing one means no supervisor ever had the job
            folder = launch.folder
            if folder.read_result().get("unstarted") or not os.path.lexists(folder.result):
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
