"""The native init (init.c): pid 1 of a running job's pid namespace, in a few pages of memory.

The package's build compiles init.c into INIT_PATH (hatch_build.py, with the system's cc, static so
that it needs no loader or libc inside a job's root). The engine refuses to start without it: a
job's init stays a whole Python interpreter otherwise, and no job should quietly cost ten times more.
"""

from __future__ import annotations

import os

INIT_NAME = "jw-init"
INIT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), INIT_NAME)
# The job process's last steps (job.c): exec'd ahead by the job process, built beside the init.
JOB_STAGE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jw-job")


def init_problem() -> str | None:
    """Why the native init (or the job stage beside it) cannot run here, or None."""
    if not os.path.isfile(JOB_STAGE_PATH) or not os.access(JOB_STAGE_PATH, os.X_OK):
        return (
            f"the native job stage {JOB_STAGE_PATH} is missing or not executable: reinstall jupyter-worker "
            "(pip install builds it from jupyter_worker/sandbox/native/job.c with the system's C compiler), "
            "or build it in a checkout with `python hatch_build.py`"
        )
    if not os.path.isfile(INIT_PATH):
        return (
            f"the native init {INIT_PATH} is missing: reinstall jupyter-worker (pip install builds it from "
            "jupyter_worker/sandbox/native/init.c with the system's C compiler: install gcc and libc6-dev), "
            "or build it in a checkout with `python hatch_build.py`"
        )
    if os.statvfs(INIT_PATH).f_flag & os.ST_NOEXEC:
        return f"the native init {INIT_PATH} is on a filesystem mounted noexec: install where programs may run"
    if not os.access(INIT_PATH, os.X_OK):
        return f"the native init {INIT_PATH} is not executable"
    return None


def open_init() -> int:
    """An fd of the native init to exec later (os.execve takes an fd), opened while its path is
    still visible: after pivot_root, the job's root does not show the package."""
    return os.open(INIT_PATH, os.O_PATH | os.O_CLOEXEC)
