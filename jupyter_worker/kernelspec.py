"""A kernelspec other environments can use: `jupyter-worker kernelspec install`.

ipykernel's own `python3` kernelspec says `python`: whichever Python is first on the PATH of the
process that starts the kernel. papermill or nbclient run from another environment then start
their own Python, which has no jupyter_worker. This kernelspec names this environment's Python by
its absolute path and loads the magics at start (IPython's `--ext jupyter_worker`), so a notebook
saved with kernel `jupyter-worker` runs `%%worker` cells wherever it is run from.

Installed per user (~/.local/share/jupyter/kernels), system-wide (/usr/local/share/...), for
this environment only (sys.prefix) or under a prefix; `jupyter kernelspec list` of any
environment shows the first two.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from .errors import ErrorReason, WorkerError

NAME = "jupyter-worker"
DISPLAY_NAME = "Python 3 (jupyter-worker)"


def kernel_json(python: str | None = None) -> dict[str, Any]:
    """The kernel.json: this environment's Python by its absolute path (not resolved: a venv's
    python is a link, and resolving it would leave the venv), the magics loaded at start."""
    python = python or sys.executable
    if not python or not os.path.isabs(python):
        raise WorkerError(ErrorReason.MISCONFIGURED, f"kernelspec: this Python's path is unknown ({python!r})")
    return {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--ext", "jupyter_worker"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "metadata": {"debugger": True},
    }


def install(*, user: bool = False, prefix: str | None = None, name: str = NAME) -> str:
    """Install (or replace) the kernelspec; returns its folder. user: the caller's own; prefix: under
    PREFIX/share/jupyter/kernels; neither: system-wide (root)."""
    from jupyter_client.kernelspec import KernelSpecManager  # noqa: PLC0415 - only this verb needs it

    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "kernel.json"), "w") as f:
            json.dump(kernel_json(), f, indent=1)
        try:
            return KernelSpecManager().install_kernel_spec(folder, name, user=user, prefix=prefix, replace=True)
        except OSError as exc:
            where = "--user" if user else prefix or "the system-wide folder"
            hint = "" if user else "; as a user, use --user"
            raise WorkerError(
                ErrorReason.FORBIDDEN, f"kernelspec: cannot write in {where}: {exc.strerror or exc}{hint}"
            ) from None


def found(name: str = NAME) -> dict[str, Any]:
    """Where Jupyter finds the kernelspec from this environment, and whether it runs this Python with
    the magics: {"installed", "path", "python", "this_environment", "magics", "problem"}."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # noqa: PLC0415

    absent = {"installed": False, "path": None, "python": None, "this_environment": False, "magics": False}
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return {**absent, "problem": None}
    except Exception as exc:  # a kernel.json that is not JSON: say so, do not fail the doctor
        return {**absent, "problem": f"{name}'s kernel.json cannot be read: {exc}"}
    python = spec.argv[0] if spec.argv else None
    return {
        "installed": True,
        "path": spec.resource_dir,
        "python": python,
        "this_environment": python == sys.executable,
        "magics": "jupyter_worker" in spec.argv,
        "problem": None if python and os.access(python, os.X_OK) else f"its Python {python!r} is not there",
    }
