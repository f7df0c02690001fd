"""--artifacts: when a job ends, however it ends, the executor copies its /work into a new folder
(DIR/<id8>) of the requester's, as the requester, before the job is reported ended; links, FIFOs and
sockets are never copied, nothing of the user's is touched, caps and globs hold."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from jupyter_worker.jobs import Job
from tests.executor.conftest import as_user, ended, folder_of, run_as, wait_for

SOCKET = "python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('/work/sock')\""
PLANTED = (
    "cd /work && mkdir -p results/deep plots && echo 0.93 > results/score.csv && echo n > results/deep/n.txt"
    " && printf png > plots/a.png && echo log > run.log && chmod 777 run.log && head -c 3000000 /dev/zero > big.bin"
    " && ln -s /etc/shadow shadow-link && ln -s /etc etc-link && mkfifo pipe && " + SOCKET
)


@pytest.fixture
def alices(users):
    folder = folder_of(users["jwtest-alice"])
    yield folder
    shutil.rmtree(folder)


def id8(record: dict) -> str:
    return record["id"].replace("-", "")[:8]


def files_in(folder: str) -> dict[str, os.stat_result]:
    found = {}
    for top, folders, names in os.walk(folder):
        for name in folders + names:
            path = os.path.join(top, name)
            found[os.path.relpath(path, folder)] = os.lstat(path)
    return found


def test_a_jobs_files_land_in_a_new_folder_of_alices_owned_by_her_without_links_pipes_or_sockets(daemon, users, alices):
    record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", PLANTED], "artifacts": {"destination": alices}})
    assert record["status"] == "COMPLETED"
    assert os.listdir(alices) == [id8(record)]
    assert record["artifacts"]["folder"] == os.path.join(alices, id8(record))
    found = files_in(record["artifacts"]["folder"])  # there as soon as the end is seen: copied before it
    assert set(found) == {
        "results",
        "results/deep",
        "results/score.csv",
        "results/deep/n.txt",
        "plots",
        "plots/a.png",
        "run.log",
        "big.bin",
    }
    alice = users["jwtest-alice"]
    assert all(info.st_uid == alice.pw_uid and info.st_gid == alice.pw_gid for info in found.values())
    assert all(stat.S_ISREG(i.st_mode) or stat.S_ISDIR(i.st_mode) for i in found.values())
    assert {stat.S_IMODE(i.st_mode) for i in found.values()} == {0o644, 0o755}
    assert stat.S_IMODE(found["run.log"].st_mode) == 0o644  # exec bits and others' write: dropped
    assert all(stat.S_IMODE(i.st_mode) == 0o755 for i in found.values() if stat.S_ISDIR(i.st_mode))
    assert found["big.bin"].st_size == 3_000_000
    outcome = record["artifacts"]
    assert (outcome["destination"], outcome["copied"], outcome["bytes"]) == (alices, 5, 3_000_000 + 5 + 2 + 3 + 4)
    assert outcome["skipped"] == 4 and outcome["error"] is None and outcome["note"] is None
    assert {path: why for path, why in outcome["skipped_examples"]} == {
        "etc-link": "a symlink, never copied",
        "pipe": "a FIFO, never copied",
        "shadow-link": "a symlink, never copied",
        "sock": "a socket, never copied",
    }


def test_a_root_requesters_job_runs_as_nobody_and_its_artifacts_are_roots(daemon, tmp_path):
    os.chmod(tmp_path, 0o700)
    with daemon.client() as client:
        handle = Job(
            client.run({"command": ["sh", "-c", "id -u > /work/uid"], "artifacts": str(tmp_path)}), daemon.socket
        )
    handle.wait()
    copied = tmp_path / handle.id.replace("-", "")[:8] / "uid"
    assert copied.read_text().strip() == str(pwd.getpwnam("nobody").pw_uid)
    assert copied.stat().st_uid == 0 and copied.stat().st_gid == 0


def test_globs_pick_files_and_folders_relative_to_work(daemon, alices):
    job = {"command": ["sh", "-c", PLANTED], "artifacts": {"destination": alices, "patterns": ["**/*.csv", "plots"]}}
    record = ended(daemon, "jwtest-alice", job)
    assert set(files_in(record["artifacts"]["folder"])) == {"results", "results/score.csv", "plots", "plots/a.png"}
    assert record["artifacts"]["skipped"] == 0


def test_each_job_gets_a_new_folder_and_one_that_exists_is_never_written_into(daemon, users, alices):
    alice = users["jwtest-alice"]
    script = "echo one > /work/out.txt; sleep 2"
    first = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    record = run_as(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    taken = os.path.join(alices, record.id.replace("-", "")[:8])  # the user's own folder of that name

    def make_it():
        os.mkdir(taken)
        with open(os.path.join(taken, "out.txt"), "w") as f:
            f.write("mine")

    as_user("jwtest-alice", make_it)
    with daemon.client() as root:
        second = wait_for(lambda: (r := root.get(record.id)).finished and r, what="the job to end")
    assert second.artifacts["folder"] == taken + "-2"
    assert open(os.path.join(taken, "out.txt")).read() == "mine"
    assert open(os.path.join(taken + "-2", "out.txt")).read() == "one\n"
    assert sorted(os.listdir(alices)) == sorted([id8(first), os.path.basename(taken), os.path.basename(taken) + "-2"])
    assert os.stat(taken + "-2").st_uid == alice.pw_uid


def test_the_values_runners_folder_is_left_out_unless_a_glob_names_it(daemon, alices):
    script = "mkdir -p /work/.jupyter-worker/values && echo v > /work/.jupyter-worker/values/x.json && echo r > /work/r"
    plain = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    assert set(files_in(plain["artifacts"]["folder"])) == {"r"}
    named = {"destination": alices, "patterns": [".jupyter-worker/values"]}
    asked = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": named})
    assert set(files_in(asked["artifacts"]["folder"])) == {
        ".jupyter-worker",
        ".jupyter-worker/values",
        ".jupyter-worker/values/x.json",
    }


@pytest.mark.parametrize(
    ("script", "limits", "ending"),
    [
        ("echo partial > /work/out.txt; exit 3", {}, ("FAILED", "exit")),
        ("echo partial > /work/out.txt; sleep 30", {"timeout_s": 4}, ("FAILED", "timeout")),
    ],
)
def test_files_come_back_however_the_job_ends(daemon, alices, script, limits, ending):
    job = {"command": ["sh", "-c", script], "limits": limits, "artifacts": alices}
    record = ended(daemon, "jwtest-alice", job)
    assert (record["status"], record["reason"]) == ending
    assert open(os.path.join(record["artifacts"]["folder"], "out.txt")).read() == "partial\n"


def has_written(client: Client, job_id: str) -> bool:
    try:
        return bool(client.files(job_id)["entries"])
    except WorkerError:  # its /work is not ready yet
        return False


def test_a_stopped_job_copies_its_files_before_it_is_reported_stopped(daemon, alices):
    job = {"command": ["sh", "-c", "echo partial > /work/out.txt; sleep 300"], "artifacts": alices}
    record = run_as(daemon, "jwtest-alice", job)
    with daemon.client() as root:
        wait_for(lambda: has_written(root, record.id), what="the job to write")
        root.stop(record.id, grace_s=0)
        wait_for(lambda: root.get(record.id).finished, what="the job to end")
        copied = root.get(record.id).artifacts
        assert os.path.exists(os.path.join(copied["folder"], "out.txt"))
        assert copied["copied"] == 1


@pytest.mark.executor_flags("--Policy.max_artifacts_files=2")
def test_past_the_file_cap_the_rest_stay_behind_with_a_note(daemon, alices):
    script = "cd /work && for n in 1 2 3 4 5; do echo $n > f$n; done"
    record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    assert len(os.listdir(record["artifacts"]["folder"])) == 2
    assert record["artifacts"]["copied"] == 2
    assert record["artifacts"]["note"].startswith("3 file(s) not copied: past Policy.max_artifacts_mb")


@pytest.mark.executor_flags("--Policy.max_artifacts_mb=1")
def test_past_the_size_cap_big_files_stay_behind_and_small_ones_come(daemon, alices):
    script = "cd /work && head -c 2000000 /dev/zero > big && echo small > small"
    record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    assert os.listdir(record["artifacts"]["folder"]) == ["small"]
    assert "1 file(s) not copied" in record["artifacts"]["note"]
    assert "(1.0 MiB)" in record["artifacts"]["note"]


@pytest.mark.executor_flags("--Policy.max_artifacts_files=2")
def test_a_folder_bomb_stops_the_walk_after_ten_times_the_file_cap_with_a_note(daemon, alices):
    script = "mkdir /work/bomb && cd /work/bomb && seq 1 500 | xargs mkdir"
    record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    assert (
        record["artifacts"]["note"] == "stopped after looking at 20 entries of /work (10 x Policy.max_artifacts_files)"
    )
    assert len(files_in(record["artifacts"]["folder"])) <= 20


def test_a_full_destination_leaves_no_half_file_and_says_why(daemon, users, alices):
    alice = users["jwtest-alice"]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", alices], check=True)
    try:
        os.chown(alices, alice.pw_uid, alice.pw_gid)
        script = "cd /work && for n in 1 2 3; do head -c 600000 /dev/zero > f$n; done"
        record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
        outcome = record["artifacts"]
        assert outcome["copied"] == 1 and outcome["skipped"] == 2
        assert {why for _, why in outcome["skipped_examples"]} == {"cannot copy: No space left on device"}
        folder = outcome["folder"]
        assert [os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)] == [600000]
    finally:
        subprocess.run(["umount", alices], check=True)


@pytest.mark.executor_flags("--Policy.max_artifacts_files=100000", "--Policy.artifacts_timeout_s=300")
def test_a_copy_cut_short_by_an_executor_restart_is_not_run_again_and_the_job_ends(daemon, alices):
    script = "mkdir /work/m && cd /work/m && seq 1 40000 | xargs touch"
    record = run_as(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    with daemon.client() as root:
        wait_for(lambda: "started" in (root.get(record.id).artifacts or {}), what="the copy to start", timeout=60)
    daemon.stop()
    daemon.start()
    with daemon.client() as root:
        after = wait_for(lambda: (r := root.get(record.id)).finished and r, what="the job to end")
    assert after.status.value == "COMPLETED"
    assert after.artifacts["error"] == "the executor restarted during the copy; not copied again"
    assert set(os.listdir(alices)) <= {record.id.replace("-", "")[:8]}  # no second folder
