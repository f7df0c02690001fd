"""The spawner keeps its standbys (supervisors with a sandbox prepared ahead) at the number asked for."""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from jupyter_worker.limits import Limits
from jupyter_worker.sandbox import LaunchSpec, Sandbox
from tests.conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="the sandbox engine needs root")


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def roles(spawner: int) -> list[str]:
    """The spawner's children by what they are: its monitor, a standby (Python), or the init of a
    running job (handed over, so adopted by the spawner)."""
    found = []
    for pid in children(spawner):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:  # ending (a standby that has handed its job over)
            found.append("ending")
            continue
        found.append(comm if comm == "jw-monitor" else "standby" if "python" in exe else "init")
    return sorted(found)


def test_a_burst_that_empties_the_pool_leaves_it_at_its_size_not_one_standby_more_a_launch(runtime_dir):
    with tempfile.TemporaryDirectory(dir=runtime_dir) as runtime, Sandbox(runtime_dir=runtime, standbys=1) as engine:
        jobs = [engine.launch(LaunchSpec(["sleep", "60"], limits=Limits(timeout_s=60))) for _ in range(5)]
        try:
            for job in jobs:
                assert next(job.events(timeout=30))["event"] == "started"
            spawner = engine._process.pid
            expected = ["init"] * 5 + ["jw-monitor", "standby"]
            deadline = time.monotonic() + 10
            while roles(spawner) != expected and time.monotonic() < deadline:
                time.sleep(0.05)  # the replacement is forked once a start is over
            time.sleep(0.5)
            assert roles(spawner) == expected, "5 running jobs' inits, the monitor and 1 standby"
        finally:
            for job in jobs:
                job.stop(grace_s=0)
                job.wait(timeout=30)
                job.close()
    assert os.path.isdir(runtime_dir)
