"""--artifacts: when a job ends, however it ends, the executor copies its /work into a folder of the
requester's, as the requester, before the job is reported ended; links, FIFOs and sockets are never
copied, a user's file is never replaced, caps and globs hold."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from jupyter_worker.jobs import Job, JobFailed
from tests.executor.conftest import as_user, run_as, wait_for

SOCKET = "python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('/work/sock')\""
PLANTED = (
    "cd /work && mkdir -p results/deep plots && echo 0.93 > results/score.csv && echo n > results/deep/n.txt"
    " && printf png > plots/a.png && echo log > run.log && head -c 3000000 /dev/zero > big.bin"
    " && ln -s /etc/shadow shadow-link && ln -s /etc etc-link && mkfifo pipe && " + SOCKET
)


def folder_of(user: pwd.struct_passwd, mode: int = 0o755) -> str:
    """An empty folder of the user's own in their home."""
    folder = tempfile.mkdtemp(prefix="artifacts-", dir=user.pw_dir)
    os.chown(folder, user.pw_uid, user.pw_gid)
    os.chmod(folder, mode)
    return folder


@pytest.fixture
def alices(users):
    folder = folder_of(users["jwtest-alice"])
    yield folder
    shutil.rmtree(folder)


def ended(daemon, user: str, job: dict) -> dict:
    """Submit as user, wait with Job.wait (as they would), and return the record as a dict."""

    def submit_and_wait():
        with Client(daemon.socket) as client:
            handle = Job(client.run(job), daemon.socket)
        try:
            handle.wait()
        except JobFailed:
            pass
        return handle.record.to_dict()

    return as_user(user, submit_and_wait)


def files_in(folder: str) -> dict[str, os.stat_result]:
    found = {}
    for top, folders, names in os.walk(folder):
        for name in folders + names:
            path = os.path.join(top, name)
            found[os.path.relpath(path, folder)] = os.lstat(path)
    return found


def test_a_jobs_files_land_in_alices_folder_owned_by_her_without_links_pipes_or_sockets(daemon, users, alices):
    record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", PLANTED], "artifacts": {"destination": alices}})
    assert record["status"] == "COMPLETED"
    found = files_in(alices)  # there as soon as the end is seen: copied before the job was reported ended
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
    copied = tmp_path / "uid"
    assert copied.read_text().strip() == str(pwd.getpwnam("nobody").pw_uid)
    assert copied.stat().st_uid == 0 and copied.stat().st_gid == 0


def test_globs_pick_files_and_folders_relative_to_work(daemon, alices):
    job = {"command": ["sh", "-c", PLANTED], "artifacts": {"destination": alices, "patterns": ["**/*.csv", "plots"]}}
    record = ended(daemon, "jwtest-alice", job)
    assert set(files_in(alices)) == {"results", "results/score.csv", "plots", "plots/a.png"}
    assert record["artifacts"]["skipped"] == 0


def test_a_name_taken_keeps_the_users_file_and_the_copy_gets_the_jobs_id(daemon, users, alices):
    alice = users["jwtest-alice"]
    for name in ("notebook.ipynb", "README"):
        with open(os.path.join(alices, name), "w") as f:
            f.write("mine")
        os.chown(os.path.join(alices, name), alice.pw_uid, alice.pw_gid)
    os.symlink("/etc/passwd", os.path.join(alices, "data"))  # a link of the user's: never written through
    script = "cd /work && echo theirs > notebook.ipynb && echo theirs > README && mkdir data && echo x > data/f"
    record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    id8 = record["id"].replace("-", "")[:8]
    for name, copy in (("notebook.ipynb", f"notebook-{id8}.ipynb"), ("README", f"README-{id8}")):
        assert open(os.path.join(alices, name)).read() == "mine"
        assert open(os.path.join(alices, copy)).read() == "theirs\n"
    assert os.path.islink(os.path.join(alices, "data"))
    assert open(os.path.join(alices, f"data-{id8}", "f")).read() == "x\n"
    assert record["artifacts"]["copied"] == 3


def test_the_same_names_twice_get_numbered_copies(daemon, alices):
    script = "echo one > /work/out.txt"
    first = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    second = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    assert first["artifacts"]["copied"] == second["artifacts"]["copied"] == 1
    assert sorted(os.listdir(alices)) == sorted(["out.txt", f"out-{second['id'].replace('-', '')[:8]}.txt"])


@pytest.mark.parametrize(
    ("script", "limits", "ending"),
    [
        ("echo partial > /work/out.txt; exit 3", {}, ("FAILED", "exit")),
        ("echo partial > /work/out.txt; sleep 30", {"timeout_s": 1}, ("FAILED", "timeout")),
    ],
)
def test_files_come_back_however_the_job_ends(daemon, alices, script, limits, ending):
    job = {"command": ["sh", "-c", script], "limits": limits, "artifacts": alices}
    record = ended(daemon, "jwtest-alice", job)
    assert (record["status"], record["reason"]) == ending
    assert open(os.path.join(alices, "out.txt")).read() == "partial\n"


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
        assert os.path.exists(os.path.join(alices, "out.txt"))
        assert root.get(record.id).artifacts["copied"] == 1


@pytest.mark.executor_flags("--Policy.max_artifacts_files=2")
def test_past_the_file_cap_the_rest_stay_behind_with_a_note(daemon, alices):
    script = "cd /work && for n in 1 2 3 4 5; do echo $n > f$n; done"
    record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    assert len(os.listdir(alices)) == 2
    assert record["artifacts"]["copied"] == 2
    assert record["artifacts"]["note"].startswith("3 file(s) not copied: past Policy.max_artifacts_mb")


@pytest.mark.executor_flags("--Policy.max_artifacts_mb=1")
def test_past_the_size_cap_big_files_stay_behind_and_small_ones_come(daemon, alices):
    script = "cd /work && head -c 2000000 /dev/zero > big && echo small > small"
    record = ended(daemon, "jwtest-alice", {"command": ["sh", "-c", script], "artifacts": alices})
    assert os.listdir(alices) == ["small"]
    assert "1 file(s) not copied" in record["artifacts"]["note"]


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
        assert [os.path.getsize(os.path.join(alices, name)) for name in os.listdir(alices)] == [600000]
    finally:
        subprocess.run(["umount", alices], check=True)
