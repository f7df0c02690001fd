"""`%worker attach ID` and jupyter_worker.attach(id): a job's widget again, in a fresh kernel, for a
running job (live, with Stop) and an ended one (its log and metric history reloaded)."""

from __future__ import annotations

import pytest

from tests.test_magics import WIDGET, kernel, run_cell, started_kernel, wait_in_kernel  # noqa: F401 - the kernel fixture


@pytest.fixture
def fresh_kernel(kernel):  # noqa: F811
    """Another kernel (as after a restart) on the first one's executor."""
    client, notebook_dir = kernel
    socket = run_cell(client, "import os; print(os.environ['JUPYTER_WORKER_SOCKET'])")["text"].strip()
    with started_kernel(notebook_dir, JUPYTER_WORKER_SOCKET=socket) as fresh:
        run_cell(fresh, "%load_ext jupyter_worker")
        yield fresh


def test_attach_in_a_fresh_kernel_reloads_an_ended_jobs_log_and_metric_history(kernel, fresh_kernel):  # noqa: F811
    client, _ = kernel
    run_cell(
        client, "%%worker --wait --name ended-one\nimport time\nfor i in range(3): print('tick', i); time.sleep(1)"
    )
    job_id = run_cell(client, "print(_worker_job.id)")["text"].strip()
    shown = run_cell(fresh_kernel, f"%worker attach {job_id[:8]}")
    assert shown["status"] == "ok" and f"job ended-one {job_id[:8]}: exit code 0" in shown["text"]
    wait_in_kernel(fresh_kernel, f"{WIDGET}.finished")
    lasting = run_cell(fresh_kernel, f"print({WIDGET}.bundle()['text/plain'])")["text"]
    assert "exit code 0" in lasting and "tick 2" in lasting and "CPU time" in lasting
    chart = run_cell(fresh_kernel, f"print(len({WIDGET}.samples), {WIDGET}.chart.value)")["text"]
    assert int(chart.split()[0]) >= 2 and "<polyline" in chart


def test_attach_shows_a_running_job_live_with_its_stop_button(kernel, fresh_kernel):  # noqa: F811
    client, _ = kernel
    run_cell(client, "napper = %worker run --name attached-napper -- sh -c 'echo awake; sleep 300'")
    job_id = run_cell(client, "print(napper.id)")["text"].strip()
    reply = run_cell(fresh_kernel, f"import jupyter_worker\nj = jupyter_worker.attach({job_id!r})\nprint(j)")
    assert reply["status"] == "ok" and f"<Job {job_id[:8]}" in reply["text"]
    run_cell(fresh_kernel, f"%worker attach {job_id[:8]}")
    wait_in_kernel(fresh_kernel, f"'awake' in {WIDGET}.log.value")
    assert run_cell(fresh_kernel, f"print({WIDGET}.stop_button.disabled)")["text"].strip() == "False"
    run_cell(fresh_kernel, f"{WIDGET}.stop_button.click()")
    wait_in_kernel(fresh_kernel, f"{WIDGET}.finished")
    assert "stopped by" in run_cell(fresh_kernel, f"print({WIDGET}.header.value)")["text"]
    assert run_cell(client, "print(napper.status)")["text"].strip() == "STOPPED"


def test_attach_refuses_an_unknown_job_in_one_line(fresh_kernel):
    reply = run_cell(fresh_kernel, "%worker attach ffffffff")
    assert reply["status"] == "error" and len(reply["traceback"]) <= 2


def test_an_error_of_the_python_api_is_one_line_naming_its_reason_not_the_clients_frames(fresh_kernel):
    reply = run_cell(fresh_kernel, "import jupyter_worker\njupyter_worker.attach('ffffffff')")
    assert reply["status"] == "error" and reply["ename"] == "WorkerError"
    assert reply["traceback"] == ["WorkerError: no job ffffffff"]
