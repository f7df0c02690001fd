"""A job's /work, listed and read for the people who may see the job.

The folder is the job's to fill, so everything in it is hostile: every open resolves beneath the
folder with the kernel refusing symlinks, magic links and mount crossings (openat2), with the
file permissions of the uid the job ran as, and only directories and regular files are opened for
what they hold (a FIFO or a device is listed, never read).

A /work with a disk limit is an image (sandbox/disk.py): while its job runs it is reached through
the job's own mount namespace, once the job has ended it is mounted read-only, in a private mount
namespace, for one listing or read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ErrorReason, WorkerError
from ..sandbox import disk, libc
from ..sandbox.mounts import acting_as
from ..transfer import kind_of
from .folders import JobFolder

MAX_ENTRIES = 1000
MAX_SCANNED = 100_000  # names a listing reads in one folder; past it the folder is refused (a bomb)
READ_MAX = 1 << 20
RESOLVE = libc.RESOLVE_BENEATH | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS | libc.RESOLVE_NO_XDEV
T = TypeVar("T")


def _relative(path: str) -> str:
    if "\0" in path or len(path) > 4096:
        raise WorkerError(ErrorReason.BAD_REQUEST, "path: a path inside the job's /work")
    cleaned = path.strip("/")
    if any(part == ".." for part in cleaned.split("/")):
        raise WorkerError(ErrorReason.BAD_REQUEST, f"path: {path!r} leaves the job's /work")
    return cleaned or "."


def _in_work(folder: JobFolder, use: Callable[[int], T]) -> T:
    """use(an O_PATH fd of the root of the job's /work): the folder; with a disk limit, the /work
    of the running job, or the kept image mounted read-only for the call."""
    if os.path.exists(folder.image):
        result = folder.read_result()
        if "reason" not in result:  # not ended: the job's own /work, or nothing yet
            root = disk.open_live(result.get("pid", 0), folder.image)
            if root is None:
                raise WorkerError(ErrorReason.NOT_FOUND, "this job's /work is not ready yet")
            try:
                return use(root)
            finally:
                os.close(root)
        try:
            return disk.view(folder.work, use)
        except (disk.DiskError, OSError) as exc:
            raise WorkerError(ErrorReason.NOT_FOUND, f"this job's /work cannot be read: {exc}") from None
    try:
        root = os.open(folder.work, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise WorkerError(ErrorReason.NOT_FOUND, "this job's /work was not kept") from None
    try:
        return use(root)
    finally:
        os.close(root)


in_work = _in_work  # executor/artifacts.py reaches /work the same way


def _open(root: int, path: str, flags: int, runs_as: tuple[int, int]) -> int:
    try:
        with acting_as(runs_as[0], runs_as[1], [runs_as[1]]):
            # openat2 refuses O_PATH with any flag but O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC
            extra = os.O_NOFOLLOW if flags & os.O_PATH else os.O_NOFOLLOW | os.O_NONBLOCK
            return libc.openat2(root, path, flags | extra, RESOLVE)
    except OSError as exc:
        raise WorkerError(ErrorReason.NOT_FOUND, f"/work/{path}: {os.strerror(exc.errno or 0)}") from None


def _entry(directory: int, name: str) -> dict[str, Any] | None:
    try:
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except OSError:
        return None
    kind = kind_of(info.st_mode)  # what it is precisely (transfer.KIND_WORDS); type: the four the panel knows
    try:
        name.encode()
    except UnicodeEncodeError:
        # a name that is not UTF-8 cannot travel as JSON text: shown with replacement characters,
        # as an entry nobody can open by that name
        name, kind = name.encode(errors="surrogateescape").decode(errors="replace"), "not-utf8"
    shown = kind if kind in ("directory", "file", "symlink") else "other"
    size = info.st_size if kind == "file" else None
    return {"name": name, "type": shown, "kind": kind, "size": size, "mtime": info.st_mtime}


def _names(fd: int) -> list[str]:
    """The names in an open folder, at most MAX_SCANNED of them read, else one clear error."""
    names: list[str] = []
    with os.scandir(fd) as found:
        for entry in found:
            if len(names) >= MAX_SCANNED:
                raise WorkerError(
                    ErrorReason.BAD_REQUEST, f"this folder holds more than {MAX_SCANNED:,} names: too large to list"
                )
            names.append(entry.name)
    return names


def listing(folder: JobFolder, runs_as: tuple[int, int], path: str, offset: int = 0) -> dict[str, Any]:
    """The entries of a folder in /work from the offset-th name on (names in byte order), at most
    MAX_ENTRIES, folders first; next_offset is where the next page starts, None after the last."""
    where = _relative(path)

    def entries_of(root: int) -> tuple[int, list[dict[str, Any]]] | str:
        fd = _open(root, where, os.O_PATH, runs_as)  # never followed (O_NOFOLLOW, no symlinks)
        try:
            kind = kind_of(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        if kind != "directory":  # a path that is not a folder: what it is, one entry looked at
            return kind
        fd = _open(root, where, os.O_RDONLY | os.O_DIRECTORY, runs_as)
        try:
            names = sorted(_names(fd), key=os.fsencode)
            page = names[offset : offset + MAX_ENTRIES]
            return len(names), [e for e in (_entry(fd, name) for name in page) if e is not None]
        finally:
            os.close(fd)

    found = _in_work(folder, entries_of)
    if isinstance(found, str):
        return {"path": where, "kind": found, "entries": [], "truncated": False, "next_offset": None}
    count, entries = found
    entries.sort(key=lambda e: (e["type"] != "directory", e["name"]))
    more = count > offset + MAX_ENTRIES
    return {
        "path": "" if where == "." else where,
        "kind": "directory",
        "entries": entries,
        "truncated": more,
        "next_offset": offset + MAX_ENTRIES if more else None,
    }


def read(folder: JobFolder, path: str, offset: int, max_bytes: int, runs_as: tuple[int, int]) -> tuple[bytes, int]:
    """Up to max_bytes (and READ_MAX) of a regular file in /work from offset; returns them and the
    file's size."""
    where = _relative(path)

    def part_of(root: int) -> tuple[bytes, int]:
        fd = _open(root, where, os.O_RDONLY, runs_as)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise WorkerError(ErrorReason.BAD_REQUEST, f"/work/{where} is not a regular file")
            return os.pread(fd, min(max_bytes, READ_MAX), offset), info.st_size
        finally:
            os.close(fd)

    return _in_work(folder, part_of)
