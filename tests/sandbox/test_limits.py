"""Limits bind the whole job from its first instruction, and the outcome says what happened.

Marked `cgroup`: these also run in the pure cgroup v2 lane (tests/vm).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from jupyter_worker.sandbox import LaunchSpec
from jupyter_worker.sandbox.devices import whole_disk
from jupyter_worker.spec import JobStatus, Limits, Mount, Reason

pytestmark = pytest.mark.cgroup

MEMORY_BOMB = "b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n"
FORK_BOMB = r"""
import os, time
children = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    children += 1
print(children, flush=True)
"""


def host_processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_a_memory_bomb_is_killed_and_reported_as_oom(run):
    result = run(["python3", "-c", MEMORY_BOMB], limits=Limits(memory_mb=64))
    assert result.outcome.reason is Reason.OOM
    assert result.outcome.status is JobStatus.FAILED
    assert result.outcome.usage.oom_kills >= 1
    assert 32 << 20 < result.outcome.usage.memory_peak_bytes <= 64 << 20


def test_a_fork_bomb_stops_at_the_process_limit_and_the_host_stays_responsive(run):
    started = time.monotonic()
    result = run(["python3", "-c", FORK_BOMB], limits=Limits(pids=20, timeout_s=30))
    assert result.outcome.exit_code == 0, result.stderr
    assert int(result.stdout) == 19
    assert result.outcome.usage.pids_peak <= 20
    probe = time.monotonic()
    subprocess.run(["true"], check=True)
    assert time.monotonic() - probe < 1
    assert time.monotonic() - started < 30


def test_cpu_limit_of_half_a_core_measures_about_half(run):
    burn = "import time\nend = time.monotonic() + 2\nwhile time.monotonic() < end: pass\n"
    result = run(["python3", "-c", burn], limits=Limits(cpu_percent=50))
    usage = result.outcome.usage
    share = usage.cpu_seconds / usage.wall_seconds
    assert 0.40 <= share <= 0.60, usage


def wait_for_processes(marker: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(host_processes_with(marker)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(host_processes_with(marker)) == count


def escaping_tree(marker: str, ignore_term: bool) -> list[str]:
    """A job whose processes try to leave its process group and session: setsid, double fork."""
    trap = "trap '' TERM; " if ignore_term else ""
    sleeper = f"{trap}exec -a {marker} sleep 300"
    script = f'{trap}setsid bash -c "{sleeper}" & (bash -c "({sleeper}) &" &); {sleeper}'
    return ["bash", "-c", script]


def test_a_timeout_kills_the_sleeper_and_its_escaped_grandchildren(sandbox):
    marker = f"jw-marker-{uuid.uuid4().hex}"
    # Long enough for the tree to be seen whole on a loaded or emulated machine (the VM lane).
    with sandbox.launch(LaunchSpec(escaping_tree(marker, False), limits=Limits(timeout_s=15))) as job:
        wait_for_processes(marker, 3)
        outcome = job.wait(timeout=35)
    assert outcome is not None and outcome.reason is Reason.TIMEOUT
    assert outcome.status is JobStatus.FAILED
    assert host_processes_with(marker) == []


def test_stop_terms_then_kills_the_whole_tree(sandbox):
    marker = f"jw-marker-{uuid.uuid4().hex}"
    with sandbox.launch(LaunchSpec(escaping_tree(marker, True), stop_grace_s=0.5)) as job:
        wait_for_processes(marker, 3)
        job.stop()
        outcome = job.wait(timeout=10)
    assert outcome is not None and outcome.reason is Reason.STOPPED
    assert outcome.status is JobStatus.STOPPED and outcome.signal == 9
    assert host_processes_with(marker) == []


def test_stop_with_a_willing_job_reports_sigterm(sandbox):
    with sandbox.launch(LaunchSpec(["sleep", "300"])) as job:
        assert next(job.events(timeout=5))["event"] == "started"
        job.stop(grace_s=5)
        outcome = job.wait(timeout=10)
    assert outcome.reason is Reason.STOPPED and outcome.signal == 15


def test_tmp_size_cap_holds(sh):
    result = sh("dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1; du -m /tmp/fill", limits=Limits(tmp_mb=16))
    out = result.stdout.decode()
    assert "No space left" in out
    assert int(out.split()[-2]) <= 16


def test_tmp_dev_shm_and_work_have_the_engines_size_when_none_is_set(sh):
    result = sh("df -m --output=size /tmp /dev/shm /work")
    assert result.stdout.decode().split()[1:] == ["64", "64", "64"]


def block_dir(tmp_path) -> str:
    folder = os.environ.get("JUPYTER_WORKER_TEST_BLOCKDIR") or str(tmp_path)
    if whole_disk(folder) is None:
        pytest.skip(f"{folder} is not on a block device (set JUPYTER_WORKER_TEST_BLOCKDIR)")
    return folder


def test_io_limit_holds_on_a_direct_io_read(run, tmp_path):
    folder = os.path.join(block_dir(tmp_path), f"jw-io-{uuid.uuid4().hex}")
    os.mkdir(folder, 0o755)
    data = os.path.join(folder, "data")
    with open(data, "wb") as f:
        f.write(os.urandom(12 << 20))
        os.fsync(f.fileno())
    limit = 4 << 20
    reader = (
        "import os, time, mmap\n"
        "fd = os.open('/data/data', os.O_RDONLY | os.O_DIRECT)\n"
        "buf = mmap.mmap(-1, 1 << 20)\n"
        "start = time.monotonic(); total = 0\n"
        "while (n := os.readv(fd, [buf])): total += n\n"
        "print(total / (time.monotonic() - start))\n"
    )
    try:
        result = run(["python3", "-c", reader], limits=Limits(io_bps=limit), mounts=[Mount(folder, "/data")])
    finally:
        os.unlink(data)
        os.rmdir(folder)
    assert result.outcome.exit_code == 0, result.stderr
    rate = float(result.stdout)
    assert 0.8 * limit <= rate <= 1.2 * limit, f"{rate / limit:.2f}x the limit"
    assert result.outcome.usage.io_read_bytes >= 12 << 20


def test_a_cpuset_pins_the_job(sh):
    result = sh("grep Cpus_allowed_list /proc/self/status", limits=Limits(cpuset="0"))
    assert result.outcome.exit_code == 0, result.outcome.error
    assert result.stdout.decode().split() == ["Cpus_allowed_list:", "0"]


def test_a_job_runs_at_normal_priority_not_at_its_standbys_idle_one(run):
    # The first job may take a standby still being prepared; the later ones take standbys made ahead.
    script = "import os; print(os.sched_getscheduler(0) == os.SCHED_OTHER, os.getpriority(os.PRIO_PROCESS, 0))"
    for _ in range(4):
        result = run(["python3", "-c", script])
        assert result.stdout.decode().split() == ["True", "0"], result.stderr


def test_usage_is_reported(run):
    result = run(["python3", "-c", "x = bytearray(40 << 20); print(len(x))"], limits=Limits(memory_mb=256))
    usage = result.outcome.usage
    assert usage.memory_peak_bytes >= 40 << 20
    assert usage.cpu_seconds > 0
    assert usage.wall_seconds > 0
    assert usage.pids_peak >= 1
