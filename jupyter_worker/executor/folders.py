"""A job's folder under the executor's state dir, and what lives in it.

jobs/<id>/          0700, root's: only the executor crosses it (the sandbox binds /work from an
                    fd root opened, so the job's uid never walks this path)
    work/           0700, owned by the uid the job runs as: the job's /work; with a disk limit
                    empty, where the kept image is mounted for a moment to be read
    work.img        with a disk limit: the job's /work, an ext4 image of disk_mb (sandbox/disk.py),
                    mounted only in the job's mount namespace, kept after the job as its /work
    log             the job's output, framed (sandbox/output.py), appended by its supervisor
    result          the supervisor's word on the job: its cgroup, then how it ended (before a
                    supervisor took the job, {"unstarted": true}: executor/local.py)
    control         the supervisor's listening socket, for reattaching after a restart
jobs/.trash-<id>    a deleted job's folder, renamed away at once and removed by a thread of its own
jobs/.spare-<hex>   a folder made ahead, with its files, renamed to a job's id when it starts
                    (executor/local.py: Spares); a stopped executor's are removed at the next start
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass, field

from ..sandbox import disk

TRASH_PREFIX = ".trash-"
_sweeping = threading.Lock()


@dataclass(frozen=True)
class JobFolder:
    """A job's folder (`dir`) and the paths in it, named as in the layout above."""

    dir: str
    work: str = field(init=False)
    image: str = field(init=False)
    log: str = field(init=False)
    result: str = field(init=False)
    control: str = field(init=False)

    def __post_init__(self) -> None:
        for name in ("work", "log", "result", "control"):
            object.__setattr__(self, name, os.path.join(self.dir, name))
        object.__setattr__(self, "image", disk.image_of(self.work))

    @classmethod
    def of(cls, jobs_dir: str, job_id: str) -> JobFolder:
        return cls(os.path.join(jobs_dir, job_id))

    def read_result(self) -> dict:
        """The supervisor's result file: its cgroup and init's pid while the job runs, its outcome once
        it ended; {} when it is missing or unreadable."""
        try:
            with open(self.result) as f:
                data = json.loads(f.read() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def make(self, uid: int, gid: int) -> None:
        """The folder, and /work in it for the uid and gid the job runs as."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.makedirs(self.work, mode=0o700, exist_ok=True)
        os.chown(self.work, uid, gid)

    def remove(self) -> None:
        """Gone from its place at once (a rename); its files are removed by a thread, so a /work of
        300k files never holds up the caller."""
        if not os.path.isdir(self.dir):
            return
        jobs_dir, name = os.path.split(self.dir)
        trash = os.path.join(jobs_dir, TRASH_PREFIX + name)
        try:
            os.rename(self.dir, trash)
        except OSError:
            return
        threading.Thread(target=empty_trash, args=(jobs_dir,), name="jupyter-worker-trash", daemon=True).start()

    def size(self) -> int:
        """Bytes the folder takes on the host's disk: the blocks of its files, a sparse /work
        image counted by what was written to it. Only a /work without a disk limit (a plain
        folder) is walked, so call this off the event loop."""
        total = 0
        for name in os.listdir(self.dir) if os.path.isdir(self.dir) else []:
            path = os.path.join(self.dir, name)
            if path == self.work:
                continue
            total += disk.allocated_bytes(path)
        if os.path.isdir(self.work):
            total += _tree_blocks(self.work)
        return total


def _tree_blocks(top: str) -> int:
    total = 0
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            total += disk.allocated_bytes(os.path.join(folder, name))
    return total


def empty_trash(jobs_dir: str) -> None:
    """Remove every deleted job's folder (also those a stop of the executor left half removed)."""
    with _sweeping:
        try:
            names = [n for n in os.listdir(jobs_dir) if n.startswith(TRASH_PREFIX)]
        except OSError:
            return
        for name in names:
            shutil.rmtree(os.path.join(jobs_dir, name), ignore_errors=True)
