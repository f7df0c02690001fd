"""%%worker --in/--out and run(fn)/Job.value() through a real kernel (nbclient) against a real
executor, the notebook under /tmp. The kernel runs as root, so its jobs run as nobody: the --in
file is read through its 0711 folder by a job of another user."""

from __future__ import annotations

import pytest
from nbclient.exceptions import CellExecutionError


def text_of(cell) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


SETUP = (
    "import numpy as np, pandas as pd, os\n"
    "a = {'k': [1, 2.5, None]}\nb = np.arange(4)\nclass Local:\n    x = 1\n"
    "from jupyter_core.paths import jupyter_runtime_dir\n"
    "before = set(os.listdir(jupyter_runtime_dir()))"
)

OUT_CELL = """%%worker --wait --in a,b --out j,t,s,by,arr,sc,df,se --max-memory 1G
import numpy as np, pandas as pd
j = {'got': a, 'sum': int(b.sum())}
t = (1, 2)
s = 'héllo'
by = b'\\x00\\xff'
arr = b.reshape(2, 2) * 1.5
sc = np.int64(7)
df = pd.DataFrame({'x': [1, 2], 'y': ['a', 'b']})
se = pd.Series([0.5], name='half')
print('in the job:', os.getuid() if (os := __import__('os')) else None)
"""

CHECK = (
    "assert j == {'got': {'k': [1, 2.5, None]}, 'sum': 6}, j\n"
    "assert t == [1, 2] and s == 'héllo' and by == b'\\x00\\xff'\n"
    "assert arr.tolist() == [[0.0, 1.5], [3.0, 4.5]] and arr.dtype == np.float64\n"
    "assert sc == 7 and isinstance(sc, np.int64)\n"
    "pd.testing.assert_frame_equal(df, pd.DataFrame({'x': [1, 2], 'y': ['a', 'b']}))\n"
    "pd.testing.assert_series_equal(se, pd.Series([0.5], name='half'))\n"
    "after = set(os.listdir(jupyter_runtime_dir()))\n"
    "print('checked', sorted(n for n in after - before if n.startswith('jupyter-worker-in-')))"
)


def test_values_of_each_safe_type_go_in_and_come_back(notebook_run):
    run, _ = notebook_run
    notebook = run(SETUP, OUT_CELL, CHECK)
    assert "in the job: 65534" in text_of(notebook.cells[2])  # nobody read the 0711 folder's file
    assert text_of(notebook.cells[3]).strip() == "checked []"  # the input folder is gone


def test_a_refused_value_is_one_clear_error_and_the_others_still_arrive(notebook_run):
    run, _ = notebook_run
    cell = "%%worker --wait --out ok,bad,gone\nok = 1\nbad = {1, 2}\nclass Mine: pass"
    with pytest.raises(CellExecutionError) as failed:
        run(cell, "print(ok)")
    message = str(failed.value)
    assert "ValuesNotReturned" in message
    assert "bad: a set has no safe format" in message and "--out-pickle sends it pickled" in message
    assert "gone: not sent back" in message or "gone: not defined in the job" in message
    notebook = run(cell, "print(ok)", allow_errors=True)
    assert "value not sent back: bad: a set" in text_of(notebook.cells[1])  # the job's log says it too
    assert text_of(notebook.cells[2]).strip() == "1"


def test_out_pickle_brings_back_any_value(notebook_run):
    run, _ = notebook_run
    notebook = run("%%worker --wait --out st --out-pickle\nst = {1, 2}", "print(sorted(st))")
    assert text_of(notebook.cells[2]).strip() == "[1, 2]"


def test_values_arrive_from_a_headless_cell_without_wait(notebook_run):
    run, _ = notebook_run
    notebook = run("x = 20", "%%worker --in x --out y\ny = x + 22\nprint('computed')", "print(y)")
    assert "computed" in text_of(notebook.cells[2]) and "completed: exit code 0" in text_of(notebook.cells[2])
    assert text_of(notebook.cells[3]).strip() == "42"


def test_bad_names_and_missing_or_unpicklable_inputs_are_usage_errors(notebook_run):
    run, _ = notebook_run
    for cell, words in (
        ("%%worker --out 'a-b'\npass", "--out: 'a-b' is not a variable name"),
        ("%%worker --in nowhere\npass", "--in: nowhere not defined in the kernel"),
        ("%%worker --bash --out x\necho", "--in, --out and --out-pickle are for Python cells"),
    ):
        with pytest.raises(CellExecutionError) as failed:
            run(cell)
        assert "UsageError" in str(failed.value) and words in str(failed.value)
    with pytest.raises(CellExecutionError) as failed:
        run("import threading\nlock = threading.Lock()", "%%worker --in lock\npass")
    assert "--in: lock cannot be pickled" in str(failed.value)


def test_run_a_function_and_get_its_value_through_the_same_safe_formats(notebook_run):
    run, _ = notebook_run
    cell = (
        "import jupyter_worker, json, os\n"
        "from jupyter_core.paths import jupyter_runtime_dir\n"
        "before = set(os.listdir(jupyter_runtime_dir()))\n"
        "def square(values, power=2):\n    import numpy\n    return numpy.array(values) ** power\n"
        "job = jupyter_worker.run(square, [1, 2, 3], kwargs={'power': 3}, memory_mb='1G')\n"
        "print(job.value().tolist(), job.record.name)\n"
        "print(jupyter_worker.run(json.dumps, {'a': 1}).value())\n"
        "try:\n    jupyter_worker.run(set, [1]).value()\nexcept Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print(jupyter_worker.run(set, [1], out_pickle=True).value())\n"
        "try:\n    jupyter_worker.run(lambda: 1)\nexcept Exception as exc:\n    print(type(exc).__name__)\n"
        "print('left', sorted(n for n in set(os.listdir(jupyter_runtime_dir())) - before if 'jupyter-worker-in-' in n))"
    )
    lines = text_of(run(cell).cells[1]).splitlines()
    assert lines[0] == "[1, 8, 27] square"
    assert lines[1] == '{"a": 1}'
    assert lines[2].startswith("ValuesNotReturned values not returned: return: a set has no safe format")
    assert lines[3] == "{1}"
    assert lines[4] == "SpecError"
    assert lines[5] == "left []"  # every job has ended (value() waited): no input folder is left


def test_the_input_file_is_named_in_the_jobs_environment_not_its_command(notebook_run):
    run, _ = notebook_run
    cell = "%%worker --wait --in a\nimport os\nprint('seen', 'JUPYTER_WORKER_IN' in os.environ, a)"
    check = "print(any('jupyter-worker-in-' in word for word in _worker_job.record.command))"
    notebook = run("a = 5", cell, check)
    assert "seen False 5" in text_of(notebook.cells[2])  # the runner took it out of the cell's sight
    assert text_of(notebook.cells[3]).strip() == "False"


def test_an_input_of_a_class_defined_in_the_notebook_is_one_clear_line(notebook_run):
    run, _ = notebook_run
    notebook = run("class Local:\n    x = 1\nobj = Local()", "%%worker --wait --in obj\nprint(obj)", allow_errors=True)
    text = text_of(notebook.cells[2])
    assert "obj cannot be unpickled in the job" in text and "defined in the notebook" in text
    assert "Traceback" not in text
    error = next(o for o in notebook.cells[2].outputs if o["output_type"] == "error")
    assert error["ename"] == "JobFailed" and "exit code 1" in error["evalue"]
    assert len(error["traceback"]) == 1 and error["traceback"][0].startswith("JobFailed: job ")


def test_unpicklable_inputs_name_the_variable_and_run_names_the_argument(notebook_run):
    run, _ = notebook_run
    cell = (
        "import threading, jupyter_worker\nlock = threading.Lock()\n"
        "try:\n    jupyter_worker.run(print, 1, lock)\nexcept Exception as exc:\n    print(exc)"
    )
    notebook = run(cell, "%%worker --in lock\npass", allow_errors=True)
    assert text_of(notebook.cells[1]).startswith("run() arguments: argument 2 cannot be pickled")
    assert "UsageError: --in: lock cannot be pickled (TypeError" in text_of(notebook.cells[2])


def test_a_failed_values_cell_shows_one_line_not_a_traceback(notebook_run):
    run, _ = notebook_run
    notebook = run("%%worker --wait --out gone\npass", allow_errors=True)
    error = next(o for o in notebook.cells[1].outputs if o["output_type"] == "error")
    assert error["ename"] == "ValuesNotReturned" and "gone:" in error["evalue"]
    assert len(error["traceback"]) == 1 and error["traceback"][0].startswith("ValuesNotReturned: values not returned")
    check = "import jupyter_worker\nprint(jupyter_worker.ValuesNotReturned.__name__)"
    assert text_of(run(check).cells[1]).strip() == "ValuesNotReturned"


def test_the_policys_value_cap_is_the_one_both_sides_use(notebook_run):
    """An executor whose policy caps a value at 4000 bytes: the job refuses a larger one (and says
    so), and the kernel reads the same cap from the executor's capabilities."""
    import nbformat  # noqa: PLC0415
    from nbclient import NotebookClient  # noqa: PLC0415

    from tests.executor.conftest import started_daemon  # noqa: PLC0415

    _, folder = notebook_run
    cells = [
        "%load_ext jupyter_worker",
        "%%worker --wait --out small,big\nsmall = 'x' * 100\nbig = 'y' * 5000",
        "from jupyter_worker import values\nfrom jupyter_worker.client import Client\n"
        "with Client() as client:\n    print(values.max_value_bytes(client))",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    with started_daemon(["--Policy.max_value_bytes=4000"]) as daemon, pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_WORKER_SOCKET", daemon.socket)
        client = NotebookClient(notebook, timeout=180, allow_errors=True, resources={"metadata": {"path": folder}})
        client.execute()
    error = next(o for o in notebook.cells[1].outputs if o["output_type"] == "error")
    assert error["ename"] == "ValuesNotReturned" and "big: 5000 bytes as txt, above the cap of 4000" in error["evalue"]
    assert "small" not in error["evalue"]
    assert text_of(notebook.cells[2]).strip() == "4000"
