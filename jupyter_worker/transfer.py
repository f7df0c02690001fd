"""Files back from a job's /work: listed page by page, read and downloaded a piece at a time.

The job filled its /work, so every name that comes from it is hostile: a name is written only if
it is one plain path component (`unsafe_name`: no '/', no '.' or '..', no control, format or
invisible characters, at most 255 bytes), and every write is relative to a folder this process
opened itself, never following a link (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, O_NOFOLLOW), so
nothing the job named can land outside the destination. Links, FIFOs, sockets and devices in
/work are never copied (the executor never follows or reads them either); what is skipped is
reported. Files are written by the calling process, so they belong to the caller even when the
job ran as another uid.

Used by jobs.Job (files, read, download), the CLI's `cp` and the magics' `%worker get`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .errors import ErrorReason, WorkerError
from .formatting import HIDDEN_CATEGORIES, bytes_words, inert
from .sandbox import libc

NAME_MAX = 255
PIECE = 1 << 20
BENEATH = libc.RESOLVE_BENEATH | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS
RENAME_NOREPLACE = 1
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)

# What an entry that is never copied is, in words (the listing's "what", artifacts' notes, cp's).
KIND_WORDS = {
    "symlink": "a symlink",
    "fifo": "a FIFO",
    "socket": "a socket",
    "device": "a device",
    "not-utf8": "a name that is not UTF-8",
    "other": "a special file",
}


def kind_of(mode: int) -> str:
    """The KIND_WORDS key of a file type (st_mode), or 'directory' / 'file'."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def never_copied(kind: str) -> str:
    """Why an entry of that kind is skipped: 'a FIFO, never copied'."""
    return f"{KIND_WORDS.get(kind, KIND_WORDS['other'])}, never copied"


def temporary(folder: int, mode: int) -> tuple[int, str]:
    """A new hidden file in folder (O_EXCL, never through a link): its fd and name. Files are
    written there and renamed into place at the end, so no half file ever has a real name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        name = f".jw-partial-{secrets.token_hex(8)}"
        try:
            return os.open(name, flags, mode, dir_fd=folder), name
        except FileExistsError:
            continue


def rename_into_place(folder: int, temp: str, name: str, replace: bool) -> None:
    """temp -> name within folder. replace: whatever entry has the name is replaced (never written
    through: a link or another's file there is simply swapped out); else the name must be free
    (renameat2 RENAME_NOREPLACE, or link then unlink where the kernel has no renameat2)."""
    if replace:
        os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
        return
    if _renameat2 is not None:
        if _renameat2(folder, os.fsencode(temp), folder, os.fsencode(name), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code))
    os.link(temp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    os.unlink(temp, dir_fd=folder)


def discard(folder: int, temp: str) -> None:
    """A temporary file that will not be renamed into place."""
    try:
        os.unlink(temp, dir_fd=folder)
    except OSError:
        pass


def unsafe_name(name: object) -> str | None:
    """Why a name from a job cannot be written as one file name, or None if it can."""
    if not isinstance(name, str) or not name:
        return "an empty name"
    if name in (".", ".."):
        return "a name that is a folder reference"
    if "/" in name or "\0" in name:
        return "a name holding a path separator"
    if any(unicodedata.category(c) in HIDDEN_CATEGORIES for c in name):
        return "a name holding control or invisible characters"
    if "\ufffd" in name:
        return "a name that is not UTF-8"
    if len(name.encode()) > NAME_MAX:
        return "a name longer than 255 bytes"
    return None


def work_path(path: str) -> str:
    """A path in /work as the executor takes it: relative, '' for the top, never '..'."""
    if not isinstance(path, str) or "\0" in path:
        raise WorkerError(ErrorReason.BAD_REQUEST, "path: a path inside the job's /work")
    parts = [part for part in path.strip().split("/") if part not in ("", ".")]
    if ".." in parts:
        raise WorkerError(ErrorReason.BAD_REQUEST, f"path: {inert(path)} leaves the job's /work")
    return "/".join(parts)


def listing(client: Any, job_id: str, path: str = "") -> list[dict[str, Any]]:
    """Every entry of a folder of the job's /work (all pages), folders first, then by name."""
    entries: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = client.files(job_id, path, offset)
        entries += page["entries"]
        following = page.get("next_offset")
        offset = following if isinstance(following, int) and following > offset else None
    entries.sort(key=lambda e: (e["type"] != "directory", e["name"]))
    return entries


def pieces(client: Any, job_id: str, path: str) -> Any:
    """A regular file of /work a piece at a time (at most 1 MiB each), up to the size it had when
    the first piece was read."""
    data, size = client.read_file(job_id, path, 0, PIECE)
    offset = len(data)
    yield data
    while data and offset < size:
        data, _ = client.read_file(job_id, path, offset, min(PIECE, size - offset))
        offset += len(data)
        yield data


def read(client: Any, job_id: str, path: str) -> bytes:
    """The whole of a regular file of /work."""
    return b"".join(pieces(client, job_id, work_path(path)))


@dataclass
class Download:
    """What a download wrote: the top path, counts, and what it skipped (path, why)."""

    path: str
    files: int = 0
    folders: int = 0
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a person: what came back, where, and what did not."""
        what = f"{self.files} file{'' if self.files == 1 else 's'} ({bytes_words(self.bytes)})"
        line = f"copied {what} to {inert(self.path)}"
        if self.skipped:
            shown = ", ".join(f"{inert(p)} ({why})" for p, why in self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            line += f"; skipped {len(self.skipped)}: {shown}{more}"
        return line


class Downloaded(str):
    """The path a download wrote, carrying its report (files, bytes, skipped)."""

    report: Download

    @classmethod
    def of(cls, report: Download) -> Downloaded:
        path = cls(report.path)
        path.report = report
        return path


def _kind(client: Any, job_id: str, where: str) -> str:
    """The KIND_WORDS key (or 'directory', 'file') of the entry at where in /work: the listing of
    a path that is not a folder says what it is (one entry looked at, never its parent listed)."""
    if not where:
        return "directory"
    try:
        page = client.files(job_id, where, 0)
    except WorkerError as exc:
        if exc.reason is ErrorReason.NOT_FOUND and exc.message.endswith(os.strerror(errno.ENOENT)):
            raise WorkerError(ErrorReason.NOT_FOUND, f"/work/{inert(where)}: no such file or folder") from None
        raise
    return str(page.get("kind") or "directory")


def _target(dest: str, name: str) -> tuple[str, str]:
    """The folder to write in and the name to write there: into dest when it is a folder (like cp),
    else dest itself in its parent folder, which must exist."""
    dest = os.path.abspath(os.path.expanduser(dest))
    if os.path.isdir(dest):
        return dest, name
    parent, leaf = os.path.split(dest)
    if not os.path.isdir(parent):
        raise WorkerError(ErrorReason.NOT_FOUND, f"{inert(parent)}: no such folder to copy into")
    return parent, leaf


def _folder_beneath(top: int, relative: str) -> int:
    """An O_PATH fd of a folder beneath top, no link followed on the way."""
    return libc.openat2(top, relative or ".", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, BENEATH)


def _in_the_way(where: int, name: str) -> str | None:
    """Why name in where cannot be replaced by a file: a folder there (cp never removes one)."""
    try:
        info = os.stat(name, dir_fd=where, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return "in the way: a folder" if stat.S_ISDIR(info.st_mode) else None


class _Copier:
    """Copies of one job's files beneath one folder this process opened (top)."""

    def __init__(self, client: Any, job_id: str, top: int, report: Download):
        self.client, self.job_id, self.top, self.report = client, job_id, top, report

    def file(self, source: str, relative: str) -> None:
        """One regular file of /work to top/relative, streamed into a new hidden file that then
        replaces the name (like cp, but never writing through what was there: a link, a hard
        link, another user's file is swapped out, not written into); a failed read or write
        leaves what had the name as it was."""
        report = self.report
        parent, _, name = relative.rpartition("/")
        try:
            where = _folder_beneath(self.top, parent)
        except OSError as exc:
            report.skipped.append((relative, f"cannot write: {os.strerror(exc.errno or 0)}"))
            return
        try:
            why = _in_the_way(where, name)
            if why:
                report.skipped.append((relative, why))
                return
            fd, temp = temporary(where, 0o666)
            written = 0
            try:
                for data in pieces(self.client, self.job_id, source):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    written += len(data)
                os.close(fd)
                fd = -1
                rename_into_place(where, temp, name, replace=True)
                temp = ""
                report.bytes += written
                report.files += 1
            except WorkerError as exc:  # gone or changed in a running job
                report.skipped.append((relative, inert(exc.message)))
            except OSError as exc:  # this side: a full disk, a quota
                report.skipped.append((relative, f"cannot write: {os.strerror(exc.errno or 0)}"))
            finally:
                if fd >= 0:
                    os.close(fd)
                if temp:
                    discard(where, temp)
        finally:
            os.close(where)

    def folder(self, relative: str) -> bool:
        """Make top/relative a folder (or find it one, never a link); whether it is."""
        parent, _, name = relative.rpartition("/")
        try:
            where = _folder_beneath(self.top, parent)
        except OSError as exc:
            self.report.skipped.append((relative, f"cannot write: {os.strerror(exc.errno or 0)}"))
            return False
        try:
            os.mkdir(name, 0o777, dir_fd=where)
        except FileExistsError:
            pass
        except OSError as exc:
            self.report.skipped.append((relative, f"cannot write: {os.strerror(exc.errno or 0)}"))
            return False
        finally:
            os.close(where)
        try:
            os.close(_folder_beneath(self.top, relative))  # a folder, not a link
        except OSError:
            self.report.skipped.append((relative, "in the way: not a folder"))
            return False
        self.report.folders += 1
        return True

    def tree(self, where: str, leaf: str) -> None:
        """A folder of /work and everything in it, a stack rather than recursion (a job may nest
        folders deeply); every name checked before it is written."""
        pending = [(where, leaf)]
        while pending:
            source, target = pending.pop()
            try:
                entries = listing(self.client, self.job_id, source)
            except WorkerError as exc:  # gone in a running job
                self.report.skipped.append((target, inert(exc.message)))
                continue
            for entry in entries:
                name, inner = entry["name"], f"{target}/{entry['name']}"
                inside = f"{source}/{name}".lstrip("/")
                why = unsafe_name(name)
                if why:
                    self.report.skipped.append((inner, why))
                elif entry["type"] == "file":
                    self.file(inside, inner)
                elif entry["type"] == "directory":
                    if self.folder(inner):
                        pending.append((inside, inner))
                else:
                    self.report.skipped.append((inner, never_copied(entry.get("kind") or entry["type"])))


def download(client: Any, job_id: str, path: str, dest: str) -> Download:
    """Copy a file or a folder (recursively) of the job's /work to dest; see the module's doc."""
    job_id = client.get(job_id).id  # one clear error for an unknown id, before anything is written
    where = work_path(path)
    kind = _kind(client, job_id, where)
    if kind not in ("file", "directory"):
        what = KIND_WORDS.get(kind, KIND_WORDS["other"])
        raise WorkerError(ErrorReason.BAD_REQUEST, f"/work/{inert(where)} is {what}: only files and folders copy")
    folder, leaf = _target(dest, where.rpartition("/")[2] or "work")
    why = unsafe_name(leaf)
    if why:
        raise WorkerError(ErrorReason.BAD_REQUEST, f"{inert(leaf)}: {why}")
    report = Download(os.path.join(folder, leaf))
    try:
        top = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise WorkerError(ErrorReason.FORBIDDEN, f"{inert(folder)}: {os.strerror(exc.errno or 0)}") from None
    try:
        copier = _Copier(client, job_id, top, report)
        made = copier.file(where, leaf) if kind == "file" else copier.folder(leaf)
        if report.skipped and (kind == "file" or not made):
            raise WorkerError(ErrorReason.BAD_REQUEST, f"{inert(report.path)}: {report.skipped[0][1]}")
        if kind == "directory":
            copier.tree(where, leaf)
        return report
    finally:
        os.close(top)
