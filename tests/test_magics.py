"""%%worker, %worker and jupyter_worker.run, driven through a real IPython kernel."""

from __future__ import annotations

import os
import shutil
import tempfile

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.executor.conftest import started_daemon


@pytest.fixture(scope="module")
def kernel():
    """A real kernel whose working directory is a notebook folder, with the extension loaded."""
    notebook_dir = tempfile.mkdtemp(prefix="jupyter-worker-notebook-")
    os.chmod(notebook_dir, 0o777)
    with started_daemon([]) as daemon:
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(cwd=notebook_dir, env={**os.environ, "JUPYTER_WORKER_SOCKET": daemon.socket})
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        try:
            run_cell(client, "%load_ext jupyter_worker")
            yield client, notebook_dir
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
            shutil.rmtree(notebook_dir, ignore_errors=True)


def run_cell(client, code: str) -> dict:
    """Execute code; returns the reply content with the printed text gathered under 'text'."""
    text: list[str] = []

    def collect(message: dict) -> None:
        if message["msg_type"] == "stream":
            text.append(message["content"]["text"])
        elif message["msg_type"] in ("execute_result", "display_data"):
            text.append(message["content"]["data"].get("text/plain", ""))

    reply = client.execute_interactive(code, output_hook=collect, timeout=120)
    return {**reply["content"], "text": "".join(text)}


def test_a_cell_runs_as_a_job_with_the_kernels_python_in_the_notebook_folder(kernel):
    client, notebook_dir = kernel
    cell = (
        "%%worker --wait --max-memory 256\nimport os, sys\nprint('hi from a job', os.getcwd())\nprint(sys.executable)"
    )
    reply = run_cell(client, cell)
    assert reply["status"] == "ok", reply
    assert f"hi from a job {notebook_dir}" in reply["text"]
    assert "/opt/" in reply["text"] or "venv" in reply["text"]


def test_a_failing_cell_raises_naming_the_reason(kernel):
    client, _ = kernel
    reply = run_cell(client, "%%worker --wait --max-memory 32\nb = bytearray(256 << 20)")
    assert reply["status"] == "error"
    assert reply["ename"] == "JobFailed"
    assert "out of memory (limit 32 MiB)" in reply["evalue"]
    reply = run_cell(client, "%%worker --wait\nraise SystemExit(3)")
    assert (reply["ename"], reply["evalue"].split(": ", 1)[1]) == ("JobFailed", "exit code 3")


def test_bash_cells_and_flag_expansion(kernel):
    client, _ = kernel
    run_cell(client, "limit = 128")
    reply = run_cell(client, "%%worker --wait --bash --max-memory $limit\necho $((40 + 2))")
    assert reply["text"].strip() == "42"


def test_bad_flags_get_one_usage_message(kernel):
    client, _ = kernel
    reply = run_cell(client, "%%worker --max-memry 5\nprint(1)")
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    assert "unrecognized arguments: --max-memry" in reply["evalue"]
    reply = run_cell(client, "%worker frobnicate")
    assert reply["ename"] == "UsageError"


def test_bad_values_and_a_missing_command_are_usage_errors_naming_them(kernel):
    client, _ = kernel
    reply = run_cell(client, "%%worker --max-memory lots\nprint(1)")
    assert (reply["ename"], reply["evalue"]) == ("UsageError", "memory limit: 'lots' is not a size (e.g. 512M or 2G)")
    reply = run_cell(client, "%worker run --timeout 1x -- true")
    assert reply["ename"] == "UsageError" and "timeout: '1x' is not a duration" in reply["evalue"]
    reply = run_cell(client, "%worker run --name lonely")
    assert (reply["ename"], reply["evalue"]) == ("UsageError", "no command given (put it after --)")
    reply = run_cell(client, "%worker run --network wifi -- true")
    assert reply["ename"] == "UsageError" and reply["evalue"].startswith("%worker run: argument --network")


def test_jobs_in_the_background_are_listed_read_and_stopped(kernel):
    client, _ = kernel
    run_cell(client, "job = %worker run --name napper -- sh -c 'echo started; sleep 300'")
    job_id = run_cell(client, "print(job.id)")["text"].strip()
    run_cell(client, "import time\nwhile not job.record.metrics.get('memory_bytes'): time.sleep(0.1)")
    listing = run_cell(client, "%worker list")["text"].splitlines()
    assert listing[0].split() == ["ID", "STATUS", "NAME", "COMMAND", "STARTED", "DURATION", "CPU", "MEMORY"]
    row = next(line for line in listing if line.startswith(job_id[:8]))
    assert "RUNNING" in row and "napper" in row and "sh -c echo started; sleep 300" in row and "MiB" in row
    run_cell(client, "while 'started' not in job.logs(): time.sleep(0.1)")
    assert run_cell(client, f"%worker logs {job_id[:8]}")["text"] == "started\n"
    run_cell(client, f"%worker stop {job_id[:8]}")
    run_cell(client, "while job.status == 'RUNNING': time.sleep(0.1)")
    assert "STOPPED" in run_cell(client, f"%worker status {job_id[:8]}")["text"]


def test_the_python_api_and_a_writable_notebook_folder(kernel):
    client, notebook_dir = kernel
    code = (
        "import jupyter_worker\n"
        "j = jupyter_worker.run(\"open('made.txt', 'w').write('x'); print(6 * 7)\", mounts=['.:.:rw'],\n"
        "                       memory_mb='0.5G', timeout_s='10m', tmp_mb='32M')\n"
        "j.wait()\nprint(j.logs(), j.result.reason.value, j.result.limits.memory_mb, j.result.limits.timeout_s,\n"
        "      j.result.limits.tmp_mb)"
    )
    reply = run_cell(client, code)
    assert reply["status"] == "ok", reply
    assert reply["text"].split() == ["42", "exit", "512", "600.0", "32"]
    assert os.path.exists(os.path.join(notebook_dir, "made.txt"))


WIDGET = "get_ipython().magics_manager.registry['WorkerMagics'].last_widget"


def wait_in_kernel(client, condition: str) -> None:
    """Let the kernel's event loop run (top-level await) until condition holds there."""
    run_cell(client, f"import asyncio\nfor _ in range(300):\n    if {condition}: break\n    await asyncio.sleep(0.1)")


def test_a_cell_without_wait_shows_a_live_widget_that_ends_with_the_summary(kernel):
    client, _ = kernel
    cell = (
        "%%worker --name counting --max-memory 128\nimport sys\n"
        "for i in range(500): print(i)\nsys.stdout.flush()\nprint('<oops>', file=sys.stderr)"
    )
    reply = run_cell(client, cell)
    assert reply["status"] == "ok" and "VBox" in reply["text"]
    wait_in_kernel(client, f"{WIDGET}.finished")
    header = run_cell(client, f"print({WIDGET}.header.value)")["text"]
    assert "counting" in header and "exit code 0" in header and "#2e7d32" in header
    log = run_cell(client, f"print({WIDGET}.log.value)")["text"]
    assert "499" in log and "&lt;oops&gt;" in log and "<oops>" not in log
    assert log.count("\n") <= 210
    shown = run_cell(client, f"print({WIDGET}.stop_button.disabled, repr({WIDGET}.show_all.layout.display))")
    assert shown["text"].split() == ["True", "''"]
    run_cell(client, f"await {WIDGET}.load_all()")
    assert ">0\n1\n2\n" in run_cell(client, f"print({WIDGET}.log.value)")["text"]


def test_a_cell_without_wait_shows_display_output_under_its_widget_and_sets_its_values_at_the_end(kernel):
    client, _ = kernel
    run_cell(client, "x = 20")
    cell = (
        "%%worker --in x --out y,bad\nfrom IPython.display import display, HTML\n"
        "display(HTML('<b>bold</b><script>alert(1)</script>'))\ny = x + 22\nbad = {1}"
    )
    assert run_cell(client, cell)["status"] == "ok"
    wait_in_kernel(client, "'y' in globals()")
    outputs = run_cell(client, f"print({WIDGET}.output.outputs)")["text"]
    assert "<b>bold</b>" in outputs and "script" not in outputs and "alert" not in outputs
    assert run_cell(client, "print(y)")["text"].strip() == "42"
    wait_in_kernel(client, f"'values not returned' in {WIDGET}.log.value")
    log = run_cell(client, f"print({WIDGET}.log.value)")["text"]
    assert "values set: y; values not returned: bad: a set has no safe format" in log


def test_the_widgets_stop_button_stops_the_job(kernel):
    client, _ = kernel
    run_cell(client, "%%worker --bash\nsleep 300")
    wait_in_kernel(client, f"{WIDGET}.job.status == 'RUNNING'")
    run_cell(client, f"{WIDGET}.stop_button.click()")
    wait_in_kernel(client, f"{WIDGET}.finished")
    header = run_cell(client, f"print({WIDGET}.header.value)")["text"]
    assert "stopped by" in header and "#ef6c00" in header
    assert run_cell(client, "print(_worker_job.status)")["text"].strip() == "STOPPED"


def test_widgets_keep_working_after_the_cell_is_re_executed(kernel):
    client, _ = kernel
    cell = "%%worker --bash\nsleep 300"
    run_cell(client, cell)
    run_cell(client, f"first = {WIDGET}")
    run_cell(client, cell)
    run_cell(client, f"second = {WIDGET}")
    wait_in_kernel(client, "first.job.status == second.job.status == 'RUNNING'")
    run_cell(client, "first.stop_button.click()")
    wait_in_kernel(client, "first.finished")
    states = run_cell(client, "print(first.job.status.value, second.job.status.value, second.stop_button.disabled)")
    assert states["text"].split() == ["STOPPED", "RUNNING", "False"]
    run_cell(client, "second.stop_button.click()")
    wait_in_kernel(client, "second.finished")
    assert run_cell(client, "print(second.job.status.value)")["text"].strip() == "STOPPED"


@pytest.fixture
def headless(kernel, monkeypatch):
    """Runs a notebook the way nbconvert and papermill do (nbclient, no front end) in the kernel
    fixture's folder and against its executor."""
    client, notebook_dir = kernel
    monkeypatch.setenv(
        "JUPYTER_WORKER_SOCKET",
        run_cell(client, "import os; print(os.environ['JUPYTER_WORKER_SOCKET'])")["text"].strip(),
    )

    def execute(*sources: str) -> nbformat.NotebookNode:
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(s) for s in ("%load_ext jupyter_worker", *sources)]
        )
        NotebookClient(notebook, timeout=120, resources={"metadata": {"path": notebook_dir}}).execute()
        return notebook

    return execute


def text_of(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_headless_runners_get_the_jobs_streamed_output_instead_of_a_widget(headless):
    notebook = headless(
        "%%worker --no-fail --max-memory 64\nprint('working')\nb = bytearray(256 << 20)", "%%worker\nprint('fine')"
    )
    oom, fine = notebook.cells[1], notebook.cells[2]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in oom.outputs + fine.outputs)
    assert "working" in text_of(oom) and "killed: out of memory (limit 64 MiB)" in text_of(oom)
    assert text_of(fine).startswith("fine\n") and "completed: exit code 0" in text_of(fine)


def test_a_failing_wait_cell_stops_a_headless_run(headless):
    with pytest.raises(CellExecutionError) as failed:
        headless("%%worker --wait --bash\necho before; exit 4", "print('never reached')")
    assert "JobFailed" in str(failed.value) and "exit code 4" in str(failed.value)


def test_ipython_config_loads_the_extension_in_every_kernel(kernel):
    """The documented always-on setup: c.InteractiveShellApp.extensions in the IPython profile."""
    _, notebook_dir = kernel
    ipython_dir = tempfile.mkdtemp(prefix="jupyter-worker-ipython-")
    os.makedirs(os.path.join(ipython_dir, "profile_default"))
    with open(os.path.join(ipython_dir, "profile_default", "ipython_config.py"), "w") as config:
        config.write("c.InteractiveShellApp.extensions = ['jupyter_worker']\n")
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=notebook_dir, env={**os.environ, "IPYTHONDIR": ipython_dir})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        assert run_cell(client, "%lsmagic")["text"].count("worker") >= 2
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        shutil.rmtree(ipython_dir)


def test_every_flag_reaches_the_job(kernel):
    client, _ = kernel
    data = tempfile.mkdtemp(prefix="jupyter-worker-data-")
    os.chmod(data, 0o755)
    with open(os.path.join(data, "note"), "w") as note:
        note.write("from a mounted folder\n")
    os.chmod(os.path.join(data, "note"), 0o644)
    try:
        run_cell(client, f"data = {data!r}")
        cell = (
            "%%worker --wait --bash --max-memory 100M --max-cpu 50 --max-pids 20 --timeout 30s --max-tmp 16M "
            "--network none --env GREETING=hi --mount {data}:/data --name flagged\n"
            "echo $GREETING; cat /data/note; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; "
            "df -m /tmp | tail -1 | awk '{print $2}'"
        )
        reply = run_cell(client, cell)
        assert reply["text"] == "hi\nfrom a mounted folder\nlo\n16\n", reply
        record = run_cell(client, "r = _worker_job.record\nprint(r.name, sorted(r.limits.given().items()))")["text"]
        name, limits = record.split(" ", 1)
        assert name == "flagged"
        for pair in (
            "('cpu_percent', 50)",
            "('memory_mb', 100)",
            "('pids', 20)",
            "('timeout_s', 30.0)",
            "('tmp_mb', 16)",
        ):
            assert pair in limits
    finally:
        shutil.rmtree(data)
