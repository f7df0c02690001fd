"""The README's notebook examples work as typed: its Python blocks, in order, run headless in a
notebook under /tmp against a real executor, and do what the prose around them says."""

from __future__ import annotations

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def python_blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_the_readme_has_the_notebook_examples_this_test_runs():
    blocks = python_blocks()
    assert len(blocks) >= 3 and any("--out" in block and "--artifacts" in block for block in blocks)


def test_the_readmes_python_examples_run_as_typed_in_a_notebook(notebook_run):
    run, folder = notebook_run
    checks = "print(squares[-1]); print(open(f'results/{_worker_job.id[:8]}/squares.txt').read())"
    notebook = run(*python_blocks(), checks)
    outputs = [o for cell in notebook.cells for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "[1. 1. 1.]" in text  # the numpy example's output
    assert text.endswith("121\n[0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121]\n")
    assert any("image/png" in o.get("data", {}) for o in outputs)
    (job_folder,) = os.listdir(os.path.join(folder, "results"))
    assert os.stat(os.path.join(folder, "results", job_folder, "squares.txt")).st_uid == os.getuid()
