"""The installed package carries the JupyterLab panel, and JupyterLab finds it enabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jupyter_worker


def test_jupyterlab_lists_the_panel_enabled_and_ok():
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True, text=True, check=True
    )
    line = next(
        line for line in (listing.stdout + listing.stderr).splitlines() if line.split()[:1] == ["jupyter-worker"]
    )
    assert "enabled" in line and "OK" in line, line


def test_the_built_extension_is_inside_the_package():
    folder = os.path.join(os.path.dirname(jupyter_worker.__file__), "labextension")
    with open(os.path.join(folder, "package.json")) as f:
        built = json.load(f)
    assert built["name"] == "jupyter-worker" and built["jupyterlab"]["_build"]["load"].startswith("static/")
    assert jupyter_worker._jupyter_labextension_paths() == [{"src": "labextension", "dest": "jupyter-worker"}]
