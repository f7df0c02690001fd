"""A user's folders and Python environments work in a job wherever they live on the host: under the
job's own private folders (/tmp, /var/tmp, /dev/shm, /work), behind symlinks, and, when the job runs
as another user than the requester (root's jobs run as nobody), through an id-mapped bind that lets
the job read and write them as the requester. Run through the real sandbox engine."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from jupyter_worker.limits import Limits
from jupyter_worker.sandbox import LaunchSpec, RunResult, Sandbox, libc
from jupyter_worker.sandbox.doctor import diagnose, render
from jupyter_worker.sandbox.mounts import idmap_problem
from jupyter_worker.spec import Mount, Reason
from tests.conftest import made_folder

NOBODY = 65534


def mapped_here(path: str) -> bool:
    return idmap_problem(path) is None


@pytest.mark.parametrize("parent", ["/tmp", "/var/tmp", "/dev/shm"])
def test_a_folder_under_a_private_folder_of_the_job_is_shown_at_its_own_path(sh, parent):
    with made_folder(parent) as folder:
        with open(os.path.join(folder, "in.txt"), "w") as f:
            f.write("input")
        result = sh(f"cat {folder}/in.txt && cd {folder} && pwd", mounts=[Mount(folder, folder)])
        assert result.outcome.reason is Reason.EXIT, result.outcome.error
        assert result.stdout.decode().splitlines() == ["input" + folder]


def test_var_tmp_is_a_writable_folder_of_its_own_not_the_jobs_tmp(sh):
    result = sh("test -d /var/tmp && ! test -L /var/tmp && echo a > /var/tmp/x && ls /tmp; stat -c %a /var/tmp")
    assert result.outcome.reason is Reason.EXIT, result.outcome.error
    assert result.stdout.decode().split() == ["1777"]


def test_var_tmp_is_bounded_by_the_tmp_limit_like_tmp(sh):
    result = sh("dd if=/dev/zero of=/var/tmp/fill bs=1M count=16 2>&1 | grep -c 'No space'", limits=Limits(tmp_mb=4))
    assert result.stdout.decode().strip() == "1"


@pytest.mark.parametrize("work", ["tmpfs", "bound folder", "disk image"])
def test_a_folder_under_work_is_shown_at_its_own_path_in_the_jobs_work(sh, work):
    # The state folder in /tmp, where the executor keeps its own: a disk image needs a filesystem a
    # loop device can sit on (the VM lane's /var/tmp is the host's, through 9p).
    with made_folder("/var/tmp") as data, made_folder("/tmp", 0o700) as state:
        with open(os.path.join(data, "in.txt"), "w") as f:
            f.write("input")
        work_dir, limits = None, Limits(disk_mb=16) if work == "disk image" else Limits()
        if work != "tmpfs":
            work_dir = os.path.join(state, "work")
            os.mkdir(work_dir, 0o700)
            os.chown(work_dir, NOBODY, NOBODY)
        script = "cat /work/proj/in.txt && echo mine > /work/out.txt && cat /work/out.txt"
        result = sh(script, mounts=[Mount(data, "/work/proj")], work_dir=work_dir, limits=limits)
        assert result.outcome.reason is Reason.EXIT, result.outcome.error
        assert result.stdout.decode().splitlines() == ["inputmine"]
        assert os.listdir(data) == ["in.txt"]


def test_a_symlink_in_the_jobs_bound_work_folder_is_not_followed_to_make_a_mount_point(sh):
    with made_folder("/var/tmp") as data, made_folder("/var/tmp", 0o700) as state, made_folder("/var/tmp") as elsewhere:
        work_dir = os.path.join(state, "work")
        os.mkdir(work_dir, 0o700)
        os.symlink(elsewhere, os.path.join(work_dir, "proj"))  # planted by an earlier run of the job
        os.chown(work_dir, NOBODY, NOBODY)
        result = sh("true", mounts=[Mount(data, "/work/proj/data")], work_dir=work_dir)
        assert result.outcome.reason is Reason.START_ERROR
        assert "symlinks are not followed" in result.outcome.error
        assert os.listdir(elsewhere) == []


def test_a_source_named_through_a_symlink_is_shown_as_what_it_points_to(sh):
    with made_folder("/var/tmp") as top:
        real = os.path.join(top, "real")
        os.mkdir(real, 0o755)
        with open(os.path.join(real, "in.txt"), "w") as f:
            f.write("input")
        link = os.path.join(top, "link")
        os.symlink(real, link)
        result = sh(f"cat {link}/in.txt {real}/in.txt", mounts=[Mount(link, link), Mount(real, real)])
        assert result.outcome.reason is Reason.EXIT, result.outcome.error
        assert result.stdout == b"inputinput"


def test_a_python_environment_under_var_tmp_runs_a_job(run):
    with made_folder("/var/tmp") as top:
        venv = os.path.join(top, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        python = os.path.join(venv, "bin", "python")
        code = "import sysconfig; print(sysconfig.get_path('purelib'))"
        purelib = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
        with open(os.path.join(purelib, "jwprobe.py"), "w") as f:
            f.write("WHERE = 'the venv'\n")
        code = "import sys, jwprobe; print(sys.prefix, jwprobe.WHERE)"
        result = run([python, "-c", code], python_prefixes=[venv])
        assert result.outcome.reason is Reason.EXIT, (result.outcome.error, result.stderr)
        assert result.stdout.decode().strip() == f"{venv} the venv"


def test_a_root_requesters_private_folder_is_read_and_written_as_root_by_a_job_running_as_nobody(sh):
    with made_folder("/var/tmp", 0o700) as folder:
        if not mapped_here(folder):
            pytest.skip(f"no id-mapped mounts here: {idmap_problem(folder)}")
        with open(os.path.join(folder, "secret"), "w") as f:
            f.write("root's")
        os.chmod(os.path.join(folder, "secret"), 0o600)
        script = f"id -u; cat {folder}/secret; echo new > {folder}/made; mkdir {folder}/sub; echo; echo ok"
        result = sh(script, mounts=[Mount(folder, folder, rw=True)], requester_uid=0, requester_gid=0)
        assert result.outcome.reason is Reason.EXIT, (result.outcome.error, result.stderr)
        assert result.stdout.decode().split() == ["65534", "root's", "ok"]
        for name in ("made", "sub"):
            info = os.stat(os.path.join(folder, name))
            assert (info.st_uid, info.st_gid) == (0, 0)


def test_a_root_requesters_read_only_mount_stays_read_only_through_the_mapping(sh):
    with made_folder("/var/tmp", 0o700) as folder:
        if not mapped_here(folder):
            pytest.skip(f"no id-mapped mounts here: {idmap_problem(folder)}")
        result = sh(f"ls {folder} && touch {folder}/x 2>&1", mounts=[Mount(folder, folder)], requester_uid=0)
        assert "Read-only file system" in result.stdout.decode()
        assert os.listdir(folder) == []


def test_a_job_running_as_its_requester_gets_a_plain_bind(sh):
    with made_folder("/var/tmp", 0o700) as folder:
        os.chown(folder, 4242, 4242)
        ids = {"uid": 4242, "gid": 4242, "requester_uid": 4242, "requester_gid": 4242}
        result = sh(f"touch {folder}/x", mounts=[Mount(folder, folder, rw=True)], **ids)
        assert result.outcome.reason is Reason.EXIT, result.outcome.error
        info = os.stat(os.path.join(folder, "x"))
        assert (info.st_uid, info.st_gid) == (4242, 4242)


def test_the_jobs_own_folders_are_not_mapped(sh):
    with made_folder("/var/tmp", 0o700) as folder:
        script = "touch /tmp/a /work/b && stat -c %u /tmp/a /work/b /usr/bin/env"
        result = sh(script, mounts=[Mount(folder, folder, rw=True)], requester_uid=0)
        assert result.outcome.reason is Reason.EXIT, result.outcome.error
        assert result.stdout.decode().split() == ["65534", "65534", "0"]


def test_the_mode_bits_survive_the_mapping(sh):
    with made_folder("/var/tmp", 0o700) as folder:
        if not mapped_here(folder):
            pytest.skip(f"no id-mapped mounts here: {idmap_problem(folder)}")
        script = f"umask 022; touch {folder}/f; chmod 640 {folder}/f; stat -c '%u %a' {folder}/f"
        result = sh(script, mounts=[Mount(folder, folder, rw=True)], requester_uid=0)
        assert result.stdout.decode().split() == ["65534", "640"]  # the job's own, inside
        info = os.stat(os.path.join(folder, "f"))
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o640)  # root's, outside


def test_through_the_mapping_other_users_files_keep_their_owner_and_their_rights(sh):
    with made_folder("/var/tmp", 0o755) as folder:
        if not mapped_here(folder):
            pytest.skip(f"no id-mapped mounts here: {idmap_problem(folder)}")
        for name, owner, mode in (("private", 4343, 0o600), ("shared", 4343, 0o666), ("nobodys", NOBODY, 0o666)):
            path = os.path.join(folder, name)
            with open(path, "w") as f:
                f.write(name)
            os.chown(path, owner, owner)
            os.chmod(path, mode)
        script = (
            f"cd {folder}; stat -c '%n %u' private shared; cat private 2>/dev/null || echo unreadable;"
            " echo more >> shared && echo shared-written; echo more >> nobodys || echo nobodys-refused"
        )
        result = sh(script, mounts=[Mount(folder, folder, rw=True)], requester_uid=0, requester_gid=0)
        assert result.stdout.decode().splitlines() == [
            "private 4343",
            "shared 4343",
            "unreadable",
            "shared-written",
            "nobodys-refused",
        ]


def test_a_python_prefix_through_a_symlink_in_the_shown_folder_is_found_where_the_symlink_leads(run):
    with made_folder("/var/tmp") as project, made_folder("/var/tmp") as envs:
        venv = os.path.join(envs, "env")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        link = os.path.join(project, ".venv")  # the project's environment lives elsewhere
        os.symlink(venv, link)
        code = "import sys; print(sys.prefix)"
        result = run([f"{link}/bin/python", "-c", code], mounts=[Mount(project, project)], python_prefixes=[link])
        assert result.outcome.reason is Reason.EXIT, (result.outcome.error, result.stderr)
        assert result.stdout.decode().strip() == link


def test_a_mount_destination_through_a_symlink_in_a_shown_folder_is_refused(sh):
    with made_folder("/var/tmp") as project, made_folder("/var/tmp") as data:
        os.symlink(data, os.path.join(project, "link"))
        result = sh("true", mounts=[Mount(project, project), Mount(data, f"{project}/link/inner")])
        assert result.outcome.reason is Reason.START_ERROR
        assert "symlinks are not followed" in result.outcome.error
        assert os.listdir(data) == []


def test_the_doctor_tells_where_roots_jobs_get_id_mapped_binds_and_mounts_nothing():
    with open("/proc/self/mountinfo") as f:
        before = f.read()
    report = diagnose()
    with open("/proc/self/mountinfo") as f:
        assert f.read() == before
    places = report["idmapped_binds"]
    assert places and all(problem is None or isinstance(problem, str) for problem in places.values())
    lines = [line for line in render(report).splitlines() if line.startswith("mounts from ")]
    assert len(lines) == len(places)
    assert all((": id-mapped" in line) == (places[line.split()[2].rstrip(":")] is None) for line in lines)


@contextlib.contextmanager
def ramfs_folder(mode: int) -> Iterator[str]:
    """A folder on ramfs, a filesystem without id-mapped mounts (as tmpfs before Linux 6.3), for the
    block; mounted in this process's mount namespace (the suite's runs in a private one)."""
    with made_folder("/var/tmp") as place:
        libc.mount("ramfs", place, "ramfs", libc.MS_NOSUID | libc.MS_NODEV, f"mode={mode:o}")
        try:
            yield place
        finally:
            libc.umount(place)


def run_seeing(argv: list[str], runtime_dir: str, **fields) -> RunResult:
    """Run with an engine of its own, started now: its sandboxes (prepared ahead of the job, in a
    copy of the mount namespace) see what was mounted just before."""
    with tempfile.TemporaryDirectory(dir=runtime_dir) as runtime, Sandbox(runtime_dir=runtime, standbys=1) as engine:
        return engine.run(LaunchSpec(argv=argv, **fields))


def test_where_the_filesystem_refuses_an_id_mapped_bind_the_job_gets_a_plain_one_and_clear_errors(runtime_dir):
    root = {"requester_uid": 0, "requester_gid": 0}
    with ramfs_folder(0o755) as folder:
        assert idmap_problem(folder) is not None
        script = f"ls {folder} && touch {folder}/x"
        result = run_seeing(["sh", "-c", script], runtime_dir, mounts=[Mount(folder, folder, rw=True)], **root)
        assert result.outcome.reason is Reason.EXIT and result.outcome.exit_code == 1, result.outcome.error
        assert b"Permission denied" in result.stderr
    with ramfs_folder(0o700) as folder:
        result = run_seeing(["true"], runtime_dir, mounts=[Mount(folder, folder)], cwd=folder, **root)
        assert result.outcome.reason is Reason.START_ERROR
        assert (
            f"working directory {folder}: Permission denied (to nobody, whom the job runs as)" in result.outcome.error
        )
