"""The pure parts of the disk limit: retention's per-user quota, whether a job's disk fits, the
loop device's ioctl layouts, the job folder's size and removal, the limit's row and settings."""

from __future__ import annotations

import os

import pytest

from jupyter_worker.executor import retention
from jupyter_worker.executor.folders import TRASH_PREFIX, JobFolder, empty_trash
from jupyter_worker.executor.policy import Policy
from jupyter_worker.executor.retention import Room
from jupyter_worker.limits import BY_FIELD, Limits
from jupyter_worker.sandbox import disk

MIB = 1 << 20
NOW = 1_800_000_000.0


def test_the_disk_limit_is_a_row_of_the_table_with_a_default_and_a_maximum_setting():
    row = BY_FIELD["disk_mb"]
    assert (row.flag, row.default_setting, row.max_setting, row.default) == (
        "--max-disk",
        "default_disk_limit",
        "max_disk_limit",
        1024,
    )
    assert Limits(disk_mb="2G").disk_mb == 2048
    assert Policy().default_disk_limit == 1024 and Policy().max_disk_limit is None


def test_the_kept_disk_quota_and_the_reserve_are_policy_settings_with_defaults():
    policy = Policy()
    assert (policy.max_kept_disk_per_user, policy.disk_reserve_bytes) == (4 << 30, 1 << 30)


@pytest.mark.parametrize(
    ("quota", "doomed"),
    [
        (0, []),  # no per-user quota
        (500, ["a1"]),  # alice keeps 600: her oldest goes, bob's older job stays
        (250, ["a1", "a2"]),
        (50, ["a1", "b1", "a2", "a3"]),  # each user down to their quota or nothing
    ],
)
def test_a_users_kept_disk_past_their_quota_deletes_their_own_oldest_finished_jobs(quota, doomed):
    finished = [
        ("a1", NOW - 40, "alice"),
        ("b1", NOW - 30, "bob"),
        ("a2", NOW - 20, "alice"),
        ("a3", NOW - 10, "alice"),
    ]
    sizes = {"a1": 200, "b1": 100, "a2": 200, "a3": 200}
    assert retention.expired(finished, sizes.__getitem__, NOW, days=0, max_bytes=10_000, per_user_bytes=quota) == doomed


def test_age_the_total_and_the_per_user_quota_each_pick_from_the_oldest_on():
    finished = [("old", NOW - 20 * 86400, 1), ("a", NOW - 3, 1), ("b", NOW - 2, 2), ("c", NOW - 1, 2)]
    sizes = {"old": 1, "a": 100, "b": 100, "c": 100}.__getitem__
    assert retention.expired(finished, sizes, NOW, days=14, max_bytes=10_000, per_user_bytes=150) == ["old", "b"]
    assert retention.expired(finished, sizes, NOW, days=14, max_bytes=150, per_user_bytes=0) == ["old", "a", "b"]


@pytest.mark.parametrize(
    ("wanted", "free", "running", "verdict"),
    [
        (100, 1000, [], Room.FITS),
        (100, 1000, [(850, 0)], Room.WAIT),  # a running job may still write 850
        (100, 1000, [(850, 750)], Room.FITS),  # ... unless it wrote most of it already
        (100, 1000, [(400, 0), (400, 0)], Room.FITS),
        (100, 1000, [(400, 0), (401, 0)], Room.WAIT),
        (1000, 1000, [], Room.NEVER),  # the reserve is never counted on
        (900, 1000, [], Room.FITS),
        (950, 1000, [(10, 0)], Room.NEVER),
    ],
)
def test_a_jobs_disk_fits_waits_for_room_held_by_running_jobs_or_can_never_fit(wanted, free, running, verdict):
    assert retention.room(wanted * MIB, free * MIB, 100 * MIB, [(a * MIB, b * MIB) for a, b in running]) is verdict


def test_the_message_of_a_disk_that_never_fits_names_the_limit_and_the_room():
    message = retention.no_room_message(4096, 3 << 30, 1 << 30)
    assert message.startswith("disk limit: 4096 MiB does not fit") and "2048 MiB free" in message


def test_the_loop_ioctl_structures_have_the_kernels_sizes():
    assert disk._LOOP_STATUS.size == 232  # struct loop_info64
    assert disk._LOOP_CONFIG.size == 304  # struct loop_config


def test_a_work_folders_image_sits_beside_it():
    assert disk.image_of("/state/jobs/x/work") == "/state/jobs/x/work.img"
    assert disk.image_of("/state/jobs/x/work/") == "/state/jobs/x/work.img"
    assert JobFolder.of("/state/jobs", "x").image == "/state/jobs/x/work.img"


def test_a_job_folders_size_is_the_blocks_its_files_take_a_sparse_image_by_what_was_written(tmp_path):
    folder = JobFolder.of(str(tmp_path), "job")
    folder.make(os.getuid(), os.getgid())
    with open(folder.image, "wb") as f:
        f.truncate(512 * MIB)
        f.write(b"z" * MIB)
    with open(folder.log, "wb") as f:
        f.write(b"x" * 5000)
    taken = folder.size()
    assert MIB <= taken < 2 * MIB
    assert taken == disk.allocated_bytes(folder.image) + disk.allocated_bytes(folder.log)


def test_removing_a_job_folder_renames_it_away_at_once_and_a_thread_empties_the_trash(tmp_path):
    folder = JobFolder.of(str(tmp_path), "job")
    folder.make(os.getuid(), os.getgid())
    for index in range(200):
        with open(os.path.join(folder.work, f"f{index}"), "w") as f:
            f.write("x")
    folder.remove()
    assert not os.path.exists(folder.dir)
    empty_trash(str(tmp_path))  # waits for the thread's sweep, then sweeps what is left
    assert os.listdir(tmp_path) == []


def test_a_half_removed_folder_left_by_a_stop_is_swept_and_jobs_are_not(tmp_path):
    (tmp_path / f"{TRASH_PREFIX}old" / "work").mkdir(parents=True)
    (tmp_path / "live").mkdir()
    empty_trash(str(tmp_path))
    assert os.listdir(tmp_path) == ["live"]


def test_a_disk_limits_problem_is_none_or_a_sentence():
    problem = disk.problem()
    assert problem is None or problem.startswith(("no loop devices", "mkfs.ext4", "the kernel"))
