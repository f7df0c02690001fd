"""The disk limit in the engine: /work on an ext4 image of disk_mb on a loop device (sandbox/disk.py)."""

from __future__ import annotations

import json
import os

import pytest

from jupyter_worker.limits import Limits
from jupyter_worker.sandbox import LaunchSpec, Sandbox, disk, libc
from tests.sandbox.conftest import eventually, loops_backed_by, mounts_at

pytestmark = pytest.mark.skipif(disk.problem() is not None, reason=f"no disk limit here: {disk.problem()}")

NOBODY = 65534


@pytest.fixture
def work(tmp_path) -> str:
    folder = tmp_path / "work"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    return str(folder)


def test_a_write_past_the_disk_limit_gets_enospc_and_the_usage_counts_what_was_written(sh, work):
    result = sh(
        "dd if=/dev/zero of=/work/fill bs=1M count=100 2>&1; echo dd=$?",
        work_dir=work,
        limits=Limits(disk_mb=32),
    )
    text = result.stdout.decode()
    assert "No space left on device" in text and "dd=1" in text
    assert 24 << 20 < result.outcome.usage.disk_bytes <= 32 << 20
    assert os.path.getsize(disk.image_of(work)) == 32 << 20


def test_the_job_owns_its_disk_limited_work_and_nothing_else_is_in_it(sh, work):
    script = "stat -c '%u %a' /work; ls -A /work | wc -l; grep ' /work ' /proc/self/mounts"
    owner, entries, mount = sh(script, work_dir=work, limits=Limits(disk_mb=16)).stdout.decode().splitlines()
    assert owner == f"{NOBODY} 700"
    assert entries == "0"  # no lost+found
    _, where, fstype, options, *_ = mount.split()
    assert (where, fstype) == ("/work", "ext4")
    assert {"rw", "nosuid", "nodev"} <= set(options.split(","))


def test_after_the_job_nothing_is_mounted_and_the_loop_device_is_gone_but_the_image_is_kept(sh, work):
    assert sh("echo kept > /work/out", work_dir=work, limits=Limits(disk_mb=16)).outcome.exit_code == 0
    image = disk.image_of(work)
    assert mounts_at(work) == []
    assert eventually(lambda: loops_backed_by(image) == [])
    assert os.path.exists(image) and os.listdir(work) == []

    def read(root: int) -> bytes:
        fd = os.open("out", os.O_RDONLY, dir_fd=root)
        try:
            return os.read(fd, 100)
        finally:
            os.close(fd)

    assert disk.view(work, read) == b"kept\n"
    assert mounts_at(work) == []
    assert eventually(lambda: loops_backed_by(image) == [])


def test_a_kept_work_is_viewed_read_only_without_exec_or_devices(sh, work):
    sh("echo x > /work/f", work_dir=work, limits=Limits(disk_mb=16))

    def options(root: int) -> str:
        path = os.readlink(f"/proc/self/fd/{root}")
        with open("/proc/thread-self/mountinfo") as f:
            return next(line.split()[5] for line in f if line.split()[4] == path)

    assert set(disk.view(work, options).split(",")) >= {"ro", "nosuid", "nodev", "noexec"}


def test_a_disk_limit_without_a_work_folder_sizes_the_tmpfs_work(sh):
    result = sh("dd if=/dev/zero of=/work/fill bs=1M count=64 2>&1; echo dd=$?", limits=Limits(disk_mb=16))
    assert "dd=1" in result.stdout.decode()


def test_a_job_whose_disk_cannot_be_made_fails_to_start_and_leaves_nothing(sh, work):
    image = disk.image_of(work)
    with open(image, "w") as f:  # an image already there is never reused nor overwritten
        f.write("not ours")
    result = sh("echo ran", work_dir=work, limits=Limits(disk_mb=16))
    assert result.outcome.reason.value == "start_error"
    assert "disk image" in (result.outcome.error or "") or "disk limit" in (result.outcome.error or "")
    assert result.stdout == b""
    with open(image) as f:
        assert f.read() == "not ours"
    assert mounts_at(work) == []


def test_a_job_asking_for_a_disk_limit_where_no_loop_device_can_be_had_fails_to_start(tmp_path, work):
    """An engine whose host has no loop devices (here /dev/loop-control is /dev/null, in a mount
    namespace of the test's own) never runs the job with an unlimited /work: a start error."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            libc.unshare(libc.CLONE_NEWNS)
            libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
            libc.mount("/dev/null", disk.LOOP_CONTROL, None, libc.MS_BIND)
            with Sandbox(runtime_dir=str(runtime)) as engine:
                result = engine.run(LaunchSpec(["sh", "-c", "echo ran"], work_dir=work, limits=Limits(disk_mb=16)))
            said = {"reason": result.outcome.reason.value, "error": result.outcome.error, "out": result.stdout.decode()}
        except BaseException as exc:
            said = {"crash": repr(exc)}
        os.write(write_end, json.dumps(said).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as incoming:
        said = json.loads(incoming.read())
    os.waitpid(pid, 0)
    assert said.get("reason") == "start_error", said
    assert "loop" in said["error"] and said["out"] == ""
    assert not os.path.exists(disk.image_of(work)) and mounts_at(work) == []


def test_a_running_jobs_work_is_reached_through_its_own_processes_and_no_other(sandbox, work):
    spec = LaunchSpec(["sh", "-c", "echo live > /work/now; sleep 30"], work_dir=work, limits=Limits(disk_mb=16))
    with sandbox.launch(spec) as job:
        for _ in job.events(timeout=10):
            if job.started:
                break
        image = disk.image_of(work)
        assert mounts_at(work) == [] and os.listdir(work) == []  # nothing of it on the host's mount table

        def listed() -> list[str]:
            root = disk.open_live(job.started["pid"], image)
            if root is None:
                return []
            try:
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=root)
                try:
                    return os.listdir(fd)
                finally:
                    os.close(fd)
            finally:
                os.close(root)

        assert eventually(lambda: listed() == ["now"])
        assert disk.open_live(os.getpid(), image) is None  # another process's /work is not this image's
    assert eventually(lambda: loops_backed_by(image) == [])
