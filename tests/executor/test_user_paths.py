"""`jupyter-worker run` from a user's folder, with a Python environment, wherever they live on the host
(/tmp, /var/tmp, /work, behind a symlink), through a real executor: the job's private folders never
collide with the user's paths. Root's jobs run as nobody, yet `--mount .:.:rw` lets them write root's
folder, as root (an id-mapped bind)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import sysconfig

import pytest

from jupyter_worker.sandbox.mounts import idmap_problem
from tests.conftest import made_folder
from tests.executor.conftest import started_daemon

ALICE = "jwtest-alice"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def executor(users):
    with started_daemon([]) as daemon:
        yield daemon


def run_cli(executor, user: str, folder: str, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    """`jupyter-worker run --wait ARGS` as user, from folder, with the given interpreter."""
    entry = pwd.getpwnam(user)
    env = {"PATH": "/usr/bin:/bin", "JUPYTER_WORKER_SOCKET": executor.socket, "HOME": folder}
    ids = {} if user == "root" else {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    command = [python, "-m", "jupyter_worker.cli", "run", "--wait", *args]
    return subprocess.run(command, check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=120, **ids)


def own(user: str, top: str) -> None:
    entry = pwd.getpwnam(user)
    for where, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            os.chown(os.path.join(where, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def make_venv(user: str, where: str) -> str:
    """A venv of the system's Python at where/venv, with a module of its own; it finds this project
    (its client) through a .pth that names the test environment's site-packages."""
    venv = os.path.join(where, "venv")
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", venv], check=True)
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([f"{venv}/bin/python", "-c", code], check=True, capture_output=True, text=True).stdout
    with open(os.path.join(purelib.strip(), "jwprobe.py"), "w") as f:
        f.write("WHERE = 'the venv'\n")
    with open(os.path.join(purelib.strip(), "jupyter_worker_test.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    own(user, where)
    return venv


@pytest.mark.parametrize("user", ["root", ALICE])
def test_a_python_environment_under_var_tmp_runs_a_job_from_the_cli(executor, user):
    with made_folder("/var/tmp", 0o700, owner=user) as place:
        if user == "root" and idmap_problem(place) is not None:  # root's private folder, nobody's job
            pytest.skip(f"no id-mapped mounts on /var/tmp here: {idmap_problem(place)}")
        venv = make_venv(user, place)
        probe = "import sys, jwprobe; print(sys.prefix, jwprobe.WHERE)"
        result = run_cli(executor, user, place, "--", "python", "-c", probe, python=f"{venv}/bin/python")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{venv} the venv"


@pytest.mark.parametrize("parent", ["/tmp", "/var/tmp", "/work"])
def test_a_script_in_a_folder_under_a_private_folder_of_the_job_runs_by_its_relative_path(executor, parent):
    if not os.path.isdir(parent):
        pytest.skip(f"no {parent} on this host")
    with made_folder(parent, owner=ALICE) as place:
        with open(os.path.join(place, "script.py"), "w") as f:
            f.write("import os\nprint(os.getcwd(), open('data.txt').read())\n")
        with open(os.path.join(place, "data.txt"), "w") as f:
            f.write("data")
        own(ALICE, place)
        result = run_cli(executor, ALICE, place, "--", "python3", "script.py")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{place} data"


def test_a_folder_reached_through_a_symlink_runs_at_its_resolved_path(executor):
    with made_folder("/var/tmp", owner=ALICE) as place:
        real = os.path.join(place, "real")
        os.mkdir(real)
        with open(os.path.join(real, "script.py"), "w") as f:
            f.write("import os\nprint(os.getcwd())\n")
        os.symlink(real, os.path.join(place, "link"))
        own(ALICE, place)
        result = run_cli(executor, ALICE, os.path.join(place, "link"), "--", "python3", "script.py")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == real


@pytest.mark.parametrize("parent", ["/var/tmp", "/tmp"])
def test_roots_private_folder_mounted_read_write_is_written_by_its_job_as_root(executor, parent):
    with made_folder(parent, 0o700, owner="root") as place:
        if idmap_problem(place) is not None:
            pytest.skip(f"no id-mapped mounts on {parent} here: {idmap_problem(place)}")
        with open(os.path.join(place, "in.txt"), "w") as f:
            f.write("root's")
        os.chmod(os.path.join(place, "in.txt"), 0o600)
        script = "id -un; cat in.txt; echo; echo out > made.txt; mkdir out"
        result = run_cli(executor, "root", place, "--mount", ".:.:rw", "--", "sh", "-c", script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["nobody", "root's"]
        for name in ("made.txt", "out"):
            info = os.stat(os.path.join(place, name))
            assert (info.st_uid, info.st_gid) == (0, 0)
