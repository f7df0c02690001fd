"""Artifacts and files back: the job's /work is hostile and the destination is the requester's. Each
attack is tried as a real unprivileged user (or by a job of theirs) against a real executor, and
fails: nothing lands outside the destination, nothing is followed, nothing of the user's replaced,
nobody writes where they could not write themselves, no job picks where its files land among the
user's (each job's files go into a new folder of their own)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.executor.workfiles import MAX_SCANNED
from jupyter_worker.jobs import Job, JobFailed
from jupyter_worker.sandbox.mounts import idmap_problem
from tests.executor.conftest import as_user, ended, folder_of, run_as, started_daemon, wait_for

ALICE, BOB = "jwtest-alice", "jwtest-bob"
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def daemon(users):
    with started_daemon([]) as running:
        yield running


@pytest.fixture
def alices(users):
    folder = folder_of(users[ALICE])
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def bobs(users):
    folder = folder_of(users[BOB])
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def everything_in(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(top, n), folder) for top, ds, fs in os.walk(folder) for n in ds + fs)


def test_artifacts_to_a_folder_alice_cannot_write_are_refused_at_submission(daemon, users):
    roots = tempfile.mkdtemp(prefix="jw-roots-")
    os.chmod(roots, 0o755)
    try:
        for destination in (roots, "/etc", os.path.join(roots, "missing"), "/etc/passwd"):
            with pytest.raises(WorkerError) as refused:
                run_as(daemon, ALICE, {"command": ["true"], "artifacts": destination})
            assert refused.value.reason is ErrorReason.INVALID
            assert "artifacts:" in refused.value.message
        assert os.listdir(roots) == []
    finally:
        shutil.rmtree(roots)


def test_bob_cannot_send_his_jobs_artifacts_into_alices_folder(daemon, alices):
    with pytest.raises(WorkerError) as refused:
        run_as(daemon, BOB, {"command": ["sh", "-c", "echo evil > /work/notebook.ipynb"], "artifacts": alices})
    assert refused.value.reason is ErrorReason.INVALID
    assert os.listdir(alices) == []


def test_bob_swapping_his_folder_for_a_link_to_alices_after_submitting_writes_nothing_there(daemon, alices, bobs):
    job = {"command": ["sh", "-c", "echo evil > /work/evil; sleep 2"], "artifacts": bobs}
    record = run_as(daemon, BOB, job)

    def swap():
        os.rename(bobs, bobs + "-moved")
        os.symlink(alices, bobs)

    as_user(BOB, swap)
    with daemon.client() as root:
        ended_record = wait_for(lambda: (r := root.get(record.id)).finished and r, what="the job to end")
    assert os.listdir(alices) == []
    assert ended_record.artifacts["error"].endswith("(nothing copied)")
    shutil.rmtree(bobs + "-moved")
    os.unlink(bobs)


def test_a_job_planting_links_to_secrets_and_outside_folders_gets_nothing_copied_through_them(daemon, users, alices):
    home = users[ALICE].pw_dir
    script = (
        f"cd /work && ln -s /etc/shadow shadow && ln -s /etc etc && ln -s {home} home && ln -s .. up"
        " && mkdir real && ln -s /etc/passwd real/passwd && ln -s ../../../.. real/deep && echo ok > real/ok"
    )
    record = ended(daemon, ALICE, {"command": ["sh", "-c", script], "artifacts": alices})
    assert everything_in(record["artifacts"]["folder"]) == ["real", "real/ok"]
    assert record["artifacts"]["skipped"] == 6
    assert all(why == "a symlink, never copied" for _, why in record["artifacts"]["skipped_examples"])


def test_a_job_leaving_fifos_and_sockets_in_work_cannot_stall_or_feed_the_copy(daemon, alices):
    sock = "python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('/work/sock')\""
    script = f"cd /work && mkfifo fifo && {sock} && echo ok > ok"
    started = time.monotonic()
    record = ended(daemon, ALICE, {"command": ["sh", "-c", script], "artifacts": alices})
    assert time.monotonic() - started < 30
    assert everything_in(record["artifacts"]["folder"]) == ["ok"]
    assert sorted(why for _, why in record["artifacts"]["skipped_examples"]) == [
        "a FIFO, never copied",
        "a socket, never copied",
    ]


def test_a_job_cannot_replace_the_users_notebook_nor_write_through_their_links(daemon, users, alices):
    alice = users[ALICE]
    notebook = os.path.join(alices, "analysis.ipynb")
    with open(notebook, "w") as f:
        f.write("the user's notebook")
    os.chown(notebook, alice.pw_uid, alice.pw_gid)
    os.symlink("/etc/cron.d", os.path.join(alices, "cron"))
    script = "cd /work && echo evil > analysis.ipynb && mkdir cron && echo '* * * * * root evil' > cron/evil"
    record = ended(daemon, ALICE, {"command": ["sh", "-c", script], "artifacts": alices})
    assert open(notebook).read() == "the user's notebook"
    assert not os.path.exists("/etc/cron.d/evil")
    made = os.path.basename(record["artifacts"]["folder"])
    assert sorted(os.listdir(alices)) == sorted(["analysis.ipynb", "cron", made])
    assert everything_in(record["artifacts"]["folder"]) == ["analysis.ipynb", "cron", "cron/evil"]


PLANT = (
    "cd /work && mkdir -p .git/hooks && printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit"
    " && chmod 755 .git/hooks/pre-commit && echo 'import os' > numpy.py && echo 'import os' > conftest.py"
    " && echo 'export EVIL=1' > .envrc && echo 'import os' > sitecustomize.py"
)


def test_a_job_planting_a_git_hook_numpy_py_conftest_or_envrc_beside_the_notebook_gets_them_only_in_a_new_folder(
    daemon, users, alices
):
    alice = users[ALICE]
    os.makedirs(os.path.join(alices, ".git", "hooks"))
    for top in (os.path.join(alices, ".git"), os.path.join(alices, ".git", "hooks")):
        os.chown(top, alice.pw_uid, alice.pw_gid)
    record = ended(daemon, ALICE, {"command": ["sh", "-c", PLANT], "artifacts": alices})
    folder = record["artifacts"]["folder"]
    assert os.path.dirname(folder) == alices and os.path.basename(folder) == record["id"].replace("-", "")[:8]
    assert everything_in(os.path.join(alices, ".git")) == ["hooks"]  # the user's repository: untouched
    assert sorted(os.listdir(alices)) == sorted([".git", os.path.basename(folder)])  # nothing beside the notebook
    hook = os.path.join(folder, ".git", "hooks", "pre-commit")
    assert stat.S_IMODE(os.stat(hook).st_mode) == 0o644  # not runnable even where it landed
    assert record["artifacts"]["copied"] == 5


def test_a_link_planted_at_the_jobs_folder_name_in_dir_is_never_followed_by_the_copy(daemon, users, alices):
    # what a job could do with the notebook folder writable in it, if it learnt its id: DIR/<id8>
    # made a link to the user's home before the copy runs
    home = users[ALICE].pw_dir
    record = run_as(daemon, ALICE, {"command": ["sh", "-c", "echo evil > /work/.bashrc; sleep 2"], "artifacts": alices})
    planted = os.path.join(alices, record.id.replace("-", "")[:8])
    as_user(ALICE, lambda: os.symlink(home, planted))
    before = sorted(os.listdir(home))
    with daemon.client() as root:
        done = wait_for(lambda: (r := root.get(record.id)).finished and r, what="the job to end")
    assert sorted(os.listdir(home)) == before
    assert os.readlink(planted) == home
    assert done.artifacts["folder"] == planted + "-2"
    assert os.listdir(planted + "-2") == [".bashrc"]


def test_hostile_names_from_a_job_are_skipped_and_shown_inert(daemon, alices):
    script = (
        "cd /work && printf x > \"$(printf 'a\\033]0;pwned\\007')\" && printf x > \"$(printf 'new\\nline')\""
        " && printf x > \"$(printf 'bad\\377utf8')\" && printf x > \"$(printf 'rtl\\342\\200\\256gpj.exe')\""
        " && printf x > fine.txt"
    )
    record = ended(daemon, ALICE, {"command": ["sh", "-c", script], "artifacts": alices})
    assert os.listdir(record["artifacts"]["folder"]) == ["fine.txt"]
    assert record["artifacts"]["skipped"] == 4
    shown = subprocess.run(
        [sys.executable, "-m", "jupyter_worker.cli", "--socket", daemon.socket, "status", record["id"]],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": REPOSITORY},
    ).stdout
    assert "Artifacts: 1 file" in shown and "4 skipped" in shown
    assert "\x1b" not in shown and "\u202e" not in shown


@pytest.mark.parametrize("name", ["a\x1b]0;pwned\x07", "new\nline", "rtl\u202egpj.exe"])
def test_cp_of_a_folder_never_writes_a_hostile_name(daemon, alices, name):
    script = 'cd /work && mkdir out && printf x > out/fine && printf x > "out/$NAME"'
    record = ended(daemon, ALICE, {"command": ["sh", "-c", script], "env": {"NAME": name}})

    def download():
        with Client(daemon.socket) as client:
            return Job(client.get(record["id"]), daemon.socket).download("out", alices)

    as_user(ALICE, download)
    assert everything_in(alices) == ["out", "out/fine"]


def test_files_a_job_ran_as_nobody_left_come_back_to_root_owned_by_root_never_by_nobody(daemon, tmp_path):
    os.chmod(tmp_path, 0o700)
    with daemon.client() as client:
        job = {"command": ["sh", "-c", "mkdir /work/d && echo x > /work/d/f && chmod 777 /work/d"]}
        os.mkdir(tmp_path / "a")
        handle = Job(client.run({**job, "artifacts": str(tmp_path / "a")}), daemon.socket)
    handle.wait()
    handle.download("d", str(tmp_path / "b"))
    made = tmp_path / "a" / handle.id.replace("-", "")[:8]
    for path in (made / "d", made / "d" / "f", tmp_path / "b", tmp_path / "b" / "f"):
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (0, 0)
        assert not info.st_mode & stat.S_IWOTH


@pytest.mark.parametrize("flags", [["--Policy.artifacts_timeout_s=1", "--Policy.max_artifacts_files=100000"]])
def test_a_job_leaving_more_files_than_can_be_copied_in_time_is_cut_off_with_a_note(users, flags):
    folder = folder_of(users[ALICE])
    try:
        with started_daemon(flags) as slow:
            script = "cd /work && mkdir m && cd m && seq 1 30000 | xargs touch"
            record = ended(
                slow, ALICE, {"command": ["sh", "-c", script], "limits": {"timeout_s": 120}, "artifacts": folder}
            )
        assert record["status"] == "COMPLETED"
        assert "artifacts_timeout_s" in record["artifacts"]["note"]
        assert record["artifacts"]["copied"] < 30000
    finally:
        shutil.rmtree(folder)


SWAP = 'cd "$F" && mv out out.orig && ln -s "$VICTIM" out && echo evil > /work/evil'


def test_a_job_swapping_its_writable_artifacts_folder_for_a_link_elsewhere_gets_nothing_written_there(daemon, users):
    alice = users[ALICE]
    folder, victim = folder_of(users[ALICE]), folder_of(users[ALICE])
    os.mkdir(os.path.join(folder, "out"))
    os.chown(os.path.join(folder, "out"), alice.pw_uid, alice.pw_gid)
    try:
        job = {
            "command": ["sh", "-c", SWAP],
            "env": {"F": folder, "VICTIM": victim},
            "mounts": [{"source": folder, "destination": folder, "rw": True}],
            "artifacts": os.path.join(folder, "out"),
        }
        record = ended(daemon, ALICE, job)
        assert record["status"] == "COMPLETED", record
        assert os.path.islink(os.path.join(folder, "out"))  # the job did swap it
        assert os.listdir(victim) == []
        assert record["artifacts"]["error"].endswith("(nothing copied)")
    finally:
        shutil.rmtree(folder)
        shutil.rmtree(victim)


def test_a_root_requesters_job_swapping_its_artifacts_folder_for_a_link_to_a_root_folder_writes_nothing_there(daemon):
    folder, victim = tempfile.mkdtemp(prefix="jw-notebook-"), tempfile.mkdtemp(prefix="jw-victim-")
    os.chmod(folder, 0o755)
    os.mkdir(os.path.join(folder, "out"))
    try:
        with daemon.client() as client:
            job = {
                "command": ["sh", "-c", SWAP],
                "env": {"F": folder, "VICTIM": victim},
                "mounts": [{"source": folder, "destination": folder, "rw": True}],
                "artifacts": os.path.join(folder, "out"),
            }
            handle = Job(client.run(job), client.path)
        try:
            handle.wait()
        except JobFailed:
            pass
        record = handle.record
        assert os.listdir(victim) == []
        if idmap_problem(folder) is None:  # the job, as nobody, could swap root's folder: an id-mapped bind
            assert os.path.islink(os.path.join(folder, "out"))
            assert record.artifacts["error"].endswith("(nothing copied)")
        else:  # a plain bind (tmpfs before Linux 6.3): nobody cannot touch root's folder at all
            assert not os.path.islink(os.path.join(folder, "out"))
    finally:
        shutil.rmtree(folder)
        shutil.rmtree(victim)


def test_a_job_leaving_a_folder_of_too_many_names_cannot_stall_the_executor_listing_it(users):
    # no disk limit: a /work image's inode table would stop the job before MAX_SCANNED names
    with started_daemon(["--Policy.default_disk_limit=None"]) as daemon:
        script = f"mkdir /work/bomb && cd /work/bomb && seq 1 {MAX_SCANNED + 1} | xargs touch"
        record = ended(daemon, ALICE, {"command": ["sh", "-c", script], "limits": {"timeout_s": 300}})
        assert record["status"] == "COMPLETED", record["status_text"]
        with pytest.raises(WorkerError) as refused:
            ask_listing(daemon, record["id"], "bomb")
        assert refused.value.reason is ErrorReason.BAD_REQUEST
        assert f"more than {MAX_SCANNED:,} names: too large to list" in refused.value.message
        assert ask_listing(daemon, record["id"], "")["entries"][0]["name"] == "bomb"  # the executor still answers


def ask_listing(daemon, job_id: str, path: str) -> dict:
    return as_user(ALICE, lambda: Client(daemon.socket).files(job_id, path))


def test_another_users_file_planted_at_a_downloads_name_in_a_shared_folder_is_never_written_through(daemon, users):
    record = ended(daemon, ALICE, {"command": ["sh", "-c", "echo secret > /work/out.txt"]})
    shared = tempfile.mkdtemp(prefix="jw-shared-")
    os.chmod(shared, 0o1777)  # like /tmp: anyone may create, nobody may replace another's
    try:

        def plant():
            with open(os.path.join(shared, "out.txt"), "w") as f:
                f.write("bob's")
            os.chmod(os.path.join(shared, "out.txt"), 0o666)

        as_user(BOB, plant)

        def download():
            with Client(daemon.socket) as client:
                return Job(client.get(record["id"]), daemon.socket).download("out.txt", shared)

        with pytest.raises(WorkerError):
            as_user(ALICE, download)
        assert open(os.path.join(shared, "out.txt")).read() == "bob's"  # alice's secret never went into it
        assert os.stat(os.path.join(shared, "out.txt")).st_uid == users[BOB].pw_uid
        assert os.listdir(shared) == ["out.txt"]  # no temporary left behind
    finally:
        shutil.rmtree(shared)


def test_bob_fails_to_read_the_artifacts_of_alices_job_submitted_under_umask_077_into_a_folder_open_to_all(
    daemon, alices
):
    """alice's folder is 0755 (a home or a shared project), her umask 077: her own files there are
    hers alone, and so are her job's (they were 0644 and 0755 whatever her umask)."""
    job = {"command": ["sh", "-c", "mkdir /work/d && echo secret > /work/d/token"], "artifacts": alices}

    def submit_under_077() -> dict:
        os.umask(0o077)
        with Client(daemon.socket) as client:
            handle = Job(client.run(job), daemon.socket)
        handle.wait()
        return handle.record.to_dict()

    record = as_user(ALICE, submit_under_077)
    folder = record["artifacts"]["folder"]
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(folder, "d")).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(folder, "d", "token")).st_mode) == 0o600
    assert not as_user(BOB, lambda: os.access(os.path.join(folder, "d", "token"), os.R_OK))
    assert as_user(ALICE, lambda: open(os.path.join(folder, "d", "token")).read()) == "secret\n"
