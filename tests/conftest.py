"""Fixtures shared by the whole suite: a real sandbox engine, and a check that nothing is left over."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from jupyter_worker.client import HOLDER_ENV
from jupyter_worker.sandbox import LaunchSpec, RunResult, Sandbox

if TYPE_CHECKING:
    from tests.executor.conftest import Daemon

pytest_plugins = ("pytest_jupyter.jupyter_server",)

PROJECT_MARKERS = ("jupyter-worker", "jupyter_worker")
USERS = ("jwtest-alice", "jwtest-bob", "jwtest-carol")
VIEWERS = "jwtest-viewers"
ADMINS = "jwtest-admins"
DEMO = os.path.join(os.path.dirname(__file__), "..", "notebooks", "demo.ipynb")


@contextlib.contextmanager
def made_folder(parent: str, mode: int = 0o755, owner: str | None = None) -> Iterator[str]:
    """A folder unique to this run under parent (made if missing), owned by owner if given, with
    mode; removed afterwards, leaving nothing."""
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix="jupyter-worker-test-paths-", dir=parent)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)
    try:
        yield path
    finally:
        shutil.rmtree(path)
    assert not os.path.exists(path)


def is_root() -> bool:
    return os.geteuid() == 0


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cgroup_residue() -> list[str]:
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        for name in dirs:
            if name.startswith("jupyter-worker"):
                found.append(os.path.join(top, name))
        if top.count("/") > 8:
            dirs.clear()
    return found


def process_residue() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "jupyter_worker.sandbox.spawner" in cmdline or "jupyter_worker.cli executor" in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def runtime_residue() -> list[str]:
    """Spawner folders a Sandbox made for itself under /run and did not remove."""
    return [name for name in os.listdir("/run") if name.startswith("jupyter-worker-sandbox-")]


def network_residue() -> list[str]:
    """Our links (job veths, test bridges and veths, Slurm test clusters' bridges) and nftables tables."""
    found = [name for name in os.listdir("/sys/class/net") if name.startswith(("jwv", "jwt-", "jw-br", "jwsl"))]
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
        found += [line for line in tables.splitlines() if "jupyter_worker" in line]
    return found


@pytest.fixture(scope="session", autouse=True)
def no_residue_after_suite():
    """Whatever the suite started, it must have cleaned up: cgroups, processes, runtime folders, mounts.

    Supervisors remove a job's empty cgroups just after reporting its outcome, hence the short wait.
    """
    before, links_before, runtime_before = set(cgroup_residue()), set(network_residue()), set(runtime_residue())
    yield
    deadline = time.monotonic() + 5
    while (set(cgroup_residue()) - before or process_residue()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(cgroup_residue()) - before == set()
    assert process_residue() == []
    assert set(network_residue()) - links_before == set()
    assert set(runtime_residue()) - runtime_before == set()
    with open("/proc/self/mountinfo") as f:
        assert not any(m in line for line in f for m in PROJECT_MARKERS)


@pytest.fixture(scope="session")
def users():
    """Three real local users with homes of their own (JupyterHub spawns servers in them); carol is
    in the viewer group. Removed after the session."""
    if not is_root():
        pytest.skip("needs root to create users")
    with local_users() as entries:
        yield entries


@contextlib.contextmanager
def local_users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """The test users and groups, made for the block and removed after it (also by bench/hub.py)."""
    _remove_test_users()
    homes = tempfile.mkdtemp(prefix="jupyter-worker-homes-")
    os.chmod(homes, 0o755)
    for group in (VIEWERS, ADMINS):
        subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
    for name in USERS:
        home = os.path.join(homes, name)
        account = ["--system", "--create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin", name]
        subprocess.run(["useradd", *account], check=True, capture_output=True)
    subprocess.run(["usermod", "-aG", VIEWERS, "jwtest-carol"], check=True, capture_output=True)
    try:
        yield {name: pwd.getpwnam(name) for name in USERS}
    finally:
        _remove_test_users()
        shutil.rmtree(homes, ignore_errors=True)


def _remove_test_users() -> None:
    """Also clears what an interrupted earlier run left behind."""
    for name in USERS:
        subprocess.run(["userdel", name], check=False, capture_output=True)
    for group in (VIEWERS, ADMINS):
        subprocess.run(["groupdel", group], check=False, capture_output=True)


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="session")
def sandbox(runtime_dir):
    if not is_root():
        pytest.skip("the sandbox engine needs root")
    with Sandbox(runtime_dir=runtime_dir) as engine:
        yield engine


@pytest.fixture
def run(sandbox):
    """Run a command to its end: run(["id", "-u"], limits=Limits(...)) -> RunResult."""

    def runner(argv: list[str], stdin: bytes = b"", **fields) -> RunResult:
        return sandbox.run(LaunchSpec(argv=argv, **fields), stdin=stdin)

    return runner


@pytest.fixture
def sh(run):
    """Run a shell snippet; returns the RunResult."""

    def runner(script: str, **fields) -> RunResult:
        return run(["/bin/sh", "-c", script], **fields)

    return runner


@pytest.fixture(autouse=True)
def worker_environment_restored():
    """An in-process Jupyter server's extension sets these for its kernels in this very process;
    each test leaves them as it found them."""
    saved = {name: os.environ.get(name) for name in ("JUPYTER_WORKER_SOCKET", HOLDER_ENV)}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def notebook_run():
    """Runs notebooks headless, as nbconvert, papermill and `jupyter execute` do (nbclient, a real
    kernel), in a notebook folder under /tmp against an executor of the module's own. Yields
    (run, folder); run(*cells, allow_errors=False) returns the executed notebook (its first cell
    loads the extension); a failing cell raises nbclient's CellExecutionError unless allowed."""
    import nbformat  # noqa: PLC0415 - only the notebook tests need them
    from nbclient import NotebookClient  # noqa: PLC0415

    from tests.executor.conftest import started_daemon  # noqa: PLC0415

    folder = tempfile.mkdtemp(prefix="jupyter-worker-notebook-")
    os.chmod(folder, 0o755)

    def run(*sources: str, allow_errors: bool = False) -> nbformat.NotebookNode:
        cells = [nbformat.v4.new_code_cell(s) for s in ("%load_ext jupyter_worker", *sources)]
        notebook = nbformat.v4.new_notebook(cells=cells)
        where = {"metadata": {"path": folder}}
        NotebookClient(notebook, timeout=180, allow_errors=allow_errors, resources=where).execute()
        return notebook

    try:
        with started_daemon([]) as daemon, pytest.MonkeyPatch.context() as patch:
            patch.setenv("JUPYTER_WORKER_SOCKET", daemon.socket)
            yield run, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


CLI = [sys.executable, "-m", "jupyter_worker.cli"]
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout


def cli(
    *args: str, daemon: Daemon | None = None, user: str | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess:
    """The real command, as root or as a test user, against daemon's socket if given, from cwd."""
    as_user = ["runuser", "-u", user, "--"] if user else []
    at = ["--socket", daemon.socket] if daemon else []
    command = [*as_user, *CLI, *at, *args]
    env = {**os.environ, "PYTHONPATH": REPOSITORY}  # found from any folder, as an installed package is
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60, cwd=cwd, env=env)
