"""%%worker, %worker and jupyter_worker.run, driven through a real IPython kernel."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator

import nbformat
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.executor.conftest import started_daemon


@contextlib.contextmanager
def started_kernel(cwd: str, **env: str) -> Iterator[BlockingKernelClient]:
    """A real python3 kernel in cwd with env on top of this process's, shut down on leaving."""
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=cwd, env={**os.environ, **env})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel():
    """A real kernel whose working directory is a notebook folder, with the extension loaded."""
    notebook_dir = tempfile.mkdtemp(prefix="jupyter-worker-notebook-")
    os.chmod(notebook_dir, 0o777)
    try:
        with started_daemon([]) as daemon, started_kernel(notebook_dir, JUPYTER_WORKER_SOCKET=daemon.socket) as client:
            run_cell(client, "%load_ext jupyter_worker")
            yield client, notebook_dir
    finally:
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
    assert reply["status"] == "ok" and reply["text"].startswith("job counting ")
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


STOP_BOTH = """
from jupyter_worker.client import Client
for widget in (first, second):
    Client(widget.socket).stop(widget.job.id, grace_s=0)
"""


def test_widgets_keep_working_after_the_cell_is_re_executed(kernel):
    client, _ = kernel
    cell = "%%worker --bash\nsleep 300"
    run_cell(client, cell)
    run_cell(client, f"first = {WIDGET}")
    run_cell(client, cell)
    run_cell(client, f"second = {WIDGET}")
    wait_in_kernel(client, "first.job.status == second.job.status == 'RUNNING'")
    # the earlier run's job, still running, is named in the new widget beside a Stop of its own
    first_id = run_cell(client, "print(first.job.id[:8])")["text"].strip()
    said = run_cell(client, "print(second.box.children[4].children[2].value)")["text"]
    assert f"job <code>{first_id}</code>, is still running" in said
    assert (
        run_cell(client, "print(second.box.children[4].children[3].description)")["text"].strip() == f"Stop {first_id}"
    )
    try:
        run_cell(client, "first.stop_button.click()")
        wait_in_kernel(client, "first.finished")
        states = run_cell(client, "print(first.job.status.value, second.job.status.value, second.stop_button.disabled)")
        assert states["text"].split() == ["STOPPED", "RUNNING", "False"], run_cell(client, "print(first.notes)")
        run_cell(client, "second.stop_button.click()")
        wait_in_kernel(client, "second.finished")
        assert run_cell(client, "print(second.job.status.value)")["text"].strip() == "STOPPED"
    finally:  # neither sleeper outlives the test, whatever failed: the next tests' jobs would queue behind them
        run_cell(client, STOP_BOTH)


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
    try:
        with started_kernel(notebook_dir, IPYTHONDIR=ipython_dir) as client:
            assert run_cell(client, "%lsmagic")["text"].count("worker") >= 2
    finally:
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


def test_list_filters_are_honoured_and_bad_ones_refused(kernel):
    client, _ = kernel
    run_cell(client, "napper = %worker run --name listed-napper -- sleep 300")
    run_cell(client, "import time\nwhile napper.status != 'RUNNING': time.sleep(0.1)")
    run_cell(client, "%worker run --wait --name listed-done -- true")
    running = run_cell(client, "%worker list --status RUNNING")["text"]
    assert "listed-napper" in running and "listed-done" not in running
    done = run_cell(client, "%worker list --status completed --limit 5")["text"]
    assert "listed-done" in done and "listed-napper" not in done
    as_json = run_cell(client, "%worker list --status RUNNING --json")["text"]
    assert '"name": "listed-napper"' in as_json
    run_cell(client, "napper.stop()")
    refused = run_cell(client, "%worker list --status NAPPING")
    assert refused["status"] == "error" and "invalid choice: 'NAPPING'" in refused["evalue"]
    assert run_cell(client, "%worker list --bogus")["status"] == "error"


def test_run_wait_returns_the_job_handle(kernel):
    client, _ = kernel
    reply = run_cell(client, "done = %worker run --wait -- echo hello\nprint(done.status, done.result.exit_code)")
    assert reply["text"] == "hello\nCOMPLETED 0\n", reply


def test_an_interrupted_wait_cell_says_in_one_line_that_it_stopped_the_job(kernel):
    client, _ = kernel
    pid = int(
        run_cell(client, "import os, jupyter_worker\nfrom jupyter_worker.client import Client\nprint(os.getpid())")[
            "text"
        ]
    )
    message_id = client.execute("%%worker --wait --bash --name interrupted\necho napping; sleep 300")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the job's first line has come: the cell is waiting on it
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") == message_id and "napping" in message["content"].get("text", ""):
            break
    os.kill(pid, signal.SIGINT)
    reply = client.get_shell_msg(timeout=60)["content"]
    assert reply["status"] == "error"
    assert reply["traceback"] == [f"stopped job {reply['evalue'].split()[-1]}"] and reply["ename"] == "JobInterrupted"
    job_id = reply["evalue"].split()[-1]
    assert re.fullmatch(r"[0-9a-f]{8}", job_id)
    # the stop asked, the job ends within its grace: looked at from the kernel until it has
    deadline, shown = time.monotonic() + 60, ""
    while "STOPPED" not in shown and time.monotonic() < deadline:
        shown = run_cell(client, f"%worker status {job_id}")["text"]
        time.sleep(0.2)
    assert "STOPPED" in shown, shown


def test_a_failed_wait_cell_and_a_failed_wait_run_show_one_line(kernel):
    client, _ = kernel
    for code in ("%%worker --wait --bash\nexit 3", "%worker run --wait -- sh -c 'exit 3'"):
        reply = run_cell(client, code)
        assert reply["status"] == "error" and len(reply["traceback"]) == 1, reply
        assert reply["traceback"][0].startswith("JobFailed: job ") and "exit code 3" in reply["traceback"][0]


def test_cell_jobs_are_named_by_their_notebook_and_first_line(kernel):
    client, _ = kernel
    run_cell(client, "__session__ = '/home/someone/analysis.ipynb'")
    run_cell(client, "%%worker --wait --bash\necho named # first line")
    assert run_cell(client, "print(_worker_job.record.name)")["text"] == "analysis.ipynb - echo named first line\n"
    run_cell(client, "del __session__")
    run_cell(client, "%%worker --wait\nprint('x')")
    assert run_cell(client, "print(_worker_job.record.name)")["text"] == "print x\n"
