"""A %%worker widget's output lasts: through a real kernel, the cell's display holds the widget
view and the job's text/plain and text/html forms under one display_id, updated as it goes, and
once the job has ended it is replaced by the lasting forms alone (what a saved notebook keeps)."""

from __future__ import annotations

import time

from tests.test_magics import WIDGET, kernel, run_cell, wait_in_kernel  # noqa: F401 - the kernel fixture

VIEW = "application/vnd.jupyter.widget-view+json"


def displays(client, message_id: str, until, timeout: float = 90) -> list[dict]:
    """The cell's display_data and update_display_data messages, until one satisfies until."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.get_iopub_msg(timeout=timeout)
        if message["msg_type"] in ("display_data", "update_display_data"):
            seen.append(message)
            if until(message):
                return seen
    raise AssertionError(f"no such display: {[m['msg_type'] for m in seen]}")


def test_a_widgets_display_ends_as_its_jobs_lasting_text_and_html(kernel):  # noqa: F811
    client, _ = kernel
    message_id = client.execute(
        "%%worker --name lasting --max-memory 128\nimport sys\nfor i in range(100): print('line', i)\n"
        "print('<b>$x$</b>', file=sys.stderr)"
    )
    seen = displays(
        client, message_id, lambda m: m["msg_type"] == "update_display_data" and VIEW not in m["content"]["data"]
    )
    first, last = seen[0], seen[-1]
    assert first["msg_type"] == "display_data" and first["parent_header"]["msg_id"] == message_id
    display_id = first["content"]["transient"]["display_id"]
    assert {VIEW, "text/plain", "text/html"} <= set(first["content"]["data"])
    assert first["content"]["data"]["text/plain"].startswith("job lasting ")
    assert last["content"]["transient"]["display_id"] == display_id
    text, page = last["content"]["data"]["text/plain"], last["content"]["data"]["text/html"]
    assert set(last["content"]["data"]) == {"text/plain", "text/html"}
    assert text.startswith("job lasting ") and ": exit code 0 (ran " in text
    assert "memory peak" in text and "of 128 MiB" in text and "line 99" in text and "<b>$x$</b>" in text
    assert "exit code 0" in page and "line 99" in page and "&lt;b&gt;&#36;x&#36;&lt;/b&gt;" in page
    wait_in_kernel(client, f"{WIDGET}.finished")


def test_an_ended_jobs_widget_shows_its_peaks_and_the_chart_of_its_whole_run(kernel):  # noqa: F811
    client, _ = kernel
    run_cell(client, "%%worker --bash --name first-in-line\nsleep 4")
    wait_in_kernel(client, f"{WIDGET}.finished")
    header = run_cell(client, f"print({WIDGET}.header.value, {WIDGET}.resources.value)")["text"]
    assert "exit code 0" in header and "CPU time" in header and "memory peak" in header and "now" not in header
    chart = run_cell(client, f"print({WIDGET}.chart.value)")["text"]
    assert "CPU % (100 = one core)" in chart and "<polyline" in chart  # the whole run, from its history
