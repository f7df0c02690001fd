"""--artifacts: when a job ends, the files it left in /work are copied into a folder of the requester's.

    jupyter-worker run --artifacts out:'*.csv,plots/**' -- python3 train.py

The job filled /work, so everything in it is hostile, and the destination is the requester's, so
nothing may be written there that they could not write themselves, nor anything of theirs replaced:

- The copy runs in a process of its own (`python -I`, one thread doing the work), never on the
  executor's event loop and never with the executor's threads' credentials in play: it switches its
  filesystem identity (fsuid, fsgid, groups: sandbox.mounts.acting_as) to the uid the job ran as
  to read /work and to the requester to write, which in a multi-threaded executor would leak
  into its other threads (glibc's setgroups applies to every thread). The executor kills it past
  Policy.artifacts_timeout_s; the copy watches the same deadline itself and stops cleanly.
- /work is read as in executor/workfiles.py: every open beneath its root with openat2
  RESOLVE_BENEATH|NO_SYMLINKS|NO_MAGICLINKS|NO_XDEV and O_NOFOLLOW, as the job's uid; symlinks,
  FIFOs, sockets and devices are never followed, opened or copied (each is reported as skipped);
  a /work with a disk limit is its kept image, mounted read-only for the copy (sandbox/disk.py).
- The destination is opened as the requester (openat2 RESOLVE_NO_MAGICLINKS: their own links in
  its path are theirs to follow); beneath it every folder is reached with RESOLVE_BENEATH|
  NO_SYMLINKS and every file created with O_CREAT|O_EXCL|O_NOFOLLOW relative to its folder's fd,
  so a name never resolves through a link and never replaces anything.
- Names: each must be one plain file name (transfer.unsafe_name: no control or invisible
  characters, not '.' or '..', valid UTF-8, at most 255 bytes), else it is skipped.
- Collisions: an existing file is never overwritten. The copy is named with the job's first 8 id
  characters before the extension (`model.pt` -> `model-1a2b3c4d.pt`; then `model-1a2b3c4d-2.pt`...);
  a folder that exists as a folder is merged into (new names only), one in the way of a file
  becomes `name-1a2b3c4d`.
- Bounds: Policy.max_artifacts_mb and Policy.max_artifacts_files (files past them are not copied,
  and the record's note says how many), Policy.artifacts_timeout_s.

The outcome goes in the job's record (`artifacts`: copied, bytes, skipped, skipped_examples, note,
error) before the job is reported ended, so whoever sees the end sees the files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorReason, WorkerError
from ..sandbox import libc
from ..sandbox.mounts import acting_as
from ..transfer import unsafe_name
from . import workfiles
from .folders import JobFolder

AT_FDCWD = -100
BENEATH = libc.RESOLVE_BENEATH | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS
PIECE = 1 << 20
EXAMPLES = 10  # skipped entries named in the record; the rest are counted
MAX_SUFFIXES = 100  # model-<id8>.pt, model-<id8>-2.pt ... model-<id8>-100.pt, then skipped
KILL_MARGIN_S = 10.0  # the executor waits this much past the deadline before it kills the copy
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHILD = "import sys; sys.path.insert(0, {parent!r}); from jupyter_worker.executor.artifacts import main; main()"


def check_destination(path: str, uid: int, gid: int, groups: list[int]) -> dict[str, Any]:
    """At submission: the folder exists and the requester may write in it (checked as them, so
    their ACLs, read-only mounts and groups count). Returns what the copy holds it to: the folder
    as it resolved (their own links followed now, as them) and its identity (device, inode).

    The job may be able to write where DIR lives (a notebook folder mounted rw): by the end it could
    have swapped DIR, or a folder above it, for a link to anywhere, and the copy of a root
    requester's job writes as root. So the copy opens the resolved path with no link followed at
    all and checks it is the same folder (collect)."""
    with acting_as(uid, gid, groups):
        try:
            fd = libc.openat2(AT_FDCWD, path, os.O_PATH | os.O_DIRECTORY, libc.RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            why = os.strerror(exc.errno or 0)
            raise WorkerError(ErrorReason.INVALID, f"artifacts: {path}: {why} (a folder you can write)") from None
        try:
            # AT_EACCESS: checked with the filesystem identity in force, the requester's
            writable = os.access(f"/proc/self/fd/{fd}", os.W_OK | os.X_OK, effective_ids=True)
            resolved, info = os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd)
        finally:
            os.close(fd)
    if not writable:
        raise WorkerError(ErrorReason.INVALID, f"artifacts: {path} is not a folder you can write")
    return {"resolved": resolved, "identity": [info.st_dev, info.st_ino]}


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob on a path relative to /work: '*' and '?' within one name, '[...]' a class, '**' any
    number of folders. A glob that matches a folder takes everything in it."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            inner = pattern[i + 1 : end]
            negate = inner[:1] in ("!", "^")
            inner = inner[1:] if negate else inner
            out.append(f"[{'^' if negate else ''}{re.escape(inner).replace(chr(92) + '-', '-')}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + "(?:/.*)?", re.DOTALL)


def collided(name: str, suffix: str, attempt: int) -> str:
    """The name a copy takes when name is taken: the suffix before the extension."""
    stem, dot, extension = name.rpartition(".")
    if not stem:  # no extension, or a dot file
        stem, dot, extension = name, "", ""
    tag = suffix if attempt == 1 else f"{suffix}-{attempt}"
    return f"{stem}-{tag}{dot}{extension}"


@dataclass
class Request:
    """What the copy needs, as the executor sends it to the copying process."""

    jobs_dir: str
    job_id: str
    destination: str
    resolved: str  # the destination as it resolved at submission, and its (device, inode)
    identity: list[int]
    patterns: list[str]
    runs_as: tuple[int, int]
    requester: tuple[int, int, list[int]]
    max_bytes: int
    max_files: int
    timeout_s: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Outcome:
    copied: int = 0
    bytes: int = 0
    skipped: int = 0
    skipped_examples: list[list[str]] = field(default_factory=list)
    left: int = 0  # files past a cap
    note: str | None = None
    error: str | None = None

    def skip(self, path: str, why: str) -> None:
        self.skipped += 1
        if len(self.skipped_examples) < EXAMPLES:
            # a name that is not UTF-8 cannot travel as JSON text: shown with replacement characters
            self.skipped_examples.append([path.encode(errors="surrogateescape").decode(errors="replace"), why])

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        del data["left"]
        return data


class _Copy:
    """One job's copy: /work's root (root, read as the job's uid) into dest (written as the requester)."""

    def __init__(self, request: Request, root: int, dest: int, outcome: Outcome):
        self.request, self.root, self.dest, self.outcome = request, root, dest, outcome
        self.suffix = request.job_id.replace("-", "")[:8]
        self.patterns = [glob_regex(p) for p in request.patterns]
        self.deadline = time.monotonic() + request.timeout_s
        self.folders: dict[str, str] = {"": "."}  # a folder of /work -> where its files go beneath dest
        self.as_job = (request.runs_as[0], request.runs_as[1], [request.runs_as[1]])

    def wanted(self, path: str) -> bool:
        return not self.patterns or any(p.fullmatch(path) for p in self.patterns)

    def late(self) -> bool:
        if time.monotonic() < self.deadline:
            return False
        self.outcome.note = f"the copy took past Policy.artifacts_timeout_s ({self.request.timeout_s:g} s); stopped"
        return True

    def walk(self) -> None:
        """Every folder of /work, a stack rather than recursion; entries in name order."""
        pending = [""]
        while pending and not self.late():
            where = pending.pop()
            for name, mode, size in self.entries(where):
                path = f"{where}/{name}" if where else name
                if stat.S_ISDIR(mode):
                    if unsafe_name(name):
                        self.outcome.skip(path, unsafe_name(name) or "")
                    else:
                        pending.append(path)
                elif not self.wanted(path):
                    continue
                elif unsafe_name(name):
                    self.outcome.skip(path, unsafe_name(name) or "")
                elif stat.S_ISREG(mode):
                    if not self.file(where, name, size) and self.late():
                        return
                else:
                    self.outcome.skip(path, f"a {_kind(mode)}, never copied")

    def entries(self, where: str) -> list[tuple[str, int, int]]:
        """The names in a folder of /work with their types and sizes, never following one."""
        with acting_as(*self.as_job):
            try:
                fd = libc.openat2(self.root, where or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, _READ)
            except OSError as exc:
                self.outcome.skip(where or ".", f"cannot read: {os.strerror(exc.errno or 0)}")
                return []
            try:
                found = []
                for name in sorted(os.listdir(fd), key=os.fsencode):
                    try:
                        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue
                    found.append((name, info.st_mode, info.st_size))
                return found
            finally:
                os.close(fd)

    def file(self, where: str, name: str, size: int) -> bool:
        """Copy one regular file; whether it was copied."""
        outcome, request = self.outcome, self.request
        if outcome.copied >= request.max_files or outcome.bytes + size > request.max_bytes:
            outcome.left += 1
            return False
        path = f"{where}/{name}" if where else name
        with acting_as(*self.as_job):
            try:
                source = libc.openat2(self.root, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, _READ)
            except OSError as exc:
                outcome.skip(path, f"cannot read: {os.strerror(exc.errno or 0)}")
                return False
        try:
            if not stat.S_ISREG(os.fstat(source).st_mode):  # changed since it was listed
                outcome.skip(path, "not a regular file")
                return False
            folder = self.folder(where)
            if folder is None:
                return False
            return self.write(source, folder, path, name)
        finally:
            os.close(source)

    def folder(self, where: str) -> str | None:
        """Where a folder of /work goes beneath dest, made as the requester (merged into a folder
        of that name, renamed past anything else); None if it cannot be made."""
        if where in self.folders:
            return self.folders[where]
        parent, _, name = where.rpartition("/")
        above = self.folder(parent)
        if above is None:
            return None
        for candidate in (name, f"{name}-{self.suffix}"):
            relative = candidate if above == "." else f"{above}/{candidate}"
            with acting_as(*self.request.requester):
                try:
                    os.close(libc.openat2(self.dest, relative, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, BENEATH))
                except OSError:
                    try:
                        into = libc.openat2(self.dest, above, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, BENEATH)
                    except OSError as exc:
                        self.outcome.skip(where, f"cannot write: {os.strerror(exc.errno or 0)}")
                        return None
                    try:
                        os.mkdir(candidate, 0o755, dir_fd=into)
                    except FileExistsError:
                        continue  # a file or link of that name: the next candidate
                    except OSError as exc:
                        self.outcome.skip(where, f"cannot write: {os.strerror(exc.errno or 0)}")
                        return None
                    finally:
                        os.close(into)
            self.folders[where] = relative
            return relative
        self.outcome.skip(where, "its name and the renamed one are both taken")
        return None

    def write(self, source: int, folder: str, path: str, name: str) -> bool:
        """source into folder/name as the requester, never replacing anything (the collision rule)."""
        mode = 0o755 if os.fstat(source).st_mode & 0o111 else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with acting_as(*self.request.requester):
            try:
                into = libc.openat2(self.dest, folder, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, BENEATH)
            except OSError as exc:
                self.outcome.skip(path, f"cannot write: {os.strerror(exc.errno or 0)}")
                return False
            try:
                target = _exclusive(into, name, self.suffix, mode, flags)
                if isinstance(target, str):
                    self.outcome.skip(path, target)
                    return False
                fd, written_as = target
                try:
                    complete = self.pour(source, fd)
                except OSError as exc:  # a full disk or quota on the requester's side, a read error
                    self.outcome.skip(path, f"cannot copy: {os.strerror(exc.errno or 0)}")
                    complete = False
                finally:
                    os.close(fd)
                if not complete:  # the deadline or the byte cap: no half file is left behind
                    os.unlink(written_as, dir_fd=into)
                    return False
            finally:
                os.close(into)
        return True

    def pour(self, source: int, target: int) -> bool:
        """Bytes from source to target, within the byte cap and the deadline."""
        outcome = self.outcome
        copied = 0
        while True:
            if self.late():
                return False
            data = os.read(source, PIECE)
            if not data:
                break
            if outcome.bytes + copied + len(data) > self.request.max_bytes:  # it grew past the cap
                outcome.left += 1
                return False
            view = memoryview(data)
            while view:
                view = view[os.write(target, view) :]
            copied += len(data)
        outcome.copied += 1
        outcome.bytes += copied
        return True


_READ = workfiles.RESOLVE
_DEST = libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS


def _exclusive(folder: int, name: str, suffix: str, mode: int, flags: int) -> tuple[int, str] | str:
    """A new file in folder: name, else the collision rule's names; (fd, its name) or why not."""
    for attempt in range(MAX_SUFFIXES + 1):
        candidate = name if attempt == 0 else collided(name, suffix, attempt)
        if unsafe_name(candidate):  # the suffix made it too long
            return "its name and the renamed ones are taken or too long"
        try:
            return os.open(candidate, flags, mode, dir_fd=folder), candidate
        except FileExistsError:
            continue
        except OSError as exc:
            return f"cannot write: {os.strerror(exc.errno or 0)}"
    return "its name and the renamed ones are all taken"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def collect(request: Request) -> Outcome:
    """The copy itself (in the copying process): open the destination as the requester, then /work."""
    outcome = Outcome()
    os.umask(0o022)
    with acting_as(*request.requester):
        # the folder resolved at submission, no link followed now: nothing the job made meanwhile
        # (a link in place of DIR or above it) can lead the copy elsewhere
        try:
            dest = libc.openat2(AT_FDCWD, request.resolved, os.O_PATH | os.O_DIRECTORY, _DEST)
        except OSError as exc:
            outcome.error = f"{request.destination}: {os.strerror(exc.errno or 0)} (nothing copied)"
            return outcome
        info = os.fstat(dest)
        if [info.st_dev, info.st_ino] != list(request.identity):
            os.close(dest)
            outcome.error = f"{request.destination} was replaced since the job was submitted (nothing copied)"
            return outcome
        if not os.access(f"/proc/self/fd/{dest}", os.W_OK | os.X_OK, effective_ids=True):
            os.close(dest)
            outcome.error = f"{request.destination} is no longer a folder the requester can write"
            return outcome
    try:

        def copy(root: int) -> None:
            _Copy(request, root, dest, outcome).walk()

        workfiles.in_work(JobFolder.of(request.jobs_dir, request.job_id), copy)
    except WorkerError as exc:
        outcome.error = exc.message
    finally:
        os.close(dest)
    if outcome.left and not outcome.note:
        caps = f"Policy.max_artifacts_mb ({request.max_bytes >> 20} MiB), max_artifacts_files ({request.max_files})"
        outcome.note = f"{outcome.left} file(s) not copied: past {caps}"
    return outcome


def main() -> None:
    """The copying process: a Request as JSON on stdin, the Outcome as JSON on stdout."""
    data = json.load(sys.stdin)
    data["runs_as"], data["requester"] = tuple(data["runs_as"]), tuple(data["requester"])
    try:
        outcome = collect(Request(**data))
    except Exception as exc:  # reported on the job, never a traceback in the executor's log only
        outcome = Outcome(error=f"the copy failed: {exc}")
    json.dump(outcome.to_dict(), sys.stdout)


async def copy(request: Request) -> dict[str, Any]:
    """Run the copy in a process of its own and wait for it (killed past its deadline); the
    outcome as the record keeps it. Never raises for the copy's own failures."""
    command = [sys.executable, "-I", "-c", _CHILD.format(parent=_PACKAGE_PARENT)]
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        return Outcome(error=f"the copy could not start: {exc}").to_dict()
    try:
        out, err = await asyncio.wait_for(
            process.communicate(json.dumps(request.to_dict()).encode()), request.timeout_s + KILL_MARGIN_S
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        return Outcome(error=f"the copy did not end within {request.timeout_s:g} s and was killed").to_dict()
    except asyncio.CancelledError:  # the executor is stopping: the copy goes with it
        process.kill()
        raise
    try:
        result = json.loads(out)
    except ValueError:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no word"]
        return Outcome(error=f"the copy failed: {last[0][:500]}").to_dict()
    return result if isinstance(result, dict) else Outcome(error="the copy failed").to_dict()
