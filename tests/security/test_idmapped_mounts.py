"""Attacks through an id-mapped mount: root's jobs run as nobody, and the folders root names are
bound so that the job reads and writes them as root. The job must gain nothing else: no setuid or
setgid file it could leave for the host, no other uid's rights, nothing outside the named folders.
Tried against a real executor (root's jobs) and the sandbox engine (another requester)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from jupyter_worker.sandbox.mounts import idmap_problem
from jupyter_worker.spec import Mount, Reason
from tests.executor.conftest import started_daemon

# Every way a job could try to leave a setuid or setgid file behind, each reported as its errno name.
MAKE_SETUID = r"""
import ctypes, errno, os, shutil, stat, subprocess
def attempt(name, action):
    try:
        action()
        print(name, "made")
    except OSError as exc:
        print(name, errno.errorcode.get(exc.errno, exc.errno))
def touch(name):
    with open(name, "w") as f:
        f.write("#!/bin/sh\nid\n")
    return name
def openat2():
    libc = ctypes.CDLL(None, use_errno=True)
    how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o4755, 0)
    if libc.syscall(437, -100, b"openat2", how, 24) < 0:
        raise OSError(ctypes.get_errno(), "openat2")
attempt("chmod-u+s", lambda: os.chmod(touch("chmod"), 0o4755))
attempt("chmod-g+s", lambda: os.chmod(touch("chmod-g"), 0o2755))
attempt("fchmod", lambda: os.fchmod(os.open(touch("fchmod"), os.O_RDONLY), 0o4755))
attempt("open", lambda: os.close(os.open("open", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt("mknod", lambda: os.mknod("mknod", stat.S_IFREG | 0o6755))
attempt("openat2", openat2)
attempt("copy-mode", lambda: shutil.copy2("/usr/bin/env", "copied"))
os.chmod("copied", 0o755)
attempt("copy-suid", lambda: os.chmod("copied", 0o4755))
r = subprocess.run(["chmod", "u+s", "chmod"], capture_output=True, text=True)
print("chmod-command", "made" if r.returncode == 0 else "refused")
"""


def _setuid_results(output: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


@pytest.fixture(scope="module")
def executor(users):
    with started_daemon([]) as daemon:
        yield daemon


@pytest.fixture
def roots_folder():
    """root's private folder for one test, outside pytest's tree; it must end as it was made."""
    place = tempfile.mkdtemp(prefix="jupyter-worker-test-idmap-", dir="/var/tmp")
    os.chmod(place, 0o700)
    problem = idmap_problem(place)
    if problem is not None:
        shutil.rmtree(place)
        pytest.skip(f"no id-mapped mounts here: {problem}")
    try:
        yield place
    finally:
        shutil.rmtree(place)


def run_as_root(executor, place: str, *command: str) -> subprocess.CompletedProcess:
    """`jupyter-worker run --wait --mount .:.:rw -- COMMAND` by root, from place: the job runs as nobody."""
    env = {"PATH": "/usr/bin:/bin", "JUPYTER_WORKER_SOCKET": executor.socket}
    cli = [sys.executable, "-m", "jupyter_worker.cli", "run", "--wait", "--mount", ".:.:rw", "--", *command]
    return subprocess.run(cli, cwd=place, env=env, capture_output=True, text=True, timeout=120, check=False)


def no_setuid_or_setgid_file(place: str) -> list[str]:
    found = []
    for where, dirs, files in os.walk(place):
        for name in dirs + files:
            mode = os.lstat(os.path.join(where, name)).st_mode
            if mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(f"{name}: {oct(mode)}")
    return found


def test_a_root_requesters_job_cannot_leave_a_setuid_or_setgid_root_file_in_the_mapped_folder(executor, roots_folder):
    result = run_as_root(executor, roots_folder, "python3", "-c", MAKE_SETUID)
    results = _setuid_results(result.stdout)
    assert results == {
        "chmod-u+s": "EPERM",
        "chmod-g+s": "EPERM",
        "fchmod": "EPERM",
        "open": "EPERM",
        "mknod": "EPERM",
        "openat2": "ENOSYS",
        "copy-mode": "made",
        "copy-suid": "EPERM",
        "chmod-command": "refused",
    }, result.stderr
    assert os.stat(os.path.join(roots_folder, "copied")).st_uid == 0  # root's indeed: the mapping was used
    assert no_setuid_or_setgid_file(roots_folder) == []


def test_a_setuid_root_file_in_the_mapped_folder_gives_the_job_nothing(executor, roots_folder):
    planted = os.path.join(roots_folder, "suid-id")
    shutil.copy("/usr/bin/id", planted)
    os.chmod(planted, 0o4755)
    result = run_as_root(executor, roots_folder, "./suid-id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["65534"]


def test_a_root_requesters_job_cannot_take_other_users_files_in_the_mapped_folder(executor, roots_folder):
    for name, mode in (("alices-private", 0o600), ("alices-readable", 0o644)):
        path = os.path.join(roots_folder, name)
        with open(path, "w") as f:
            f.write("alice's")
        os.chown(path, 4343, 4343)
        os.chmod(path, mode)
    script = (
        "cat alices-private || echo unreadable; echo x >> alices-readable || echo unwritable;"
        " chmod 666 alices-readable || echo chmod-refused; chown 65534 alices-readable || echo chown-refused;"
        " chown 0 alices-readable || echo chown-root-refused"
    )
    result = run_as_root(executor, roots_folder, "sh", "-c", script)
    assert result.stdout.split() == ["unreadable", "unwritable", "chmod-refused", "chown-refused", "chown-root-refused"]
    for name, mode in (("alices-private", 0o600), ("alices-readable", 0o644)):
        info = os.stat(os.path.join(roots_folder, name))
        assert (info.st_uid, stat.S_IMODE(info.st_mode), info.st_size) == (4343, mode, len("alice's"))


def test_the_mapping_does_not_reach_the_system_folders_or_the_jobs_own(executor, roots_folder):
    script = (
        "stat -c '%u' /usr/bin/env /etc/passwd; touch /tmp/t /work/w; stat -c %u /tmp/t /work/w; touch x; stat -c %u x"
    )
    result = run_as_root(executor, roots_folder, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0", "65534", "65534", "65534"]  # root's stays root's; its own, nobody's
    assert os.stat(os.path.join(roots_folder, "x")).st_uid == 0  # ...but in the mapped folder, root's


def test_a_job_of_another_requester_cannot_write_where_that_requester_could_not(sh):
    """The engine, requester 4242 and the job nobody: the job writes as 4242, never as anyone else."""
    place = tempfile.mkdtemp(prefix="jupyter-worker-test-idmap-", dir="/var/tmp")
    try:
        os.chmod(place, 0o755)
        os.chown(place, 4242, 4242)
        if idmap_problem(place) is not None:
            pytest.skip(f"no id-mapped mounts here: {idmap_problem(place)}")
        roots = os.path.join(place, "roots")
        with open(roots, "w") as f:
            f.write("root's")
        os.chmod(roots, 0o644)
        os.mkdir(os.path.join(place, "closed"), 0o755)  # root's folder inside the requester's
        script = (
            "echo x >> roots || echo roots-unwritable; touch closed/new || echo closed-unwritable;"
            " rm roots || echo roots-kept; touch mine; chmod 4755 mine || echo setuid-refused; id -u"
        )
        mounts = [Mount(place, "/data", rw=True)]
        result = sh(f"cd /data && {{ {script}; }} 2>/dev/null", mounts=mounts, requester_uid=4242, requester_gid=4242)
        assert result.outcome.reason is Reason.EXIT, result.outcome.error
        assert result.stdout.decode().split() == [
            "roots-unwritable",
            "closed-unwritable",
            "setuid-refused",
            "65534",
        ]  # removing root's file from the requester's own folder is the requester's right, as on the host
        assert not os.path.exists(roots)
        info = os.stat(os.path.join(place, "mine"))
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (4242, 4242, 0o644)
        assert os.listdir(os.path.join(place, "closed")) == []
    finally:
        shutil.rmtree(place)
