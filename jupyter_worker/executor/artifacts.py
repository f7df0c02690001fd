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
- A job never chooses where its files land among the requester's: each job's files go into a NEW
  folder made in DIR, `DIR/<id8>` (the job id's first 8 characters; `<id8>-2`, `<id8>-3`... if the
  name is taken), never an existing one. So a job cannot plant `.git/hooks/pre-commit`, a
  `numpy.py` beside the notebook, a `conftest.py` or an `.envrc` that would run later, outside the
  sandbox. Files are made 0644 (exec bits dropped), folders 0755, less what the requester's umask
  (read from /proc/PID/status of the submitting process) and DIR itself close to group or others:
  under umask 077, or in a DIR of 0700, they are 0600 and 0700.
- DIR is opened as the requester (openat2 RESOLVE_NO_MAGICLINKS: their own links in its path are
  theirs to follow); beneath it every folder is reached with RESOLVE_BENEATH|NO_SYMLINKS, and each
  file is written to a new hidden name (O_CREAT|O_EXCL|O_NOFOLLOW relative to its folder's fd) and
  renamed to its own without replacing anything (renameat2 RENAME_NOREPLACE, else link+unlink), so
  a killed copy leaves no half file under a real name.
- Names: each must be one plain file name (transfer.unsafe_name: no control or invisible
  characters, not '.' or '..', valid UTF-8, at most 255 bytes), else it is skipped.
- /work/.jupyter-worker (where the cell runner leaves --out values) is left out unless a glob names it.
- Bounds: Policy.max_artifacts_mb and Policy.max_artifacts_files (files past them are not copied,
  and the record's note says how many), at most WALK_FACTOR x max_artifacts_files entries looked
  at (a folder bomb stops the walk, with a note), Policy.artifacts_timeout_s.

The outcome goes in the job's record (`artifacts`: folder, copied, bytes, skipped, skipped_examples,
note, error) before the job is reported ended, so whoever sees the end sees the files.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorReason, WorkerError
from ..formatting import bytes_words
from ..sandbox import libc
from ..sandbox.mounts import acting_as
from ..spec import Glob
from ..transfer import BENEATH, PIECE, discard, kind_of, never_copied, rename_into_place, temporary, unsafe_name
from . import workfiles
from .folders import JobFolder

AT_FDCWD = -100
EXAMPLES = 10  # skipped entries named in the record; the rest are counted
MAX_FOLDERS = 100  # DIR/<id8>, DIR/<id8>-2 ... DIR/<id8>-100, then nothing is copied
WALK_FACTOR = 10  # entries of /work looked at: at most this many times Policy.max_artifacts_files
INTERNAL = ".jupyter-worker"  # the cell runner's folder in /work (cell.py), not the user's files
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
    umask: int = 0o022  # the requester's, when they submitted

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Outcome:
    copied: int = 0
    bytes: int = 0
    skipped: int = 0
    skipped_examples: list[list[str]] = field(default_factory=list)
    folder: str | None = None  # the new folder made in DIR for this job's files
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
    """One job's copy: /work's root (root, read as the job's uid) into its new folder in DIR
    (dest, written as the requester)."""

    def __init__(self, request: Request, root: int, dest: int, outcome: Outcome):
        self.request, self.root, self.dest, self.outcome = request, root, dest, outcome
        self.globs = [Glob(p) for p in request.patterns]
        self.internal = any(p == INTERNAL or p.startswith(INTERNAL + "/") for p in request.patterns)
        self.deadline = time.monotonic() + request.timeout_s
        self.budget = WALK_FACTOR * request.max_files  # entries of /work still to be looked at
        self.folders: dict[str, bool] = {"": True}  # a folder of /work -> whether it was made in dest
        self.as_job = (request.runs_as[0], request.runs_as[1], [request.runs_as[1]])

    def wanted(self, path: str) -> bool:
        return not self.globs or any(g.matches(path) for g in self.globs)

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
                why = unsafe_name(name)
                if stat.S_ISDIR(mode):
                    if why:
                        self.outcome.skip(path, why)
                    elif path != INTERNAL or self.internal:
                        pending.append(path)
                elif not self.wanted(path):
                    continue
                elif why:
                    self.outcome.skip(path, why)
                elif stat.S_ISREG(mode):
                    if not self.file(where, name, size) and self.late():
                        return
                else:
                    self.outcome.skip(path, never_copied(kind_of(mode)))
            if self.budget <= 0:
                self.outcome.note = (
                    f"stopped after looking at {WALK_FACTOR * self.request.max_files:,} entries of /work "
                    f"({WALK_FACTOR} x Policy.max_artifacts_files)"
                )
                return

    def entries(self, where: str) -> list[tuple[str, int, int]]:
        """The names in a folder of /work with their types and sizes, never following one; at
        most the walk's budget of them."""
        with acting_as(*self.as_job):
            try:
                fd = libc.openat2(self.root, where or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, _READ)
            except OSError as exc:
                self.outcome.skip(where or ".", f"cannot read: {os.strerror(exc.errno or 0)}")
                return []
            try:
                found = []
                with os.scandir(fd) as names:
                    for entry in names:
                        if self.budget <= 0:
                            break
                        self.budget -= 1
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        found.append((entry.name, info.st_mode, info.st_size))
                return sorted(found, key=lambda e: os.fsencode(e[0]))
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
            if not self.folder(where):
                return False
            return self.write(source, where, path, name)
        finally:
            os.close(source)

    def beneath(self, relative: str, path: str) -> int | None:
        """An O_PATH fd of a folder beneath dest, as the requester, no link followed; None (and
        path skipped with the reason) if it cannot be opened."""
        try:
            return libc.openat2(self.dest, relative or ".", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, BENEATH)
        except OSError as exc:
            self.outcome.skip(path, f"cannot write: {os.strerror(exc.errno or 0)}")
            return None

    def folder(self, where: str) -> bool:
        """The folder of /work at where, made beneath dest as the requester (the folder is new:
        every name in it is made by this copy); whether it is there."""
        if where in self.folders:
            return self.folders[where]
        parent, _, name = where.rpartition("/")
        made = False
        if self.folder(parent):
            with acting_as(*self.request.requester):
                into = self.beneath(parent, where)
                if into is not None:
                    try:
                        os.mkdir(name, 0o755, dir_fd=into)
                        made = True
                    except OSError as exc:
                        self.outcome.skip(where, f"cannot write: {os.strerror(exc.errno or 0)}")
                    finally:
                        os.close(into)
        self.folders[where] = made
        return made

    def write(self, source: int, where: str, path: str, name: str) -> bool:
        """source into where/name as the requester: a hidden new file, renamed to name at the end
        without replacing anything; 0644 whatever the job's mode (exec bits dropped)."""
        with acting_as(*self.request.requester):
            into = self.beneath(where, path)
            if into is None:
                return False
            temp = ""
            try:
                fd, temp = temporary(into, 0o644)
                try:
                    complete = self.pour(source, fd)
                finally:
                    os.close(fd)
                if complete:
                    rename_into_place(into, temp, name, replace=False)
                    temp = ""
                    self.outcome.copied += 1
                return complete
            except OSError as exc:  # a full disk or quota on the requester's side, a read error
                self.outcome.skip(path, f"cannot copy: {os.strerror(exc.errno or 0)}")
                return False
            finally:
                if temp:  # the deadline, the byte cap, an error: no half file is left behind
                    discard(into, temp)
                os.close(into)

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
        outcome.bytes += copied
        return True


_READ = workfiles.RESOLVE
_DEST = libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS


def _new_folder(dest: int, request: Request, outcome: Outcome) -> int | None:
    """DIR/<id8> made now as the requester (else <id8>-2, ...: never an existing folder), 0755;
    its O_PATH fd, its path in outcome.folder; None (and outcome.error) if none can be made."""
    id8 = request.job_id.replace("-", "")[:8]
    for attempt in range(1, MAX_FOLDERS + 1):
        name = id8 if attempt == 1 else f"{id8}-{attempt}"
        try:
            os.mkdir(name, 0o755, dir_fd=dest)
        except FileExistsError:
            continue
        except OSError as exc:
            outcome.error = f"{request.destination}/{name}: {os.strerror(exc.errno or 0)} (nothing copied)"
            return None
        try:
            fd = libc.openat2(dest, name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, BENEATH)
        except OSError as exc:
            outcome.error = f"{request.destination}/{name}: {os.strerror(exc.errno or 0)} (nothing copied)"
            return None
        outcome.folder = os.path.join(request.destination, name)
        return fd
    outcome.error = f"{request.destination}: {id8} to {id8}-{MAX_FOLDERS} are all taken (nothing copied)"
    return None


def collect(request: Request) -> Outcome:
    """The copy itself (in the copying process): open the destination as the requester, make the
    job's new folder in it, then copy /work into that."""
    outcome = Outcome()
    os.umask(0o022)
    with acting_as(*request.requester):
        # the folder resolved at submission, no link followed now: nothing the job made meanwhile
        # (a link in place of DIR or above it) can lead the copy elsewhere
        try:
            top = libc.openat2(AT_FDCWD, request.resolved, os.O_PATH | os.O_DIRECTORY, _DEST)
        except OSError as exc:
            outcome.error = f"{request.destination}: {os.strerror(exc.errno or 0)} (nothing copied)"
            return outcome
        try:
            info = os.fstat(top)
            if [info.st_dev, info.st_ino] != list(request.identity):
                outcome.error = f"{request.destination} was replaced since the job was submitted (nothing copied)"
                return outcome
            if not os.access(f"/proc/self/fd/{top}", os.W_OK | os.X_OK, effective_ids=True):
                outcome.error = f"{request.destination} is no longer a folder the requester can write"
                return outcome
            # private whatever the executor's umask: made as the requester's own files would be (their
            # umask at submission), and never more open than DIR itself is to group or others
            os.umask(0o022 | (request.umask & 0o077) | (~info.st_mode & 0o077))
            dest = _new_folder(top, request, outcome)
        finally:
            os.close(top)
    if dest is None:
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
        caps = f"Policy.max_artifacts_mb ({bytes_words(request.max_bytes)}), max_artifacts_files ({request.max_files})"
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
