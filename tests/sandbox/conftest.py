"""Fixtures of the sandbox tests: cgroup roots holding only some of this host's hierarchies."""

from __future__ import annotations

import subprocess
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
