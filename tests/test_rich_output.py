"""Rich output of %%worker Python cells through a real kernel (nbclient, headless) against a real
executor: display(), a DataFrame's table and matplotlib figures reach the cell as ordinary display
outputs, in the saved notebook too; what a job displays is sanitized before it reaches the notebook."""

from __future__ import annotations

import base64

import nbformat

FIGURES = """%%worker {flags}
import matplotlib.pyplot as plt, pandas as pd
from IPython.display import display, HTML
print('before')
display(pd.DataFrame({{'city': ['Oslo', 'Lima'], 'temp': [3, 19]}}))
plt.plot([1, 4, 9]); plt.title('shown'); plt.show()
plt.figure(); plt.bar(['a', 'b'], [2, 3])  # left open: shown at the end
display(HTML('<b>done</b>'))
"""

HOSTILE = """%%worker --wait
import os
from IPython.display import display, HTML, Javascript, SVG
display(HTML('<img src=x onerror="alert(1)"><script>document.title=\\'pwned\\'</script><b>kept</b>'))
display(Javascript('alert(2)'))
display({'text/html': '<iframe src="javascript:alert(3)"></iframe><a href="/api/contents">x</a>'}, raw=True)
display({'image/png': 'PHN2ZyBvbmxvYWQ9YWxlcnQoNCk+'}, raw=True)  # <svg onload=...> called a PNG
# past the runner's own bounds: written to the display fd directly
fd = int(os.environ['JUPYTER_WORKER_DISPLAY_FD'])
_ = os.write(fd, b'{"data": {"text/html": "<svg onload=alert(5)>", "application/javascript": "alert(6)"}}\\n')
"""


def displays(cell: nbformat.NotebookNode) -> list[dict]:
    return [o["data"] for o in cell.outputs if o["output_type"] == "display_data"]


def check_figures(cell: nbformat.NotebookNode) -> None:
    shown = displays(cell)
    assert [sorted(d) for d in shown] == [
        ["text/html", "text/plain"],
        ["image/png", "text/plain"],
        ["text/html", "text/plain"],
        ["image/png", "text/plain"],
    ]
    table, figure, bold, left_open = shown
    assert "<table>" in table["text/html"] and "<td>Oslo</td>" in table["text/html"]
    assert table["text/html"].startswith('<div class="tex2jax_ignore mathjax_ignore">')
    assert "Oslo" in table["text/plain"]
    for image in (figure, left_open):
        assert base64.b64decode(image["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
        assert image["text/plain"].startswith("<Figure size")
    assert "<b>done</b>" in bold["text/html"]
    assert any(o.get("text", "").startswith("before") for o in cell.outputs if o["output_type"] == "stream")


def test_a_headless_cell_shows_tables_and_figures_as_display_outputs(notebook_run, tmp_path):
    run, _ = notebook_run
    notebook = run(FIGURES.format(flags="--max-memory 1G"), FIGURES.format(flags="--wait --max-memory 1G"))
    check_figures(notebook.cells[1])
    check_figures(notebook.cells[2])
    saved = tmp_path / "saved.ipynb"
    nbformat.write(notebook, saved)
    check_figures(nbformat.read(saved, as_version=4).cells[2])


def test_a_jobs_script_and_event_handlers_never_reach_the_notebook(notebook_run):
    run, _ = notebook_run
    cell = run(HOSTILE).cells[1]
    everything = repr(cell.outputs).lower()
    for payload in (
        "onerror",
        "<script",
        "pwned",
        "alert(",
        "javascript:",
        "application/javascript",
        "<iframe",
        "/api/",
        "<svg",
        "onload",
    ):
        assert payload not in everything, payload
    shown = displays(cell)
    assert any("<b>kept</b>" in d.get("text/html", "") for d in shown)
    assert all(set(d) <= {"text/plain", "text/html", "image/png", "image/jpeg"} for d in shown)
    assert not any("image/png" in d for d in shown)


WIDGET_CELL = """import os
os.makedirs('arts', exist_ok=True)
from jupyter_worker import values
from jupyter_worker.client import Client
from jupyter_worker.flags import job_request
from jupyter_worker.widgets import JobWidget
code = "import time\\nfor i in range(30):\\n    display(f'item {i}')\\n    time.sleep(0.02)\\n"
code += "_ = open('/work/made.txt', 'w').write('x')"
command = values.runner_command(code, outputs=[], out_pickle=False, max_value_bytes=None)
request = job_request(command, limits={}, artifacts='arts', cwd='/tmp')
request.display = True
with Client() as client:
    record = client.run(request)
widget = JobWidget(record)
await widget.task
texts = [o['data']['text/plain'] for o in widget.output.outputs]
print(texts == [f"'item {i}'" for i in range(30)], 0 < len(widget.output.children) <= 30)
print(sum(len(child.outputs) for child in widget.output.children))
print(widget.log.value)
"""


def test_the_widget_sends_each_display_item_once_and_says_what_artifacts_came_back(notebook_run):
    """Under a widget: display output goes in batches, each its own Output (never all again), and
    the end of the job says what --artifacts copied, as --wait does."""
    run, folder = notebook_run
    lines = run(WIDGET_CELL.replace("cwd='/tmp'", f"cwd={folder!r}")).cells[1].outputs[0]["text"].splitlines()
    assert lines[0] == "True True" and lines[1] == "30"
    assert "[jupyter-worker: artifacts: " in "\n".join(lines[2:])
