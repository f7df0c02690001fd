"""A job in a folder of the Jupyter server's file browser (POST jobs' `folder`).

The browser knows only contents paths: relative to the contents manager's root folder, '' for the
root itself. `resolve_folder` turns one into the absolute folder it names, refusing what could
name anything else; `place_in_folder` makes the request run there as the magics do
(flags.job_request(in_folder=True)): the folder read-only at its own path and the working directory,
relative mount paths taken from it.

Keeping the folder inside the root is the file browser's rule, not a privilege boundary: the
executor opens every mount source as the requester, whatever the server resolved.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from ..errors import ErrorReason, WorkerError
from ..spec import MAX_PATH_BYTES, Mount, shown


def _refused(message: str) -> WorkerError:
    return WorkerError(ErrorReason.INVALID, f"folder: {message}")


def resolve_folder(root_dir: str, folder: Any) -> str:
    """The absolute, symlink-free path of the folder `folder` names under root_dir.

    Refused (INVALID, one message each): not a string, a NUL, too long, absolute, a '..' part,
    a path that resolves (through symlinks) outside root_dir, a missing path, not a folder."""
    if not isinstance(folder, str):
        raise _refused("a path relative to the server's root folder, as the file browser shows it")
    if "\0" in folder:
        raise _refused("a path must not contain NUL")
    try:
        size = len(os.fsencode(folder))
    except UnicodeEncodeError:  # a lone surrogate no file name holds (REST bodies refuse them already)
        raise _refused(f"{shown(folder)} is not a file name") from None
    if size > MAX_PATH_BYTES:
        raise _refused(f"at most {MAX_PATH_BYTES} bytes")
    if folder.startswith("/"):
        raise _refused(
            f"{shown(folder)} is absolute: give a path relative to the server's root folder "
            "(an absolute working directory is the cwd field)"
        )
    parts = [part for part in folder.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refused(f"{shown(folder)} must not contain '..'")
    root = os.path.realpath(root_dir)
    path = os.path.realpath(os.path.join(root, *parts))
    # checked before anything is read there, so a refusal never says what exists outside the root
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        raise _refused(f"{shown(folder)} leads outside the server's root folder (through a symlink)")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise _refused(f"{shown(folder)} does not exist") from None
    except OSError as exc:
        words = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or "unreadable").lower()
        raise _refused(f"{shown(folder)} cannot be used: {words}") from None
    if not stat.S_ISDIR(mode):
        raise _refused(f"{shown(folder)} is not a folder")
    return path


def place_in_folder(data: dict[str, Any], here: str) -> dict[str, Any]:
    """The request body `data` (not yet parsed) made to run in the absolute folder `here`: its cwd,
    shown read-only at its own path unless a mount already shows something there ('.:.:rw' makes
    it writable); a mount written SRC:DST[:rw] has its relative paths taken from here."""
    if "cwd" in data:
        raise WorkerError(ErrorReason.INVALID, "folder and cwd: give one (the folder is the job's working directory)")
    placed = dict(data)
    mounts = placed.get("mounts", [])
    if isinstance(mounts, list):  # anything else is JobRequest.from_dict's to refuse
        mounts = [Mount.parse(m, cwd=here).to_dict() if isinstance(m, str) else m for m in mounts]
        if not any(isinstance(m, dict) and m.get("destination") == here for m in mounts):
            mounts.insert(0, Mount(here, here).to_dict())
        placed["mounts"] = mounts
    placed["cwd"] = here
    return placed
