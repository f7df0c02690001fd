"""The %%worker widget as a user sees it: JupyterLab in chromium, the demo notebook run top to
bottom, and the widget's Stop button clicked."""

from __future__ import annotations

import nbformat
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import open_and_run_all, place

pytestmark = pytest.mark.browser


def test_the_demo_notebook_runs_top_to_bottom_and_its_widgets_tell_each_ending(lab, page):
    place(lab, "demo.ipynb")
    open_and_run_all(page, lab, "demo.ipynb")
    notebook = page.locator(".jp-Notebook")
    # an ended job's output is its lasting form (widgets.py), not the widget any more
    counting = notebook.locator(".jp-OutputArea-output").filter(has_text="counting").first
    expect(counting.get_by_text("exit code 0")).to_be_visible(timeout=60_000)
    expect(counting.get_by_text("step 4")).to_be_visible()
    hungry = notebook.get_by_text("killed: out of memory (limit 64 MiB)")
    expect(hungry).to_be_visible(timeout=60_000)
    expect(notebook.get_by_text("timed out after 2s")).to_be_visible(timeout=60_000)
    expect(notebook.get_by_text("stopped by root").first).to_be_visible(timeout=60_000)
    expect(notebook.get_by_text("as expected: job")).to_be_visible()
    assert "Traceback" not in notebook.inner_text()
    hungry.scroll_into_view_if_needed()


def test_the_stop_button_stops_a_running_job(lab, page):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext jupyter_worker"),
            nbformat.v4.new_code_cell("%%worker --name napping --bash\necho 'waiting <here>'; sleep 300"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    place(lab, "stop.ipynb", notebook)
    open_and_run_all(page, lab, "stop.ipynb")
    widget = page.locator(".jp-Notebook .widget-vbox").filter(has_text="napping")
    expect(widget.get_by_text("running", exact=True)).to_be_visible(timeout=60_000)
    expect(widget.get_by_text("waiting <here>")).to_be_visible(timeout=30_000)
    stop = widget.get_by_role("button", name="Stop")
    expect(stop).to_be_enabled()
    stop.click()
    ended = page.locator(".jp-Notebook .jp-OutputArea-output").filter(has_text="napping").first
    expect(ended.get_by_text("stopped by root")).to_be_visible(timeout=30_000)
    expect(ended.get_by_text("CPU time", exact=False)).to_be_visible()
    expect(ended.get_by_role("button", name="Stop")).to_have_count(0)  # ended: nothing left to stop
