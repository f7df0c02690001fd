"""A job's /work as its owner reads it after the job: listed and downloaded, never followed out."""

from __future__ import annotations

import pytest

from tests.executor.conftest import ask_as, job_status, run_as, wait_for

PLANTED = (
    "mkdir -p results/deep && printf 'accuracy 0.93\\n' > results/score.txt && head -c 3000000 /dev/zero > big.bin"
    " && ln -s /etc/shadow shadow-link && ln -s .. up && mkfifo pipe && echo nested > results/deep/n.txt"
)


@pytest.fixture
def finished_job(daemon, users):
    job = run_as(daemon, "jwtest-alice", {"command": ["sh", "-c", f"cd /work && {PLANTED}"]})
    with daemon.client() as root:
        wait_for(lambda: job_status(root, job.id) == "COMPLETED", what="the job to complete")
    return job


def test_the_owner_lists_and_reads_the_files_a_job_left(daemon, finished_job):
    listing = ask_as(daemon, "jwtest-alice", "files", finished_job.id)
    kinds = {e["name"]: e["type"] for e in listing["entries"]}
    assert kinds == {
        "results": "directory",
        "big.bin": "file",
        "shadow-link": "symlink",
        "up": "symlink",
        "pipe": "other",
    }
    assert listing["entries"][0]["name"] == "results"
    assert next(e["size"] for e in listing["entries"] if e["name"] == "big.bin") == 3_000_000
    inner = ask_as(daemon, "jwtest-alice", "files", finished_job.id, "results/")
    assert (inner["path"], [e["name"] for e in inner["entries"]]) == ("results", ["deep", "score.txt"])
    assert ask_as(daemon, "jwtest-alice", "read_file", finished_job.id, "results/score.txt") == (
        b"accuracy 0.93\n",
        14,
    )
    data, size = ask_as(daemon, "jwtest-alice", "read_file", finished_job.id, "big.bin", 2_999_990)
    assert (data, size) == (b"\0" * 10, 3_000_000)


@pytest.mark.parametrize(
    "path",
    [
        "shadow-link",
        "up/state",
        "up",
        "pipe",
        "results",
        "../log",
        "/etc/passwd/../../log",
        "missing",
        "results/deep/../../up",
    ],
)
def test_links_pipes_folders_and_escapes_are_never_read(daemon, finished_job, path):
    assert str(ask_as(daemon, "jwtest-alice", "read_file", finished_job.id, path)).startswith("refused: ")


def test_links_are_not_followed_when_listing(daemon, finished_job):
    for path in ("up", "shadow-link"):  # said to be links, with nothing of what they lead to
        listing = ask_as(daemon, "jwtest-alice", "files", finished_job.id, path)
        assert (listing["kind"], listing["entries"]) == ("symlink", [])
    assert ask_as(daemon, "jwtest-alice", "files", finished_job.id, "pipe")["kind"] == "fifo"
    for path in ("../", "results/../up"):
        assert str(ask_as(daemon, "jwtest-alice", "files", finished_job.id, path)).startswith("refused: ")


def test_other_users_cannot_see_a_jobs_files_but_viewers_can(daemon, finished_job):
    assert ask_as(daemon, "jwtest-bob", "files", finished_job.id) == "refused: not_found"
    assert ask_as(daemon, "jwtest-bob", "read_file", finished_job.id, "results/score.txt") == "refused: not_found"
    assert ask_as(daemon, "jwtest-carol", "read_file", finished_job.id, "results/score.txt")[1] == 14
