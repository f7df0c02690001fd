"""A limit this host cannot enforce refuses the job, naming the limit and why; nothing runs.

The engine is pointed at a real cgroup root that lacks the memory controller (a tmpfs holding only
the hierarchies the test mounts), not at a mock.
"""

from __future__ import annotations

import os
import uuid

import pytest

from jupyter_worker.sandbox import LaunchSpec, Sandbox
from jupyter_worker.sandbox.cgroups import CgroupHost
from jupyter_worker.spec import Limits, Reason

pytestmark = pytest.mark.cgroup


@pytest.fixture
def partial_cgroup_root(cgroup_root):
    """A cgroup root with the pids and freezer hierarchies where v1 has them, and no memory."""
    host = CgroupHost.detect()
    return cgroup_root(v1=tuple(c for c in ("pids", "freezer") if c in host.v1))


def test_a_missing_controller_refuses_the_limit_and_runs_nothing(partial_cgroup_root, runtime_dir):
    marker = f"/tmp/jw-ran-{uuid.uuid4().hex}"
    spec = LaunchSpec(["/bin/sh", "-c", f"touch {marker}"], limits=Limits(memory_mb=64), network="host", mounts=[])
    with Sandbox(cgroup_root=partial_cgroup_root, runtime_dir=runtime_dir) as engine:
        result = engine.run(spec)
    assert result.outcome.reason is Reason.START_ERROR
    assert "memory limit: the memory controller is not available" in result.outcome.error
    assert not os.path.exists(marker)


def test_limits_the_partial_root_has_still_work(partial_cgroup_root, runtime_dir):
    host = CgroupHost.detect(partial_cgroup_root)
    if host.can_kill() is None:
        pytest.skip("this host has no v1 freezer to mount beside the missing memory controller")
    with Sandbox(cgroup_root=partial_cgroup_root, runtime_dir=runtime_dir) as engine:
        result = engine.run(LaunchSpec(["/bin/true"], limits=Limits(pids=5)))
    assert result.outcome.reason is Reason.EXIT and result.outcome.exit_code == 0


def test_every_refusal_is_named_at_once(partial_cgroup_root):
    host = CgroupHost.detect(partial_cgroup_root)
    problems = host.refusals(Limits(memory_mb=64, cpu_percent=50, io_bps=1 << 20))
    assert [p.split(":")[0] for p in problems[:3]] == ["memory limit", "cpu limit", "io limit"]


def test_an_isolated_job_without_a_place_on_the_bridge_is_refused(run):
    result = run(["/bin/echo", "ran"], network="isolated")
    assert result.outcome.reason is Reason.START_ERROR and result.stdout == b""
    assert "needs a place on the executor's bridge" in result.outcome.error
