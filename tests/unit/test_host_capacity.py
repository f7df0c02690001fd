"""What the host can give: requests above it refused in words, defaults lowered, cgroup limits read."""

from __future__ import annotations

import pytest

from jupyter_worker.errors import SpecError
from jupyter_worker.executor import capacity
from jupyter_worker.executor.capacity import Capacity
from jupyter_worker.limits import Limits
from jupyter_worker.sandbox.cgroups import V1, V2, Hierarchy

HOST = Capacity(memory_bytes=(23 << 30) + (500 << 20), cpu_percent=200.0, cpus=frozenset({0, 1}))


def test_more_memory_than_the_host_has_is_refused_naming_its_ram():
    with pytest.raises(SpecError, match=r"^memory limit: 999999 MiB is more than this host has \(23 GiB\)$"):
        HOST.check(Limits.parse({"memory_mb": 999999}))
    HOST.check(Limits.parse({"memory_mb": "23G"}))  # within it


def test_more_cpu_than_its_cores_or_a_cpu_it_lacks_is_refused():
    with pytest.raises(SpecError, match=r"^CPU limit: 400 % is more than this host has \(200 %: 2 cores\)$"):
        HOST.check(Limits.parse({"cpu_percent": 400}))
    with pytest.raises(SpecError, match=r"^cpuset: CPU 2 is not one this host has \(it has 0-1\)$"):
        HOST.check(Limits.parse({"cpuset": "0-3"}))
    with pytest.raises(SpecError, match="CPU 9999999"):
        HOST.check(Limits.parse({"cpuset": "9999999-4000000000"}))  # a huge range costs nothing
    HOST.check(Limits.parse({"cpu_percent": 200, "cpuset": "0,1"}))


def test_defaults_above_the_host_are_lowered_and_others_kept():
    lowered = HOST.lowered(Limits.parse({"memory_mb": 1 << 26, "cpu_percent": 800, "pids": 64}))
    assert (lowered.memory_mb, lowered.cpu_percent, lowered.pids) == (HOST.memory_mb, 200, 64)
    same = Limits.parse({"memory_mb": 512})
    assert HOST.lowered(same) is same


def test_an_unknown_figure_refuses_and_lowers_nothing():
    unknown = Capacity(None, None, None)
    asked = Limits.parse({"memory_mb": 1 << 26, "cpu_percent": 100000, "cpuset": "0-500"})
    unknown.check(asked)
    assert unknown.lowered(asked) is asked


def test_cpu_ranges_read_and_written_compactly():
    assert capacity.ranges(frozenset({0, 1, 2, 5, 7, 8})) == "0-2,5,7-8"
    assert capacity.first_missing("0,1", frozenset({0, 1})) is None
    assert capacity.first_missing("1,3-4", frozenset({0, 1, 2, 3})) == 4


def test_the_least_memory_limit_and_cpu_quota_above_the_executor_are_found(tmp_path):
    leaf = tmp_path / "system.slice" / "worker.service"
    leaf.mkdir(parents=True)
    (tmp_path / "system.slice" / "memory.max").write_text(f"{8 << 30}\n")
    (leaf / "memory.max").write_text("max\n")
    (leaf / "cpu.max").write_text("150000 100000\n")
    hierarchy = Hierarchy(str(tmp_path), V2, frozenset({"memory", "cpu"}), "/system.slice/worker.service")
    assert capacity._least(hierarchy, ("memory.max",)) == 8 << 30
    assert capacity._cpu_quota(hierarchy) == 150.0


def test_cgroup_v1_no_limit_and_no_quota_are_none(tmp_path):
    (tmp_path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    hierarchy = Hierarchy(str(tmp_path), V1, frozenset({"memory"}), "/")
    assert capacity._least(hierarchy, ("memory.limit_in_bytes",)) is None
    assert capacity._cpu_quota(hierarchy) is None


def test_this_hosts_figures_are_read():
    host = capacity.read()
    assert host.memory_bytes and host.memory_bytes > 0
    assert host.cpus and host.cpu_percent and 0 < host.cpu_percent <= 100 * len(host.cpus)
