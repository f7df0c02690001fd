"""A hybrid host without the v1 freezer: v1 controllers limit the job while the controller-less v2
tree places, watches, counts and kills it (cgroup.procs, cgroup.events, cpu.stat, cgroup.kill).

The engine is pointed at a real cgroup root holding this host's v1 memory and pids hierarchies and
its unified tree, so the v2 dialect's tracking runs here too, not only in the pure v2 lane.
"""

from __future__ import annotations

import pytest

from jupyter_worker.limits import Limits
from jupyter_worker.sandbox import LaunchSpec, Sandbox
from jupyter_worker.sandbox.cgroups import CgroupHost
from jupyter_worker.spec import Reason

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


@pytest.fixture
def hybrid_root(cgroup_root) -> str:
    root = cgroup_root(v1=("memory", "pids"), unified=True)
    host = CgroupHost.detect(root)
    assert host.mode == "hybrid" and host.tracker is host.v2
    return root


def test_the_unified_tree_counts_the_jobs_cpu_while_v1_limits_it(hybrid_root, runtime_dir):
    with Sandbox(cgroup_root=hybrid_root, runtime_dir=runtime_dir) as engine:
        result = engine.run(LaunchSpec(["python3", "-c", BURN], limits=Limits(memory_mb=64, pids=10)))
    assert result.outcome.reason is Reason.EXIT and result.outcome.exit_code == 0, result.outcome
    assert result.outcome.usage.cpu_seconds >= 0.3
    assert 0 < result.outcome.usage.memory_peak_bytes <= 64 << 20


def test_the_unified_tree_kills_the_whole_job_at_its_timeout(hybrid_root, runtime_dir):
    with Sandbox(cgroup_root=hybrid_root, runtime_dir=runtime_dir) as engine:
        result = engine.run(LaunchSpec(["sh", "-c", "sleep 300 & sleep 300"], limits=Limits(timeout_s=0.5)))
    assert result.outcome.reason is Reason.TIMEOUT
