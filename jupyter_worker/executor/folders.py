"""A job's folder under the executor's state dir, and what lives in it.

jobs/<id>/          0700, root's: only the executor crosses it (the sandbox binds /work from an
                    fd root opened, so the job's uid never walks this path)
    work/           0700, owned by the uid the job runs as: the job's /work
    log             the job's output, framed (sandbox/output.py), appended by its supervisor
    result          the supervisor's word on the job: its cgroup, then how it ended
    control         the supervisor's listening socket, for reattaching after a restart
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field


@dataclass(frozen=True)
class JobFolder:
    """A job's folder (`dir`) and the paths in it, named as in the layout above."""

    dir: str
    work: str = field(init=False)
    log: str = field(init=False)
    result: str = field(init=False)
    control: str = field(init=False)

    def __post_init__(self) -> None:
        for name in ("work", "log", "result", "control"):
            object.__setattr__(self, name, os.path.join(self.dir, name))

    @classmethod
    def of(cls, jobs_dir: str, job_id: str) -> JobFolder:
        return cls(os.path.join(jobs_dir, job_id))

    def make(self, uid: int, gid: int) -> None:
        """The folder, and /work in it for the uid and gid the job runs as."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.makedirs(self.work, mode=0o700, exist_ok=True)
        os.chown(self.work, uid, gid)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def size(self) -> int:
        """Bytes of the regular files in it (what retention counts); links are not followed."""
        total = 0
        for top, _, files in os.walk(self.dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(top, name)).st_size
                except OSError:
                    pass
        return total
