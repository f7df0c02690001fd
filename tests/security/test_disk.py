"""Disk: a job's /work is an ext4 image of its disk limit on a loop device (sandbox/disk.py), so a
job that writes without end gets ENOSPC from the kernel and the host's disk does not fill; what
finished jobs keep counts against a per-user quota; deleting is an unlink, never a walk of the
job's tree on the executor's event loop. Each attack is tried as a real unprivileged user against a
real executor."""

from __future__ import annotations

import os
import time

import pytest

from jupyter_worker.errors import WorkerError
from jupyter_worker.sandbox import disk
from tests.executor import conftest as executor_conftest
from tests.executor.conftest import as_user, ask_as, run_as, started_daemon, wait_for
from tests.sandbox.conftest import eventually, loops_backed_by

pytestmark = pytest.mark.skipif(disk.problem() is not None, reason=f"no disk limit here: {disk.problem()}")

ALICE, BOB = "jwtest-alice", "jwtest-bob"


def finished(daemon, user: str, job_id: str):
    return wait_for(lambda: (job := ask_as(daemon, user, "get", job_id)).finished and job, what=f"job {job_id} to end")


def run_to_end(daemon, user: str, job: dict):
    return finished(daemon, user, run_as(daemon, user, job).id)


def folder_of(daemon, job_id: str) -> str:
    return os.path.join(daemon.state_dir, "jobs", job_id)


def mounted_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def free_bytes(path: str) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


@pytest.fixture(scope="module")
def daemon(users):
    with started_daemon([]) as running:
        yield running


def test_a_job_writing_past_its_disk_limit_gets_enospc_and_the_hosts_disk_does_not_fill(daemon):
    before = free_bytes(daemon.state_dir)
    script = "dd if=/dev/zero of=/work/fill bs=1M count=400 2>&1; echo dd=$?"
    job = run_to_end(daemon, ALICE, {"command": ["sh", "-c", script], "limits": {"disk_mb": "64M"}})
    chunks, _, _ = ask_as(daemon, ALICE, "logs", job.id)
    output = b"".join(chunk.data for chunk in chunks).decode()
    assert "No space left on device" in output and "dd=1" in output
    image = os.path.join(folder_of(daemon, job.id), "work.img")
    assert disk.allocated_bytes(image) <= 66 << 20
    assert before - free_bytes(daemon.state_dir) < 80 << 20  # the cap, a log, some slack: never 400 MiB
    assert 48 << 20 < job.metrics["disk_bytes"] <= 64 << 20


def test_a_finished_jobs_kept_work_is_read_through_the_executor_and_nothing_stays_mounted(daemon):
    job = run_to_end(daemon, ALICE, {"command": ["sh", "-c", "echo secret > /work/out"], "limits": {"disk_mb": 16}})
    folder = folder_of(daemon, job.id)
    assert [e["name"] for e in ask_as(daemon, ALICE, "files", job.id)["entries"]] == ["out"]
    assert ask_as(daemon, ALICE, "read_file", job.id, "out") == (b"secret\n", 7)
    assert ask_as(daemon, BOB, "files", job.id) == "refused: not_found"
    assert mounted_under(folder) == []
    assert eventually(lambda: loops_backed_by(os.path.join(folder, "work.img")) == [])


def test_a_job_cannot_reach_its_own_disk_image_or_loop_device(daemon):
    script = "ls /dev | tr '\\n' ' '; echo; cat /work.img /work/../work.img 2>&1 | head -c 200; echo"
    job = run_to_end(daemon, ALICE, {"command": ["sh", "-c", script], "limits": {"disk_mb": 16}})
    chunks, _, _ = ask_as(daemon, ALICE, "logs", job.id)
    devices, reads = b"".join(chunk.data for chunk in chunks).decode().split("\n", 1)
    assert "loop" not in devices
    assert "No such file" in reads


def test_deleting_a_job_takes_its_image_away_and_leaves_no_mount_nor_loop_device(daemon):
    write = {"command": ["sh", "-c", "head -c 8M /dev/urandom > /work/x"], "limits": {"disk_mb": 32}}
    job = run_to_end(daemon, ALICE, write)
    folder = folder_of(daemon, job.id)
    image = os.path.join(folder, "work.img")
    assert disk.allocated_bytes(image) >= 8 << 20
    ask_as(daemon, ALICE, "delete", job.id)
    assert not os.path.exists(folder)
    wait_for(lambda: not any(n.startswith(".trash-") for n in os.listdir(os.path.dirname(folder))), what="the trash")
    assert mounted_under(folder) == [] and loops_backed_by(image) == []


def test_asking_for_more_disk_than_the_host_has_free_is_refused(daemon):
    with pytest.raises(WorkerError) as refused:
        run_as(daemon, ALICE, {"command": ["true"], "limits": {"disk_mb": "16T"}})
    assert refused.value.reason.value in ("unsupported", "invalid")
    assert "disk limit" in refused.value.message


def test_deleting_a_job_whose_work_holds_100k_files_answers_at_once(users):
    """Without a disk limit /work is a plain folder: its removal runs in a thread, not the loop."""
    with started_daemon(["--Policy.default_disk_limit=None"]) as daemon:
        script = "import os\nfor i in range(100000): open(f'/work/f{i}', 'w').close()"
        job = run_to_end(daemon, ALICE, {"command": ["python3", "-c", script], "limits": {"timeout_s": 300}})
        assert job.status == "COMPLETED", job.error
        started = time.monotonic()
        ask_as(daemon, ALICE, "delete", job.id)
        took = time.monotonic() - started
        assert took < 1.0, f"delete took {took:.2f}s"
        assert not os.path.exists(folder_of(daemon, job.id))


def test_one_users_kept_work_past_their_quota_goes_oldest_first_and_spares_other_users(users):
    with started_daemon([]) as daemon:
        write = {"command": ["sh", "-c", "head -c 20M /dev/urandom > /work/x"], "limits": {"disk_mb": 32}}
        alices = [run_to_end(daemon, ALICE, write).id for _ in range(3)]
        bobs = run_to_end(daemon, BOB, write).id
        daemon.stop()
        daemon.flags = [f"--Policy.max_kept_disk_per_user={50 << 20}"]
        daemon.start()  # retention runs at the start

        def kept() -> set[str]:
            with daemon.client() as client:
                return {job.id for job in client.list(limit=100)[0]}

        wait_for(lambda: alices[0] not in kept(), what="retention")
        assert {alices[1], alices[2], bobs} <= kept()
        assert not os.path.exists(folder_of(daemon, alices[0]))


def test_a_job_asking_for_a_disk_limit_where_no_loop_device_can_be_had_is_refused(users, monkeypatch):
    """An executor whose host has no loop devices (here: /dev/loop-control hidden by /dev/null in its
    own mount namespace) refuses a job that asks for a disk limit; a job that asks for none runs
    without one rather than with a limit that does not hold, and capabilities say so."""
    hidden = 'mount --bind /dev/null /dev/loop-control && exec "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", hidden, "sh"]
    monkeypatch.setattr(executor_conftest, "EXECUTOR", [*prefix, *executor_conftest.EXECUTOR])
    with started_daemon([]) as daemon:
        with pytest.raises(WorkerError) as refused:
            run_as(daemon, ALICE, {"command": ["true"], "limits": {"disk_mb": 64}})
        assert refused.value.reason.value == "unsupported"
        assert "disk limit: cannot be enforced here" in refused.value.message
        job = run_to_end(daemon, ALICE, {"command": ["true"]})
        assert job.status == "COMPLETED" and job.limits.disk_mb is None
        assert as_user(ALICE, lambda: daemon.client().capabilities()["disk_limit"]["enforced"]) is False


def test_a_job_writing_past_its_tmp_limit_in_tmp_or_dev_shm_gets_enospc(daemon):
    script = "for d in /tmp /dev/shm; do dd if=/dev/zero of=$d/fill bs=1M count=64 2>&1 | grep -c 'No space'; done"
    job = run_to_end(daemon, ALICE, {"command": ["sh", "-c", script], "limits": {"tmp_mb": "16M"}})
    chunks, _, _ = ask_as(daemon, ALICE, "logs", job.id)
    assert b"".join(chunk.data for chunk in chunks).decode().split() == ["1", "1"]


def test_a_running_jobs_work_reaches_its_owner_through_the_executor_and_no_one_else(daemon):
    script = "echo live > /work/now; sleep 60"
    job = run_as(daemon, ALICE, {"command": ["sh", "-c", script], "limits": {"disk_mb": 16}})

    def names() -> list[str] | None:
        listing = ask_as(daemon, ALICE, "files", job.id)
        return [e["name"] for e in listing["entries"]] if isinstance(listing, dict) else None

    assert wait_for(names, what="the running job's /work") == ["now"]
    assert ask_as(daemon, ALICE, "read_file", job.id, "now") == (b"live\n", 5)
    assert ask_as(daemon, BOB, "files", job.id) == "refused: not_found"
    assert mounted_under(folder_of(daemon, job.id)) == []
    ask_as(daemon, ALICE, "stop", job.id, 0)
    finished(daemon, ALICE, job.id)
