"""One check for every mount: mounts, Python prefixes and the working folder pass the same
reserved-destination check (spec.check_mount), and every source is opened as the requester, at
submission and again when the job starts (sandbox/mounts.open_source). Tried as alice against a
real executor."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from tests.executor.conftest import as_user, started_daemon, wait_for

ALICE, BOB = "jwtest-alice", "jwtest-bob"


@pytest.fixture(scope="module")
def executor(users):
    with started_daemon(["--Policy.max_concurrent_jobs=1"]) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def places(users):
    """alice's folder (with a file and symlinks of hers) and bob's private folder, outside pytest's
    private tree so that each user reaches their own."""
    top = tempfile.mkdtemp(prefix="jupyter-worker-test-mounts-")
    os.chmod(top, 0o755)
    alice, bob = users[ALICE], users[BOB]
    mine, private = os.path.join(top, "alice"), os.path.join(top, "bob-private")
    os.mkdir(mine, 0o755)
    os.mkdir(os.path.join(mine, "data"), 0o755)
    os.mkdir(private, 0o700)
    with open(os.path.join(mine, "data", "file"), "w") as f:
        f.write("alice's\n")
    with open(os.path.join(private, "secret"), "w") as f:
        f.write("bob's\n")
    links = {
        "to-proc-root": "/proc/self/root",
        "to-proc-cwd": "/proc/self/cwd",
        "to-sys": "/sys/kernel",
        "to-bob": private,
        "to-dev-null": "/dev/null",
        "to-data": os.path.join(mine, "data"),
    }
    for name, target in links.items():
        os.symlink(target, os.path.join(mine, name))
    for owner, paths in (
        (alice, [mine, *(os.path.join(mine, n) for n in ("data", "data/file", *links))]),
        (bob, [private, os.path.join(private, "secret")]),
    ):
        for path in paths:
            os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    yield {"alice": mine, "bob": private}
    shutil.rmtree(top)


def answer(daemon, job: dict) -> str:
    """What alice's request gets: 'ran', or 'refused: <reason>: <message>'."""

    def call() -> str:
        try:
            Client(daemon.socket).run({"command": ["true"], **job})
        except WorkerError as exc:
            return f"refused: {exc.reason.value}: {exc.message}"
        return "ran"

    return as_user(ALICE, call)


@pytest.mark.parametrize(
    "prefix", ["/proc", "/etc", "/usr", "/usr/lib/python3", "/lib", "/dev", "/sys/fs", "/", "//etc"]
)
def test_a_python_prefix_over_the_sandboxs_own_folders_is_refused(executor, prefix):
    assert answer(executor, {"python_prefixes": [prefix]}).startswith("refused: invalid: python prefix")


@pytest.mark.parametrize("cwd", ["/proc/self", "/proc/1/cwd", "/etc", "/dev/shm", "/sys", "/usr/bin", "/"])
def test_a_working_folder_in_the_sandboxs_own_folders_is_refused(executor, cwd):
    assert (
        answer(executor, {"cwd": cwd}) == f"refused: invalid: cwd: {os.path.normpath(cwd)} is reserved by the sandbox"
    )


@pytest.mark.parametrize("destination", ["/etc/x", "/proc/sys", "/usr/local", "/dev/shm", "/lib64", "/"])
def test_a_mount_over_the_sandboxs_own_folders_is_refused(executor, places, destination):
    assert "is reserved by the sandbox" in answer(executor, {"mounts": [f"{places['alice']}:{destination}"]})


@pytest.mark.parametrize("source", ["/proc/self/root", "/proc/1/root", "/sys", "/", "/home/../proc/self"])
def test_a_kernel_interface_or_the_host_root_as_a_source_is_refused(executor, source):
    assert answer(executor, {"mounts": [f"{source}:/data"]}).startswith("refused: invalid: mount")
    assert answer(executor, {"python_prefixes": [source]}).startswith("refused: invalid: python prefix")


def test_a_prefix_or_mount_the_requester_cannot_read_is_refused(executor, places):
    assert answer(executor, {"python_prefixes": [places["bob"]]}).startswith("refused: invalid: mount source")
    assert answer(executor, {"mounts": [f"{places['bob']}:/data"]}).startswith("refused: invalid: mount source")
    assert answer(executor, {"mounts": [f"{places['bob']}/secret:/data"]}).startswith("refused: invalid")


@pytest.mark.parametrize(
    ("link", "why"),
    [
        ("to-proc-root", "Too many levels of symbolic links"),  # a magic link is never followed
        ("to-proc-cwd", "Too many levels of symbolic links"),
        ("to-sys", "kernel interface"),
        ("to-bob", "Permission denied"),
        ("to-dev-null", "only a folder or a regular file"),
    ],
)
def test_a_symlinked_source_leading_where_the_requester_may_not_go_is_refused(executor, places, link, why):
    for job in ({"mounts": [f"{places['alice']}/{link}:/data"]}, {"python_prefixes": [f"{places['alice']}/{link}"]}):
        got = answer(executor, job)
        assert got.startswith("refused: invalid: mount source") and why in got, got


def test_a_symlinked_source_of_the_requesters_own_is_followed(executor, places):
    job = {"command": ["cat", "/data/file"], "mounts": [f"{places['alice']}/to-data:/data"]}
    record = as_user(ALICE, lambda: Client(executor.socket).run(job))
    with Client(executor.socket) as client:
        done = wait_for(lambda: (j := client.get(record.id)).finished and j, what="the job's end")
        assert done.exit_code == 0, done.error
        assert b"".join(c.data for c in client.logs(record.id)[0]) == b"alice's\n"


def test_a_source_swapped_after_submission_is_checked_again_when_the_job_starts(executor, places, users):
    """While the job waits for a slot, alice points her symlink at /proc/self/root: the init's own
    check (the same open_source, as her) refuses it, and the job fails to start."""
    swap = os.path.join(places["alice"], "swap")
    as_user(ALICE, lambda: os.symlink(os.path.join(places["alice"], "data"), swap))
    with Client(executor.socket) as client:
        blocker = as_user(ALICE, lambda: Client(executor.socket).run({"command": ["sleep", "300"]}))
        wait_for(lambda: client.get(blocker.id).status.value == "RUNNING", what="the blocker")
        queued = as_user(
            ALICE, lambda: Client(executor.socket).run({"command": ["ls", "/data"], "mounts": [f"{swap}:/data"]})
        )
        assert queued.status.value == "QUEUED"

        def swap_it() -> None:
            os.unlink(swap)
            os.symlink("/proc/self/root", swap)

        as_user(ALICE, swap_it)
        client.stop(blocker.id, grace_s=0)
        done = wait_for(lambda: (j := client.get(queued.id)).finished and j, what="the swapped job's end")
        assert done.reason.value == "start_error", done
        assert "mount source" in (done.error or "")
