"""POST jobs with a `folder`: a folder of the server's file browser (a contents path under its root)
as the job's working folder, through real single-user servers of two users on one executor."""

from __future__ import annotations

import contextlib
import os
import pwd
import time

import pytest

from tests.conftest import USERS
from tests.executor.conftest import started_daemon
from tests.server.conftest import UserServer

ALICE, BOB = USERS[0], USERS[1]


@pytest.fixture(scope="module")
def servers(users):
    """alice's and bob's servers, each with a project folder holding a script and some data."""
    with started_daemon([]) as executor, contextlib.ExitStack() as stack:
        started = {
            user: stack.enter_context(contextlib.closing(UserServer(user, executor.socket))) for user in (ALICE, BOB)
        }
        for user, server in started.items():
            project = os.path.join(server.home, "proj")
            os.makedirs(os.path.join(project, "data"))
            with open(os.path.join(project, "train.py"), "w") as f:
                f.write("import os\nprint('trained in', os.getcwd())\nprint(open('data/x.txt').read().strip())\n")
            with open(os.path.join(project, "data", "x.txt"), "w") as f:
                f.write(f"data of {user}\n")
            give(server.home, user)
        yield started


def give(top: str, user: str) -> None:
    """What the test made in a user's folder is that user's, as if they had made it."""
    entry = pwd.getpwnam(user)
    for folder, names, files in os.walk(top):
        for name in [folder, *(os.path.join(folder, n) for n in names + files)]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)


def finished(server: UserServer, job: dict) -> tuple[dict, str]:
    """The job once it ended, and its log as text."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, record = server.call("GET", f"jobs/{job['id']}")
        assert code == 200, record
        if record["status"] in ("COMPLETED", "FAILED", "STOPPED"):
            _, logs = server.call("GET", f"jobs/{job['id']}/logs")
            return record, "".join(chunk["text"] for chunk in logs["chunks"])
        time.sleep(0.2)
    raise AssertionError(f"job {job['id']} did not end")


def refused(server: UserServer, body: dict) -> str:
    code, error = server.call("POST", "jobs", body)
    assert (code, error.get("reason")) == (400, "invalid"), (code, error)
    return error["message"]


def test_a_script_runs_by_relative_path_in_the_folder_the_file_browser_names(servers):
    alice = servers[ALICE]
    code, job = alice.call("POST", "jobs", {"command": ["python3", "train.py"], "folder": "proj"})
    assert code == 201, job
    record, log = finished(alice, job)
    assert record["status"] == "COMPLETED", (record, log)
    assert log == f"trained in {os.path.realpath(alice.home)}/proj\ndata of {ALICE}\n"


def test_the_folder_is_read_only_in_the_job_and_its_own_work_folder_is_writable(servers):
    alice = servers[ALICE]
    script = "touch here.txt 2>/dev/null && echo wrote || echo read-only; touch /work/ok && echo work"
    code, job = alice.call("POST", "jobs", {"command": ["sh", "-c", script], "folder": "proj/"})
    assert code == 201, job
    assert finished(alice, job)[1] == "read-only\nwork\n"
    assert not os.path.exists(os.path.join(alice.home, "proj", "here.txt"))


def test_the_servers_root_itself_is_the_empty_folder(servers):
    alice = servers[ALICE]
    code, job = alice.call("POST", "jobs", {"command": ["sh", "-c", "pwd; ls"], "folder": ""})
    assert code == 201, job
    assert finished(alice, job)[1] == f"{os.path.realpath(alice.home)}\nproj\n"


def test_relative_mounts_are_taken_from_the_folder(servers):
    alice = servers[ALICE]
    body = {
        "command": ["sh", "-c", "cat /in/x.txt; echo out > data/new.txt"],
        "folder": "proj",
        "mounts": ["data:/in", "data:data:rw"],
    }
    code, job = alice.call("POST", "jobs", body)
    assert code == 201, job
    record, log = finished(alice, job)
    assert (record["status"], log) == ("COMPLETED", f"data of {ALICE}\n")
    with open(os.path.join(alice.home, "proj", "data", "new.txt")) as f:
        assert f.read() == "out\n"
    os.unlink(os.path.join(alice.home, "proj", "data", "new.txt"))


def test_an_absolute_cwd_and_mounts_work_as_before(servers):
    alice = servers[ALICE]
    project = os.path.join(os.path.realpath(alice.home), "proj")
    body = {"command": ["python3", "train.py"], "cwd": project, "mounts": [f"{project}:{project}"]}
    code, job = alice.call("POST", "jobs", body)
    assert code == 201, job
    assert finished(alice, job)[0]["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("folder", "words"),
    [
        ("../..", "must not contain '..'"),
        ("proj/../../etc", "must not contain '..'"),
        ("/etc", "is absolute"),
        ("proj\0", "must not contain NUL"),
        ("no-such-folder", "does not exist"),
        ("proj/train.py", "is not a folder"),
        (["proj"], "relative to the server's root folder"),
    ],
)
def test_a_bad_folder_is_refused_with_a_clear_400(servers, folder, words):
    assert words in refused(servers[ALICE], {"command": ["true"], "folder": folder})


def test_a_folder_through_a_symlink_out_of_the_root_fails_to_reach_etc(servers):
    alice = servers[ALICE]
    link = os.path.join(alice.home, "etc-link")
    os.symlink("/etc", link)
    try:
        assert "leads outside the server's root folder" in refused(alice, {"command": ["true"], "folder": "etc-link"})
        assert "leads outside" in refused(alice, {"command": ["true"], "folder": "etc-link/ssh"})
    finally:
        os.unlink(link)


def test_a_folder_with_a_cwd_is_refused(servers):
    body = {"command": ["true"], "folder": "proj", "cwd": "/srv"}
    assert "folder and cwd: give one" in refused(servers[ALICE], body)


def test_bob_linking_alices_folder_into_his_root_fails_to_run_a_job_there(servers):
    alice, bob = servers[ALICE], servers[BOB]
    link = os.path.join(bob.home, "alices")
    os.symlink(os.path.join(alice.home, "proj"), link)
    os.lchown(link, pwd.getpwnam(BOB).pw_uid, pwd.getpwnam(BOB).pw_gid)
    try:
        assert "leads outside the server's root folder" in refused(bob, {"command": ["true"], "folder": "alices"})
    finally:
        os.unlink(link)


def test_bob_naming_a_folder_in_his_root_that_only_alice_may_read_fails(servers):
    bob = servers[BOB]
    private = os.path.join(bob.home, "not-bobs")
    os.mkdir(private, 0o700)
    alice_entry = pwd.getpwnam(ALICE)
    os.chown(private, alice_entry.pw_uid, alice_entry.pw_gid)
    try:
        code, error = bob.call("POST", "jobs", {"command": ["ls"], "folder": "not-bobs"})
        assert (code, error["reason"]) == (400, "invalid") and "Permission denied" in error["message"], error
    finally:
        os.rmdir(private)


def test_each_users_folder_is_their_own_root(servers):
    bob = servers[BOB]
    code, job = bob.call("POST", "jobs", {"command": ["python3", "train.py"], "folder": "proj"})
    assert code == 201, job
    record, log = finished(bob, job)
    assert record["owner"] == BOB and log.endswith(f"data of {BOB}\n"), (record, log)
