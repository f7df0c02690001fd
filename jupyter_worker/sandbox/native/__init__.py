"""The native stages of a job: the init (init.c), pid 1 of a running job's pid namespace, and the job
stage (job.c), the job process's last steps before its command, each in a few pages of memory.

The package's build compiles both beside their sources (hatch_build.py, with the system's cc,
static so that they need no loader or libc inside a job's root). The engine refuses to start
without them: a job would otherwise hold whole Python interpreters, and no job should quietly cost
ten times more. Messages either writes on the error pipe end with a NUL.
"""

from __future__ import annotations

import os
import stat

INIT_NAME = "jw-init"
INIT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), INIT_NAME)
# The job process's last steps (job.c): exec'd ahead by the job process, built beside the init.
JOB_STAGE_NAME = "jw-job"
JOB_STAGE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), JOB_STAGE_NAME)
# job.c's fd for the error pipe (its ERROR_FD): where a failed exec of the stage is reported, too.
JOB_STAGE_ERROR_FD = 5


class UntrustedBinary(Exception):
    """A native binary anyone but root could have written: the engine will not run it as root."""


def open_trusted(path: str) -> int:
    """An O_PATH fd of the binary at path, to exec later (os.execve takes an fd; after pivot_root
    the job's root does not show the package), checked on what was opened: the binary owned by root
    and not writable by its group or others, and every folder from / down to it owned by root and
    not writable by its group or others (sticky ones aside: no one can replace root's entries
    there), each opened without following a link, so no one but root could have swapped any part
    of the path. Raises UntrustedBinary (or OSError where it cannot be opened)."""
    folder = _open_trusted_folder(os.path.dirname(os.path.realpath(path)), path)
    try:
        fd = os.open(os.path.basename(path), os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        problem = _untrusted(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    if problem:
        os.close(fd)
        raise UntrustedBinary(problem)
    return fd


def _open_trusted_folder(folder: str, path: str) -> int:
    """The folder (a resolved path), opened from / one component at a time, each checked."""
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open("/", flags)
    try:
        current = "/"
        for name in [part for part in folder.split("/") if part]:
            _check_folder(os.fstat(fd), current, path)
            parent, fd = fd, os.open(name, flags, dir_fd=fd)
            os.close(parent)
            current = os.path.join(current, name)
        _check_folder(os.fstat(fd), current, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_folder(folder: os.stat_result, name: str, path: str) -> None:
    fix = "install jupyter-worker where only root can write, or `chown root` and `chmod go-w` that folder"
    what = f"the folder {name} of the native binary {path}"
    if folder.st_uid != 0:
        raise UntrustedBinary(f"{what} is not owned by root: {fix}")
    if folder.st_mode & 0o022 and not folder.st_mode & stat.S_ISVTX:
        raise UntrustedBinary(f"{what} is writable by its group or others: {fix}")


def _untrusted(binary: os.stat_result, path: str) -> str | None:
    fix = "reinstall jupyter-worker as root, or `chown root` and `chmod go-w` it"
    if not stat.S_ISREG(binary.st_mode):
        return f"the native binary {path} is not a regular file"
    if binary.st_uid != 0 or binary.st_mode & 0o022:
        return f"the native binary {path} is not owned by root or is writable by others than root: {fix}"
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
