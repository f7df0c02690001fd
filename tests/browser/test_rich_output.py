"""A %%worker cell's rich output as a user sees it in JupyterLab: a DataFrame's table and a
matplotlib figure under the job's widget, as the job makes them; a job's script and event handlers
shown there never run."""

from __future__ import annotations

import nbformat
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import open_and_run_all, place

pytestmark = pytest.mark.browser

CHARTS = """%%worker --name charts --max-memory 1G
import matplotlib.pyplot as plt, pandas as pd
from IPython.display import display, HTML
display(pd.DataFrame({'city': ['Oslo', 'Lima'], 'temp': [3, 19]}))
plt.plot([1, 4, 9]); plt.title('squares'); plt.show()
display(HTML('<b>kept</b><img src=x onerror="window.pwned = 1"><script>window.pwned = 2</script>'
             '<a href="javascript:window.pwned = 3">link</a><details open ontoggle="window.pwned = 4">x</details>'))
"""


def test_a_table_and_a_figure_appear_under_the_widget_and_a_jobs_script_never_runs(lab, page):
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("%load_ext jupyter_worker"), nbformat.v4.new_code_cell(CHARTS)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    place(lab, "charts.ipynb", notebook)
    open_and_run_all(page, lab, "charts.ipynb")
    # once the job has ended its output is its lasting form, the display output in it (widgets.py)
    widget = page.locator(".jp-Notebook .jp-OutputArea-output").filter(has_text="charts").first
    expect(widget.get_by_text("exit code 0")).to_be_visible(timeout=90_000)
    output = widget
    expect(output.locator("table td", has_text="Oslo")).to_be_visible(timeout=30_000)
    figure = output.locator("img[src^='data:image/png']")
    expect(figure).to_be_visible(timeout=30_000)
    assert figure.evaluate("img => img.naturalWidth") > 100
    expect(output.get_by_text("kept")).to_be_visible()
    link = output.get_by_text("link")
    link.click()
    assert page.evaluate("window.pwned") is None
    assert output.locator("script, [onerror], [ontoggle], a[href^='javascript']").count() == 0
    widget.evaluate("box => box.scrollIntoView({block: 'start'})")  # the screenshot: widget, table, figure
