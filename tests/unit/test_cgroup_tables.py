"""The cgroup tables: which controller enforces which limit, and how each cgroup version writes and
reads it. A job's cgroups here are plain folders of plain files (a cgroup's files, as the kernel
names and formats them), so each version's writes and parsing are checked without root."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_worker.limits import BY_FIELD, LIMITS, Limits
from jupyter_worker.sandbox.cgroups import ENFORCED, V1, V2, CgroupHost, Hierarchy, JobCgroup

EVERY_CONTROLLER = frozenset({"memory", "cpu", "pids", "io", "cpuset"})
SAMPLE = Limits(memory_mb=64, cpu_percent=50, pids=10, io_bps=1 << 20, cpuset="0-1")


def cgroup(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return str(path)


def v2_job(tmp_path: Path, files: dict[str, str]) -> JobCgroup:
    """A job on a pure v2 host: one cgroup with every controller."""
    mount = tmp_path / "v2"
    host = CgroupHost(root=str(tmp_path), v2=Hierarchy(str(mount), V2, EVERY_CONTROLLER, "/"))
    return JobCgroup(host, {str(mount): cgroup(mount / "job", files)})


def v1_job(tmp_path: Path, files: dict[str, dict[str, str]], unified: bool = False) -> JobCgroup:
    """A job on a v1 host, one hierarchy per controller group; with unified, a hybrid host whose
    controller-less v2 tree tracks the job (no v1 freezer)."""
    host = CgroupHost(root=str(tmp_path))
    dirs = {}
    for group, group_files in files.items():
        mount = tmp_path / group
        hierarchy = Hierarchy(str(mount), V1, frozenset(group.split(",")), "/")
        for name in group.split(","):
            host.v1[name] = hierarchy
        dirs[str(mount)] = cgroup(mount / "job", group_files)
    if unified:
        mount = tmp_path / "unified"
        host.v2 = Hierarchy(str(mount), V2, frozenset(), "/")
        dirs[str(mount)] = cgroup(mount / "job", {"cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0\n"})
    return JobCgroup(host, dirs)


def written(job: JobCgroup, group: str, name: str) -> str:
    return Path(job.dirs[str(Path(job.host.root) / group)], name).read_text()


def test_every_limit_a_controller_enforces_has_files_in_both_versions():
    assert set(ENFORCED) <= set(BY_FIELD)
    assert list(ENFORCED) == [r.field for r in LIMITS if r.field in ENFORCED]
    assert set(V1.knobs) == set(V2.knobs) == set(ENFORCED)


def test_limits_without_a_controller_are_never_refused_for_lack_of_one(tmp_path):
    host = CgroupHost(root=str(tmp_path))
    problems = host.refusals(Limits(timeout_s=10, tmp_mb=16, net_bps=1 << 20))
    assert problems == ["no way to kill a whole job tree (needs cgroup v2 or the v1 freezer)"]


def test_a_host_without_controllers_refuses_each_enforced_limit_by_its_controller(tmp_path):
    problems = CgroupHost(root=str(tmp_path)).refusals(SAMPLE)
    controllers = [e.controller for e in ENFORCED.values()]
    assert [p.split(":")[0] for p in problems[:-1]] == [f"{c} limit" for c in controllers]
    assert all(f"the {c} controller is not available" in p for c, p in zip(controllers, problems, strict=False))


def test_v2_writes_each_limit_in_its_own_format(tmp_path):
    files = dict.fromkeys(("memory.max", "memory.swap.max", "cpu.max", "pids.max", "io.max", "cpuset.cpus"), "")
    job = v2_job(tmp_path, files)
    job.apply(SAMPLE, ["8:0"])
    assert {name: written(job, "v2", name) for name in files} == {
        "memory.max": str(64 << 20),
        "memory.swap.max": "0",
        "cpu.max": "50000 100000",
        "pids.max": "11",
        "io.max": "8:0 rbps=1048576 wbps=1048576",
        "cpuset.cpus": "0-1",
    }


def test_v1_writes_each_limit_in_its_own_format(tmp_path):
    job = v1_job(
        tmp_path,
        {
            "memory": dict.fromkeys(("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.swappiness"), ""),
            "cpu,cpuacct": dict.fromkeys(("cpu.cfs_period_us", "cpu.cfs_quota_us"), ""),
            "pids": {"pids.max": ""},
            "blkio": dict.fromkeys(("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"), ""),
            "cpuset": {"cpuset.cpus": ""},
            "freezer": {"freezer.state": ""},
        },
    )
    job.apply(SAMPLE, ["8:0"])
    assert written(job, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert written(job, "memory", "memory.memsw.limit_in_bytes") == str(64 << 20)
    assert written(job, "memory", "memory.swappiness") == "0"
    assert written(job, "cpu,cpuacct", "cpu.cfs_period_us") == "100000"
    assert written(job, "cpu,cpuacct", "cpu.cfs_quota_us") == "50000"
    assert written(job, "pids", "pids.max") == "11"
    assert written(job, "blkio", "blkio.throttle.read_bps_device") == "8:0 1048576"
    assert written(job, "blkio", "blkio.throttle.write_bps_device") == "8:0 1048576"
    assert written(job, "cpuset", "cpuset.cpus") == "0-1"


def test_swap_files_are_written_only_where_the_kernel_has_them(tmp_path):
    job = v2_job(tmp_path, {"memory.max": ""})
    job.apply(Limits(memory_mb=8), [])
    assert sorted(p.name for p in Path(job.dirs[str(tmp_path / "v2")]).iterdir()) == ["memory.max"]


def test_a_tiny_cpu_limit_is_raised_to_the_least_quota_the_kernel_takes(tmp_path):
    job = v2_job(tmp_path, {"cpu.max": ""})
    job.apply(Limits(cpu_percent=1), [])
    assert written(job, "v2", "cpu.max") == "1000 100000"


def test_an_io_limit_without_devices_writes_nothing(tmp_path):
    job = v2_job(tmp_path, {"io.max": ""})
    job.apply(Limits(io_bps=4096), [])
    assert written(job, "v2", "io.max") == ""


def test_v2_usage_is_read_from_its_stat_files(tmp_path):
    job = v2_job(
        tmp_path,
        {
            "cgroup.procs": "",
            "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
            "memory.current": "4096\n",
            "memory.peak": "8192\n",
            "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
            "io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n259:0 rbytes=10 wbytes=20 rios=1 wios=1\n",
            "pids.current": "4\n",
            "pids.peak": "9\n",
        },
    )
    usage = job.usage()
    assert (usage.cpu_seconds, usage.memory_bytes, usage.memory_peak_bytes) == (2.5, 4096, 8192)
    assert (usage.io_read_bytes, usage.io_write_bytes, usage.oom_kills) == (110, 220, 1)
    assert (usage.pids, usage.pids_peak) == (3, 8)


def test_v2_without_memory_peak_reports_the_current_use_as_the_peak(tmp_path):
    usage = v2_job(tmp_path, {"memory.current": "4096\n"}).usage()
    assert (usage.memory_bytes, usage.memory_peak_bytes) == (4096, 4096)


def test_v1_usage_is_read_from_its_stat_files(tmp_path):
    job = v1_job(
        tmp_path,
        {
            "memory": {
                "memory.usage_in_bytes": "4096\n",
                "memory.max_usage_in_bytes": "8192\n",
                "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            },
            "cpu,cpuacct": {"cpuacct.usage": "1500000000\n"},
            "blkio": {"blkio.throttle.io_service_bytes": "8:0 Read 100\n8:0 Write 200\n8:0 Total 300\nTotal 300\n"},
            "pids": {"pids.current": "3\n"},
            "freezer": {"cgroup.procs": ""},
        },
    )
    usage = job.usage()
    assert (usage.cpu_seconds, usage.memory_bytes, usage.memory_peak_bytes) == (1.5, 4096, 8192)
    assert (usage.io_read_bytes, usage.io_write_bytes, usage.oom_kills) == (100, 200, 2)
    assert (usage.pids, usage.pids_peak) == (2, 2)


def test_a_hybrid_host_limits_through_v1_and_tracks_through_the_unified_tree(tmp_path):
    job = v1_job(
        tmp_path,
        {"memory": {"memory.limit_in_bytes": "", "memory.swappiness": ""}, "cpu,cpuacct": {"cpuacct.usage": "7\n"}},
        unified=True,
    )
    Path(job.dirs[str(tmp_path / "unified")], "cpu.stat").write_text("usage_usec 250000\n")
    job.apply(Limits(memory_mb=8), [])
    assert written(job, "memory", "memory.limit_in_bytes") == str(8 << 20)
    assert job.host.mode == "hybrid" and job.host.tracker is job.host.v2
    assert job.usage().cpu_seconds == 0.25
    assert not job.populated()
    Path(job.dirs[str(tmp_path / "unified")], "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert job.populated()


def test_v1_jobs_join_by_themselves_and_v2_jobs_are_placed_by_pid(tmp_path):
    job = v1_job(tmp_path, {"memory": {"tasks": "", "cgroup.procs": ""}}, unified=True)
    job.join()
    job.place(4242)
    assert written(job, "memory", "tasks") == "0" and written(job, "memory", "cgroup.procs") == ""
    assert written(job, "unified", "cgroup.procs") == "4242"


@pytest.mark.parametrize(
    ("controllers", "expected"),
    [
        (frozenset(), None),
        (frozenset({"freezer"}), "freezer"),
    ],
)
def test_v1_kills_a_job_tree_only_with_the_freezer(tmp_path, controllers, expected):
    host = CgroupHost(root=str(tmp_path))
    for name in controllers | {"memory"}:
        host.v1[name] = Hierarchy(str(tmp_path / name), V1, frozenset({name}), "/")
    assert host.can_kill() == expected
