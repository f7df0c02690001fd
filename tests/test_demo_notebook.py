"""notebooks/demo.ipynb runs top to bottom headless (as nbconvert and papermill run it) and every
feature it shows produces what its prose promises."""

from __future__ import annotations

import base64
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
    assert sorted(os.listdir(folder)) == ["demo.ipynb", "results"]  # results: the --artifacts cell's


def test_limits_end_jobs_with_the_reason_in_words(executed):
    notebook, _ = executed
    assert "failed: killed: out of memory (limit 64 MiB)" in output_of(notebook, "%%worker --name hungry")
    sleepy = output_of(notebook, "%%worker --name sleepy")
    assert sleepy.startswith("going to sleep") and "failed: timed out after 2s" in sleepy


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


def test_values_go_in_and_come_back_and_the_cells_table_and_figure_are_display_outputs(executed):
    notebook, _ = executed
    assert output_of(notebook, "print(sum(squares)").strip() == "506 (12, 2)"
    values_cell = next(c for c in notebook.cells if c.source.startswith("%%worker --wait --in n --out"))
    assert any("<table" in o.get("data", {}).get("text/html", "") for o in values_cell.outputs)
    figure_cell = next(c for c in notebook.cells if c.source.startswith("%%worker --wait --in squares"))
    pngs = [o["data"]["image/png"] for o in figure_cell.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and base64.b64decode(pngs[0]).startswith(b"\x89PNG")


def test_artifacts_arrive_in_the_notebooks_folder_and_match_what_the_job_left(executed):
    notebook, folder = executed
    (job_folder,) = os.listdir(os.path.join(folder, "results"))
    report = os.path.join(folder, "results", job_folder, "report.csv")
    with open(report) as f:
        assert f.read() == "i,square\n0,0\n1,1\n2,4\n"
    assert os.stat(report).st_uid == os.getuid()  # the requester's, though the job ran as nobody
    shown = output_of(notebook, "report = ")
    assert shown.startswith("i,square\n") and shown.endswith("True\n")
