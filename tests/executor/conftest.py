"""A real executor daemon per test, real local users, and a way to act as one of them."""

from __future__ import annotations

import contextlib
import os
import pickle
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from jupyter_worker import protocol
from jupyter_worker.client import Client, ExecutorUnavailable
from jupyter_worker.errors import WorkerError
from jupyter_worker.executor.policy import group_exists
from jupyter_worker.jobs import Job, JobFailed
from jupyter_worker.spec import JobRecord
from tests.conftest import ADMINS, VIEWERS

SLEEP = {"command": ["sleep", "300"]}
EXECUTOR = [sys.executable, "-m", "jupyter_worker.cli", "executor"]


def as_user(name: str, action: Callable[[], Any]) -> Any:
    """Run action in a forked child that has become the user; its result or exception comes back."""
    entry = pwd.getpwnam(name)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups(os.getgrouplist(name, entry.pw_gid))
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            payload = pickle.dumps(("ok", action()))
        except WorkerError as exc:  # its reason too
            payload = pickle.dumps(("refused", exc.to_dict()))
        except BaseException as exc:  # carried back to the test
            payload = pickle.dumps(("error", (type(exc), str(exc), traceback.format_exc())))
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as incoming:
        kind, value = pickle.loads(incoming.read())
    os.waitpid(pid, 0)
    if kind == "refused":
        raise WorkerError.from_dict(value)
    if kind == "error":
        error_type, message, _ = value
        raise error_type(message) if error_type is not SystemExit else AssertionError(message)
    return value


def run_as(daemon: Daemon, user: str, job: dict) -> JobRecord:
    """Submit a job as the user."""
    return as_user(user, lambda: Client(daemon.socket).run(job))


def folder_of(user: pwd.struct_passwd, mode: int = 0o755) -> str:
    """An empty folder of the user's own in their home (the artifacts tests' destinations)."""
    folder = tempfile.mkdtemp(prefix="artifacts-", dir=user.pw_dir)
    os.chown(folder, user.pw_uid, user.pw_gid)
    os.chmod(folder, mode)
    return folder


def ended(daemon: Daemon, user: str, job: dict) -> dict:
    """Submit as user, wait with Job.wait (as they would: a failed job is no error here), and
    return the ended record as a dict."""

    def submit_and_wait() -> dict:
        with Client(daemon.socket) as client:
            handle = Job(client.run(job), daemon.socket)
        try:
            handle.wait()
        except JobFailed:
            pass
        return handle.record.to_dict()

    return as_user(user, submit_and_wait)


def ask_as(daemon: Daemon, user: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call one client method as the user; a WorkerError comes back as 'refused: <reason>'."""

    def call() -> Any:
        try:
            return getattr(Client(daemon.socket), method)(*args, **kwargs)
        except WorkerError as exc:
            return f"refused: {exc.reason.value}"

    return as_user(user, call)


@dataclass
class Daemon:
    """A real `jupyter-worker executor` process on a socket and state dir of its own."""

    folder: str
    flags: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    state: str = ""

    @property
    def socket(self) -> str:
        return os.path.join(self.folder, "executor.sock")

    @property
    def state_dir(self) -> str:
        return self.state or os.path.join(self.folder, "state")

    def start(self, *extra: str) -> None:
        command = [*EXECUTOR, "--socket", self.socket, "--state-dir", self.state_dir, *self.flags, *extra]
        # the test users' role groups where this run made them (users fixture): the executor refuses
        # to start with a role group that does not exist, as it would grant nothing
        for flag, group in (("--admin-group", ADMINS), ("--viewer-group", VIEWERS)):
            if group_exists(group):
                command += [flag, group]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with Client(self.socket) as client:
                    client.capabilities()
                return
            except ExecutorUnavailable:
                if self.process.poll() is not None:
                    raise AssertionError(self.process.stderr.read().decode()) from None
                time.sleep(0.05)
        raise AssertionError("the executor did not come up")

    def kill_hard(self) -> None:
        """kill -9: no clean-up of any kind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None

    def client(self) -> Client:
        return Client(self.socket)


def stop_everything(client: Client) -> None:
    """Stop every unfinished job the client sees and wait until all have ended, so nothing
    outlives the test (a test daemon's, a Slurm test node's executor)."""
    with client:
        jobs, _ = client.list(status=["QUEUED", "RUNNING"], limit=1000)
        for job in jobs:
            client.stop(job.id, grace_s=0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and client.list(status=["QUEUED", "RUNNING"], limit=1000)[0]:
            time.sleep(0.05)


@contextlib.contextmanager
def started_daemon(flags: list[str], state_dir: str = ""):
    """A started executor in a folder outside pytest's private temporary tree, so the test users can
    reach its socket; every job is stopped and the daemon shut down afterwards."""
    folder = tempfile.mkdtemp(prefix="jupyter-worker-test-")
    os.chmod(folder, 0o755)
    running = Daemon(folder, flags, state=state_dir)
    try:
        running.start()
    except BaseException:
        running.stop()
        shutil.rmtree(folder)
        raise
    try:
        yield running
    finally:
        try:
            if running.process is None:
                running.start()
            stop_everything(running.client())
        finally:
            running.stop()
            shutil.rmtree(folder)


@pytest.fixture
def daemon(request, users):
    """An executor of the test's own; flags come from @pytest.mark.executor_flags(...)."""
    marker = request.node.get_closest_marker("executor_flags")
    with started_daemon(list(marker.args) if marker else []) as running:
        yield running


@pytest.fixture(scope="module")
def shared_daemon(users):
    """One executor for a whole module of tests that only read or add jobs."""
    with started_daemon([]) as running:
        yield running


def wait_for(predicate: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job_status(client: Client, job_id: str) -> str:
    return client.get(job_id).status


def raw_exchange(path: str, frames: list[bytes]) -> list[dict]:
    """Send raw bytes to the executor; read a response per frame, or until it closes the connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(3)
    for frame in frames:
        sock.sendall(frame)
    responses = []
    try:
        while len(responses) < len(frames):
            header = sock.recv(4, socket.MSG_WAITALL)
            if len(header) < 4:
                break
            responses.append(protocol.decode(sock.recv(protocol.frame_length(header), socket.MSG_WAITALL)))
    except TimeoutError:
        pass
    sock.close()
    return responses


def refused_start(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """An executor started with flags that it must refuse: its exit status and one-line stderr."""
    command = [*EXECUTOR, "--socket", str(tmp_path / "s"), "--state-dir", str(tmp_path / "state"), *flags]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
