"""notebooks/demo.ipynb runs top to bottom headless (as nbconvert and papermill run it) and every
feature it shows produces what its prose promises."""

from __future__ import annotations

import os
import shutil
import tempfile

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import DEMO
from tests.executor.conftest import started_daemon


@pytest.fixture(scope="module")
def executed(users):
    folder = tempfile.mkdtemp(prefix="jupyter-worker-demo-")
    os.chmod(folder, 0o755)
    shutil.copy(DEMO, folder)
    os.chmod(os.path.join(folder, "demo.ipynb"), 0o644)
    notebook = nbformat.read(DEMO, as_version=4)
    with started_daemon([]) as daemon, pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_WORKER_SOCKET", daemon.socket)
        NotebookClient(notebook, timeout=120, resources={"metadata": {"path": folder}}).execute()
    yield notebook, folder
    shutil.rmtree(folder)


def output_of(notebook: nbformat.NotebookNode, starts_with: str) -> str:
    cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(starts_with))
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_a_cell_job_streams_its_output_and_completes(executed):
    notebook, _ = executed
    text = output_of(notebook, "%%worker --name counting")
    assert "step 0\nstep 1\nstep 2\nstep 3\nstep 4\ndone\n" in text and "completed: exit code 0" in text


def test_the_notebook_folder_is_read_only_and_work_is_writable(executed):
    notebook, folder = executed
    assert output_of(notebook, "%%worker --wait --bash").split("\n") == [
        folder,
        "demo.ipynb",
        "the notebook's folder is read-only in the job",
        "scratch",
        "",
    ]
    assert os.listdir(folder) == ["demo.ipynb"]


def test_limits_end_jobs_with_the_reason_in_words(executed):
    notebook, _ = executed
    assert "failed: killed: out of memory (limit 64 MiB)" in output_of(notebook, "%%worker --name hungry")
    sleepy = output_of(notebook, "%%worker --name sleepy")
    assert sleepy.startswith("going to sleep") and "failed: timed out after 2 s" in sleepy


def test_a_long_job_is_stopped_and_its_log_kept(executed):
    notebook, _ = executed
    assert "stopped: stopped by root" in output_of(notebook, "import time")
    assert output_of(notebook, "%worker logs").count("UTC") >= 2


def test_the_listing_and_the_python_api(executed):
    notebook, _ = executed
    listing = output_of(notebook, "%worker list")
    assert all(name in listing for name in ("counting", "hungry", "sleepy", "sleeper"))
    api = output_of(notebook, "import jupyter_worker").split("\n")
    assert api[0] == "499999500000 exit 0" and api[1].startswith("CPU ")
    assert "as expected: job" in output_of(notebook, "try:") and "exit code 3" in output_of(notebook, "try:")
