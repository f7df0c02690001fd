"""The native init (init.c): pid 1 of a running job's pid namespace, in a few pages of memory.

The package's build compiles init.c into INIT_PATH (hatch_build.py, with the system's cc, static so
that it needs no loader or libc inside a job's root). The engine refuses to start without it: a
job's init stays a whole Python interpreter otherwise, and no job should quietly cost ten times more.
"""

from __future__ import annotations

import os
import stat

INIT_NAME = "jw-init"
INIT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), INIT_NAME)
# The job process's last steps (job.c): exec'd ahead by the job process, built beside the init.
JOB_STAGE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jw-job")


class UntrustedBinary(Exception):
    """A native binary anyone but root could have written: the engine will not run it as root."""


def open_trusted(path: str) -> int:
    """An O_PATH fd of the binary at path, to exec later (os.execve takes an fd; after pivot_root
    the job's root does not show the package), checked on what was opened: the binary owned by root
    and not writable by its group or others, its folder not writable by its group or others (no
    one but its owner could have swapped it). Raises UntrustedBinary (or OSError where it cannot be opened)."""
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(os.path.basename(path), os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=folder)
        try:
            problem = _untrusted(os.fstat(fd), os.fstat(folder), path)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(folder)
    if problem:
        os.close(fd)
        raise UntrustedBinary(problem)
    return fd


def _untrusted(binary: os.stat_result, folder: os.stat_result, path: str) -> str | None:
    fix = "reinstall jupyter-worker as root, or `chown root` and `chmod go-w` it"
    if not stat.S_ISREG(binary.st_mode):
        return f"the native binary {path} is not a regular file"
    if binary.st_uid != 0 or binary.st_mode & 0o022:
        return f"the native binary {path} is not owned by root or is writable by others than root: {fix}"
    if folder.st_mode & 0o022:
        return f"the folder of the native binary {path} is writable by its group or others: {fix}"
    return None


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
    for path in (JOB_STAGE_PATH, INIT_PATH):
        try:
            os.close(open_trusted(path))
        except UntrustedBinary as exc:
            return str(exc)
    return None
