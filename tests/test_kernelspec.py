"""The jupyter-worker kernelspec lets another Python environment (papermill's, nbclient's) run a
notebook whose %%worker cells run jobs: the kernel is this environment's Python, named by its path,
with the magics loaded at start."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
from packaging.requirements import Requirement

from tests.conftest import cli, is_root
from tests.executor.conftest import started_daemon

pytestmark = pytest.mark.skipif(not is_root(), reason="runs as a test user against a real executor")

# Runs in the other environment: a notebook that names only the kernel, executed by nbclient.
RUN_NOTEBOOK = textwrap.dedent(
    """
    import sys, nbformat
    from nbclient import NotebookClient
    cells = [
        "import sys; print(sys.executable)",
        "%%worker --wait\\nprint('from the job', 6 * 7)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "jupyter-worker", "display_name": "x", "language": "python"}
    NotebookClient(notebook, timeout=120, resources={"metadata": {"path": sys.argv[1]}}).execute()
    for cell in notebook.cells:
        print("CELL", "".join(o.get("text", "") for o in cell.outputs).strip())
    """
)


def _needed(name: str, seen: set[str]) -> None:
    """The distribution and, recursively, those it requires (no extras)."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    seen.add(key)
    for text in importlib.metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            _needed(requirement.name, seen)


def other_environment(folder: str, *distributions: str) -> str:
    """A venv of the base Python holding only distributions (and what they need), linked from this
    environment's site-packages; its python."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", folder], check=True)
    python = os.path.join(folder, "bin", "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    seen: set[str] = set()
    for name in distributions:
        _needed(name, seen)
    for name in seen:
        dist = importlib.metadata.distribution(name)
        tops = {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            source = str(dist.locate_file(top))
            if os.path.exists(source) and not os.path.lexists(os.path.join(site, top)):
                os.symlink(source, os.path.join(site, top))
    return python


@pytest.fixture
def place():
    """A folder the test users can enter (pytest's own temporary folders are root's alone)."""
    folder = tempfile.mkdtemp(prefix="jupyter-worker-kernelspec-")
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_nbclient_in_another_environment_runs_worker_cells_with_the_kernelspec_a_user_installed(users, place):
    other = other_environment(os.path.join(place, "other"), "nbclient")
    lacks = subprocess.run([other, "-c", "import jupyter_worker"], capture_output=True, text=True, check=False, cwd="/")
    assert "No module named 'jupyter_worker'" in lacks.stderr  # truly another environment
    home = users["jwtest-alice"].pw_dir
    installed = cli("kernelspec", "install", user="jwtest-alice")  # a user's default: --user
    folder = os.path.join(home, ".local/share/jupyter/kernels/jupyter-worker")
    assert installed.returncode == 0 and folder in installed.stdout, installed.stderr
    with open(os.path.join(folder, "kernel.json")) as f:
        spec = json.load(f)
    assert spec["argv"][0] == sys.executable and spec["argv"][-2:] == ["--ext", "jupyter_worker"]
    assert spec["display_name"] == "Python 3 (jupyter-worker)"
    work = os.path.join(place, "notebook")
    subprocess.run(["install", "-d", "-o", "jwtest-alice", work], check=True)
    with started_daemon([]) as daemon:
        env = ["PATH=/usr/bin:/bin", f"HOME={home}", f"JUPYTER_WORKER_SOCKET={daemon.socket}"]
        ran = subprocess.run(
            ["runuser", "-u", "jwtest-alice", "--", "env", "-i", *env, other, "-c", RUN_NOTEBOOK, work],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            cwd=work,
        )
    assert ran.returncode == 0, ran.stderr[-2000:]
    cells = [line.removeprefix("CELL ") for line in ran.stdout.splitlines() if line.startswith("CELL ")]
    assert cells[0] == sys.executable
    assert "from the job 42" in cells[1]


def test_the_kernelspec_goes_where_it_is_asked_and_a_folder_one_may_not_write_is_one_line(users, place):
    prefix = os.path.join(place, "prefix")
    done = cli("kernelspec", "install", "--prefix", prefix, "--name", "jw-test")
    assert done.returncode == 0, done.stderr
    with open(os.path.join(prefix, "share/jupyter/kernels/jw-test/kernel.json")) as f:
        assert json.load(f)["argv"][0] == sys.executable
    refused = cli("kernelspec", "install", "--prefix", "/usr/local", user="jwtest-bob")
    assert refused.returncode == 1
    assert refused.stderr.startswith("jupyter-worker: kernelspec: cannot write in /usr/local")
    assert refused.stderr.count("\n") == 1 and "as a user, use --user" in refused.stderr
