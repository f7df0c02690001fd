"""Private state: the executor's state folder holds every job's command and environment (tokens
included), so no local user reads or crosses it, whatever the umask the executor started with; a
job's own files reach its owner only through the executor's checks (workfiles)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from tests.executor.conftest import as_user, started_daemon, wait_for

SECRET = "hunter2-token"
USERS = ("jwtest-alice", "jwtest-bob")


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def state_paths(state_dir: str, job_id: str) -> dict[str, str]:
    folder = os.path.join(state_dir, "jobs", job_id)
    return {
        "state folder": state_dir,
        "jobs folder": os.path.join(state_dir, "jobs"),
        "database": os.path.join(state_dir, "jobs.db"),
        "database log": os.path.join(state_dir, "jobs.db-wal"),
        "database index": os.path.join(state_dir, "jobs.db-shm"),
        "job folder": folder,
        "job log": os.path.join(folder, "log"),
        "job result": os.path.join(folder, "result"),
        "job control socket": os.path.join(folder, "control"),
        "job work folder": os.path.join(folder, "work"),
    }


def what_a_user_gets(paths: dict[str, str]) -> dict[str, str]:
    """Each path tried as the current user: listed, read, or connected to; 'denied' or what leaked."""
    found = {}
    for what, path in paths.items():
        try:
            if what == "job control socket":
                with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
                    sock.connect(path)
                found[what] = "connected"
            elif os.path.isdir(path):
                found[what] = f"listed {os.listdir(path)}"
            else:
                with open(path, "rb") as f:
                    found[what] = f"read {f.read(200)!r}"
        except PermissionError:
            found[what] = "denied"
    return found


def assert_private(state_dir: str, job_id: str) -> None:
    """Folders 0700 and files 0600, root's (the job's work/ excepted: its uid's, 0700)."""
    for what, path in state_paths(state_dir, job_id).items():
        if not os.path.lexists(path):
            continue
        info = os.lstat(path)
        if what == "job work folder":
            assert mode(path) == 0o700, what
            continue
        assert (info.st_uid, info.st_gid) == (0, 0), what
        assert mode(path) & 0o077 == 0, f"{what} {path} is {mode(path):o}"


@pytest.fixture(scope="module")
def executor(users):
    with started_daemon([]) as daemon:
        yield daemon


@contextlib.contextmanager
def secret_job(daemon) -> Iterator[str]:
    """A running job of alice's whose command and environment hold a secret, and whose /work holds
    a file; stopped afterwards (alice's running jobs are capped)."""
    job = {"command": ["sh", "-c", f"echo {SECRET} > /work/out; echo {SECRET}; sleep 300"], "env": {"TOKEN": SECRET}}
    record = as_user("jwtest-alice", lambda: Client(daemon.socket).run(job))
    with Client(daemon.socket) as client:
        wait_for(lambda: client.logs(record.id)[0], what="the job's output")
        try:
            yield record.id
        finally:
            client.stop(record.id, grace_s=0)
            wait_for(lambda: client.get(record.id).finished, what="the secret job's stop")


def test_no_user_lists_or_reads_the_state_folder_database_logs_results_or_control_sockets(executor):
    with secret_job(executor) as job_id:
        paths = state_paths(executor.state_dir, job_id)
        assert all(os.path.lexists(path) for path in paths.values()), paths
        for user in USERS:  # the job's own owner included: only through the executor
            found = as_user(user, lambda: what_a_user_gets(paths))
            assert found == dict.fromkeys(paths, "denied"), (user, found)
        assert_private(executor.state_dir, job_id)


def test_the_owner_reaches_the_jobs_files_through_the_executor_and_another_user_does_not(executor):
    with secret_job(executor) as job_id:

        def read_out() -> str:
            with Client(executor.socket) as client:
                try:
                    return client.read_file(job_id, "out")[0].decode()
                except WorkerError as exc:
                    return f"refused: {exc.reason.value}"

        wait_for(lambda: as_user("jwtest-alice", read_out) == f"{SECRET}\n", what="alice's own file")
        assert as_user("jwtest-bob", read_out) == "refused: not_found"


def test_a_state_folder_left_readable_by_all_is_made_private_at_start_with_a_warning(users, tmp_path):
    state = str(tmp_path / "state")
    with started_daemon([], state_dir=state) as daemon:
        with secret_job(daemon) as job_id:
            pass
        daemon.stop()
        loosened = state_paths(state, job_id)
        for what, path in loosened.items():
            if what != "job work folder" and os.path.lexists(path):
                os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
        os.chown(os.path.join(state, "jobs.db"), users["jwtest-bob"].pw_uid, -1)
        daemon.start()
        process = daemon.process
        assert_private(state, job_id)
        daemon.stop()
    warning = process.stderr.read().decode()
    assert "the state folder was readable by others; made private to root" in warning


def test_files_made_under_umask_000_are_still_private(users):
    umask = os.umask(0)
    try:
        started = started_daemon([])
        daemon = started.__enter__()
    finally:
        os.umask(umask)
    with contextlib.ExitStack() as stack:
        stack.push(started.__exit__)
        job_id = stack.enter_context(secret_job(daemon))
        assert_private(daemon.state_dir, job_id)
        found = as_user("jwtest-bob", lambda: what_a_user_gets(state_paths(daemon.state_dir, job_id)))
        assert set(found.values()) == {"denied"}, found


def test_a_jobs_uid_never_needs_to_cross_the_state_folder(executor):
    """/work is bound from a handle root opened: the job reads and writes it with every folder above
    it closed to its uid."""
    job = {"command": ["sh", "-c", "echo hello > /work/x && cat /work/x && pwd"]}
    record = as_user("jwtest-alice", lambda: Client(executor.socket).run(job))
    with Client(executor.socket) as client:
        done = wait_for(lambda: (j := client.get(record.id)).finished and j, what="the job's end")
        output = b"".join(chunk.data for chunk in client.logs(record.id)[0]).decode()
    assert (done.exit_code, output) == (0, "hello\n/work\n")
    assert mode(executor.state_dir) == 0o700
