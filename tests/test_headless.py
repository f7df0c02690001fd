"""Headless runs (nbclient as nbconvert and papermill use it, and `jupyter execute` itself) stop at
a %%worker cell whose job does not complete, with or without --wait; --no-fail lets them go on."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError


def test_a_failing_cell_without_wait_stops_a_headless_run(notebook_run):
    run, _ = notebook_run
    with pytest.raises(CellExecutionError) as failed:
        run("%%worker\nprint('started')\nraise SystemExit(5)", "print('never reached')")
    assert "JobFailed" in str(failed.value) and "exit code 5" in str(failed.value)
    notebook = run("%%worker --max-memory 64M\nb = bytearray(512 << 20)", "print('after')", allow_errors=True)
    oom = notebook.cells[1]
    error = next(o for o in oom.outputs if o["output_type"] == "error")
    assert error["ename"] == "JobFailed" and "out of memory (limit 64 MiB)" in error["evalue"]
    assert error["traceback"] == [f"JobFailed: {error['evalue']}"]  # one line, no internal frames


def test_a_bash_cell_that_times_out_fails_too(notebook_run):
    run, _ = notebook_run
    with pytest.raises(CellExecutionError) as failed:
        run("%%worker --bash --timeout 1s\nsleep 30", "print('never reached')")
    assert "timed out after 1s" in str(failed.value)


def test_no_fail_lets_the_run_go_on_saying_how_the_job_ended(notebook_run):
    run, _ = notebook_run
    notebook = run("%%worker --no-fail\nraise SystemExit(5)", "print('reached')")
    failed, after = notebook.cells[1], notebook.cells[2]
    assert not any(o["output_type"] == "error" for o in failed.outputs)
    assert "failed: exit code 5" in "".join(o.get("text", "") for o in failed.outputs)
    assert after.outputs[0]["text"] == "reached\n"
    notebook = run("%%worker --wait --no-fail --bash\nexit 6", "print('reached')")
    assert "failed: exit code 6" in "".join(o.get("text", "") for o in notebook.cells[1].outputs)
    assert notebook.cells[2].outputs[0]["text"] == "reached\n"


def test_jupyter_execute_exits_non_zero_at_a_failing_job(notebook_run):
    _, folder = notebook_run
    path = os.path.join(folder, "fails.ipynb")
    cells = ["%load_ext jupyter_worker", "%%worker\nraise SystemExit(2)", "open('reached', 'w').close()"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    done = subprocess.run(
        [jupyter, "execute", "fails.ipynb"], cwd=folder, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode != 0 and "exit code 2" in done.stderr
    assert not os.path.exists(os.path.join(folder, "reached"))
