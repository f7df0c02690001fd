"""Fixtures of the sandbox tests: cgroup roots holding only some of this host's hierarchies."""

from __future__ import annotations

import glob
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from jupyter_worker.sandbox.cgroups import CgroupHost


@pytest.fixture
def cgroup_root(tmp_path) -> Iterator[Callable[..., str]]:
    """cgroup_root(v1=("pids", "freezer"), unified=False) -> a real cgroup root (a tmpfs) holding
    only those of this host's v1 hierarchies, and the v2 tree if asked; unmounted afterwards.
    Skips when this host has not got them all."""
    root = tmp_path / "cgroot"
    mounted = []

    def make(v1: tuple[str, ...] = (), unified: bool = False) -> str:
        host = CgroupHost.detect()
        missing = [c for c in v1 if c not in host.v1] + (["cgroup2"] if unified and host.v2 is None else [])
        if missing:
            pytest.skip(f"this host has no {', '.join(missing)} to mount")
        root.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "jw-test-cgroot", str(root)], check=True)
        mounted.append(root)
        wanted = [(c, ["-t", "cgroup", "-o", c, "cgroup"]) for c in v1]
        wanted += [("unified", ["-t", "cgroup2", "cgroup2"])] if unified else []
        for name, how in wanted:
            target = root / name
            target.mkdir()
            subprocess.run(["mount", *how, str(target)], check=True)
            mounted.append(target)
        return str(root)

    yield make
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=True)


def loops_backed_by(image: str) -> list[str]:
    """Loop devices whose backing file is image (the kernel names it, with ' (deleted)' once unlinked)."""
    found = []
    for path in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(path) as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.removesuffix(" (deleted)") == image:
            found.append(path.split("/")[3])
    return found


def mounts_at(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4] == path]


def eventually(check, seconds: float = 3.0):
    """The loop device clears itself once the job's mount namespace is gone, a moment after the end."""
    deadline = time.monotonic() + seconds
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return result
