"""The %%worker widget in daily use, in JupyterLab in chromium: the saved notebook holds each
job's ending and log tail, a reopened notebook after a kernel restart shows them (never "model
not found"), `%worker attach` in a fresh kernel, the log follows its tail unless scrolled up, and
the chart has labelled axes. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import os

import nbformat
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS, NOTEBOOK_READY, open_and_run_all, place

pytestmark = pytest.mark.browser

VIEW = "application/vnd.jupyter.widget-view+json"
ENDINGS = {  # a demo widget cell's name: its ending and a line of its log tail
    "counting": ("exit code 0", "done"),
    "hungry": ("killed: out of memory (limit 64 MiB)", None),
    "sleepy": ("timed out after 2s", "going to sleep for a minute"),
    "sleeper": ("stopped by root", None),
}


def notebook_of(cells: list[str]) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


def save(page: Page, lab, name: str) -> dict:
    """Save through JupyterLab (docmanager:save) and read the file it wrote."""
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
    with open(os.path.join(lab.root, name)) as f:
        return json.load(f)


def text(value: str | list[str]) -> str:
    """A saved output's text (nbformat may keep a string as its lines)."""
    return value if isinstance(value, str) else "".join(value)


def outputs_naming(saved: dict, name: str) -> list[dict]:
    return [
        {mime: text(value) for mime, value in output["data"].items() if mime.startswith("text/")}
        | {mime: value for mime, value in output["data"].items() if not mime.startswith("text/")}
        for cell in saved["cells"]
        if cell["cell_type"] == "code"
        for output in cell.get("outputs", [])
        if text(output.get("data", {}).get("text/plain", "")).startswith(f"job {name} ")
    ]


def test_the_saved_demo_holds_each_jobs_ending_and_a_reopened_one_shows_them_without_its_kernel(lab, page):
    place(lab, "lasting.ipynb")
    open_and_run_all(page, lab, "lasting.ipynb")
    notebook = page.locator(".jp-Notebook")
    for ending, _ in ENDINGS.values():
        expect(notebook.locator(".jp-RenderedHTMLCommon").get_by_text(ending).first).to_be_visible(timeout=90_000)
    saved = save(page, lab, "lasting.ipynb")
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, "lasting-saved.ipynb"), "w") as kept:  # what the test read, kept
        json.dump(saved, kept, indent=1)
    for name, (ending, tail) in ENDINGS.items():
        (data,) = outputs_naming(saved, name)
        assert VIEW not in data, name  # ended: the lasting forms alone
        assert ending in data["text/plain"] and ending in data["text/html"], name
        if tail:
            assert tail in data["text/plain"] and tail in data["text/html"], name
        assert "<svg" in data["text/html"] or name in ("hungry", "sleeper"), name  # those two: under a second
    page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    page.goto(f"{lab.url}/lab/tree/lasting.ipynb?reset&token={lab.token}")
    page.wait_for_function(NOTEBOOK_READY, arg="lasting.ipynb", timeout=90_000)
    notebook = page.locator(".jp-Notebook")
    for ending, tail in ENDINGS.values():
        expect(notebook.get_by_text(ending).first).to_be_visible(timeout=30_000)
        if tail:
            expect(notebook.get_by_text(tail).first).to_be_visible()
    assert "model not found" not in notebook.inner_text()
    assert "Error displaying widget" not in notebook.inner_text()


def test_the_log_follows_its_tail_unless_scrolled_up_and_the_chart_has_axes(lab, page):
    place(
        lab,
        "follow.ipynb",
        notebook_of(
            [
                "%load_ext jupyter_worker",
                "%%worker --name follower --bash\nfor i in $(seq 1 400); do echo line $i; sleep 0.1; done",
            ]
        ),
    )
    open_and_run_all(page, lab, "follow.ipynb")
    widget = page.locator(".jp-Notebook .widget-vbox").filter(has_text="follower").first
    log = widget.locator(".widget-html").filter(has_text="line 1").first
    expect(log).to_contain_text("line 60", timeout=60_000)
    scroll = "(e) => [e.scrollTop, e.scrollHeight, e.clientHeight]"
    top, height, client = log.evaluate(scroll)
    assert height > client and abs(top) < 2, (top, height, client)  # overflowing, at its bottom
    expect(log).to_contain_text("line 80", timeout=30_000)
    assert abs(log.evaluate(scroll)[0]) < 2  # new lines came: still at the bottom
    log.evaluate("(e) => { e.scrollTop = -150; }")  # the user scrolls up
    expect(log).to_contain_text("line 110", timeout=30_000)
    assert log.evaluate(scroll)[0] < -100  # it stayed where the user put it
    labels = widget.locator("svg text").all_text_contents()
    assert "CPU % (100 = one core)" in labels and "time" in labels and "0 s" in labels, labels
    assert any(label.startswith("Memory MiB") for label in labels), labels
    box = widget.locator("svg").first.bounding_box()
    assert box is not None and box["width"] > 600  # the cell's width, not a 240 px stub
    widget.get_by_role("button", name="Stop").click()
    expect(page.locator(".jp-Notebook").get_by_text("stopped by root").first).to_be_visible(timeout=30_000)


def test_attach_in_a_fresh_kernel_shows_a_running_job_with_its_stop(lab, page):
    place(lab, "start.ipynb", notebook_of(["%load_ext jupyter_worker", "j = %worker run --name far-away -- sleep 300"]))
    open_and_run_all(page, lab, "start.ipynb")
    expect(page.locator(".jp-Notebook").get_by_text("far-away").first).to_be_visible(timeout=60_000)
    job_id = page.evaluate(
        """async () => {
          const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
          const future = kernel.requestExecute({code: 'print(j.id)'});
          let text = '';
          future.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') text += msg.content.text; };
          await future.done;
          return text.trim();
        }"""
    )
    place(lab, "attach.ipynb", notebook_of(["%load_ext jupyter_worker", f"%worker attach {job_id[:8]}"]))
    open_and_run_all(page, lab, "attach.ipynb")
    widget = page.locator(".jp-Notebook .widget-vbox").filter(has_text="far-away").first
    expect(widget.get_by_text("running", exact=True)).to_be_visible(timeout=60_000)
    widget.get_by_role("button", name="Stop").click()
    expect(page.locator(".jp-Notebook").get_by_text("stopped by root").first).to_be_visible(timeout=30_000)
