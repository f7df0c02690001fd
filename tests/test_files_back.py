"""Files back from a job's /work: Job.files/read/download, `jupyter-worker cp` and the listing's pages,
against a real executor and real users; hostile names and links never leave the destination."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
import warnings

import pytest

from jupyter_worker.client import Client
from jupyter_worker.jobs import Job
from tests.conftest import cli
from tests.executor.conftest import as_user, job_status, run_as, started_daemon, wait_for
from tests.test_magics import kernel, run_cell  # noqa: F401  (kernel: a fixture)

BIG = 3 * (1 << 20) + 12345  # more than three pieces of 1 MiB
PLANTED = (
    "cd /work && mkdir -p results/deep/deeper && printf 'accuracy 0.93\\n' > results/score.txt"
    f" && head -c {BIG} /dev/urandom > results/big.bin && echo nested > results/deep/deeper/n.txt"
    " && ln -s /etc/shadow results/shadow-link && ln -s / results/root-link && mkfifo results/pipe"
    " && printf x > \"results/$(printf 'evil\\033[31mname')\" && mkdir many"
    " && (cd many && seq -w 1 2500 | xargs touch)"
)


@pytest.fixture(scope="module")
def executor(users):
    with started_daemon([]) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def alices_job(executor):
    """A finished job of alice's that left files, a big one, links, a FIFO and a hostile name."""
    record = run_as(executor, "jwtest-alice", {"command": ["sh", "-c", PLANTED]})
    with executor.client() as root:
        wait_for(lambda: job_status(root, record.id) == "COMPLETED", timeout=60, what="the job to complete")
    return record.id


def as_alice(executor, job_id, action):
    def call():
        with Client(executor.socket) as client:
            return action(Job(client.get(job_id), executor.socket))

    return as_user("jwtest-alice", call)


@pytest.fixture
def alices_folder(users):
    """An empty folder of alice's own, in her home."""
    entry = users["jwtest-alice"]
    folder = tempfile.mkdtemp(prefix="dest-", dir=entry.pw_dir)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    yield folder
    shutil.rmtree(folder)


def test_job_read_returns_a_big_file_whole(executor, alices_job):
    data = as_alice(executor, alices_job, lambda job: job.read("results/big.bin"))
    assert len(data) == BIG
    assert as_alice(executor, alices_job, lambda job: job.read("/results/score.txt")) == b"accuracy 0.93\n"


def test_job_files_reads_every_page_of_a_folder_past_the_executors_page(executor, alices_job):
    entries = as_alice(executor, alices_job, lambda job: job.files("many"))
    assert len(entries) == 2500
    assert [e["name"] for e in entries] == [f"{n:04d}" for n in range(1, 2501)]
    with executor.client() as root:
        page = root.files(alices_job, "many")
        assert (len(page["entries"]), page["truncated"], page["next_offset"]) == (1000, True, 1000)
        last = root.files(alices_job, "many", 2000)
        assert (len(last["entries"]), last["truncated"], last["next_offset"]) == (500, False, None)


def test_job_download_of_a_big_file_is_streamed_to_disk_and_owned_by_the_caller(executor, alices_job, alices_folder):
    written = as_alice(executor, alices_job, lambda job: job.download("results/big.bin", alices_folder))
    assert written == os.path.join(alices_folder, "big.bin")
    assert os.path.getsize(written) == BIG
    assert os.stat(written).st_uid == pwd.getpwnam("jwtest-alice").pw_uid


def test_a_folder_downloads_recursively_without_its_links_pipes_or_hostile_names(executor, alices_job, alices_folder):
    written = as_alice(executor, alices_job, lambda job: job.download("results", alices_folder))
    assert written == os.path.join(alices_folder, "results")
    found = sorted(
        os.path.relpath(os.path.join(top, name), written) for top, _, names in os.walk(written) for name in names
    )
    assert found == ["big.bin", "deep/deeper/n.txt", "score.txt"]
    for top, folders, names in os.walk(written):
        for name in folders + names:
            assert not os.path.islink(os.path.join(top, name))


def test_root_downloads_a_nobody_job_and_owns_the_files(executor, tmp_path):
    with executor.client() as root:
        record = root.run({"command": ["sh", "-c", "echo hi > /work/out.txt"]})
        wait_for(lambda: job_status(root, record.id) == "COMPLETED", what="the job to complete")
    job = Job(record, executor.socket)
    written = job.download("out.txt", str(tmp_path / "copy.txt"))
    assert open(written).read() == "hi\n"
    assert os.stat(written).st_uid == 0


def test_cp_copies_a_folder_into_an_existing_folder_like_cp(executor, alices_job, alices_folder):
    result = cli("cp", f"{alices_job[:8]}:results", alices_folder, daemon=executor, user="jwtest-alice")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"copied 3 files (3.0 MiB) to {alices_folder}/results; skipped 4:")
    assert "\\x1b" in result.stdout and "\x1b" not in result.stdout
    copied = os.path.join(alices_folder, "results")
    assert open(os.path.join(copied, "deep/deeper/n.txt")).read() == "nested\n"
    assert os.stat(os.path.join(copied, "score.txt")).st_uid == pwd.getpwnam("jwtest-alice").pw_uid


def test_cp_to_a_new_name_makes_that_folder(executor, alices_job, alices_folder):
    dest = os.path.join(alices_folder, "mine")
    result = cli("cp", f"{alices_job}:results/deep", dest, daemon=executor, user="jwtest-alice")
    assert result.returncode == 0, result.stderr
    assert open(os.path.join(dest, "deeper/n.txt")).read() == "nested\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nocolon", "cp: nocolon is not ID:PATH"),
        ("ffffffff:results", "no job"),
        ("{job}:missing", "/work/missing: no such file or folder"),
        ("{job}:results/shadow-link", "/work/results/shadow-link is a symlink"),
        ("{job}:results/pipe", "/work/results/pipe is a FIFO: only files and folders copy"),
        ("{job}:../etc", "leaves the job's /work"),
    ],
)
def test_cp_refuses_a_bad_id_or_path_in_one_line(executor, alices_job, alices_folder, source, message):
    result = cli("cp", source.format(job=alices_job), alices_folder, daemon=executor, user="jwtest-alice")
    assert result.returncode in (1, 2)
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert os.listdir(alices_folder) == []


def test_bob_cannot_copy_alices_files(executor, users, alices_job):
    bob = users["jwtest-bob"]
    folder = tempfile.mkdtemp(prefix="dest-", dir=bob.pw_dir)
    os.chown(folder, bob.pw_uid, bob.pw_gid)
    try:
        result = cli("cp", f"{alices_job}:results", folder, daemon=executor, user="jwtest-bob")
        assert result.returncode == 1
        assert result.stderr == f"jupyter-worker: no job {alices_job}\n"
        assert os.listdir(folder) == []
    finally:
        shutil.rmtree(folder)


def test_cp_replaces_a_file_of_the_same_name_without_writing_through_its_hard_links(
    executor, alices_job, alices_folder
):
    keep = os.path.join(alices_folder, "keep")
    with open(keep, "w") as f:
        f.write("mine")
    os.link(keep, os.path.join(alices_folder, "score.txt"))
    result = cli("cp", f"{alices_job}:results/score.txt", daemon=executor, user="jwtest-alice", cwd=alices_folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"copied 1 file (14 B) to {alices_folder}/score.txt\n"
    assert open(os.path.join(alices_folder, "score.txt")).read() == "accuracy 0.93\n"
    assert open(keep).read() == "mine" and os.stat(keep).st_nlink == 1
    assert sorted(os.listdir(alices_folder)) == ["keep", "score.txt"]  # no temporary left behind


def test_a_download_never_writes_through_a_link_in_the_destination(executor, alices_job, alices_folder):
    victim = os.path.join(alices_folder, "victim")
    with open(victim, "w") as f:
        f.write("mine")
    os.symlink(victim, os.path.join(alices_folder, "score.txt"))
    written = as_alice(executor, alices_job, lambda job: job.download("results/score.txt", alices_folder))
    assert open(victim).read() == "mine"  # the link was replaced, never written through
    assert not os.path.islink(written) and open(written).read() == "accuracy 0.93\n"
    assert written.report.files == 1 and written.report.skipped == []


def test_a_download_that_skips_something_warns_and_its_report_names_it(executor, alices_job, alices_folder):
    def download(job):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return job.download("results", alices_folder), [str(w.message) for w in caught]

    written, warned = as_alice(executor, alices_job, download)
    assert len(warned) == 1 and "; skipped 4: " in warned[0]
    assert sorted(why for _, why in written.report.skipped)[:1] == ["a FIFO, never copied"]


def test_a_name_that_is_not_utf8_is_listed_as_other_and_never_written(executor, alices_folder):
    script = "cd /work && mkdir out && printf x > out/fine && printf x > \"out/$(printf 'bad\\377name')\""
    record = run_as(executor, "jwtest-alice", {"command": ["sh", "-c", script]})
    with executor.client() as root:
        wait_for(lambda: job_status(root, record.id) == "COMPLETED", what="the job to complete")
    entries = as_alice(executor, record.id, lambda job: job.files("out"))
    assert sorted((e["name"], e["type"]) for e in entries) == [("bad\ufffdname", "other"), ("fine", "file")]
    result = cli("cp", f"{record.id}:out", alices_folder, daemon=executor, user="jwtest-alice")
    assert result.returncode == 0, result.stderr
    assert os.listdir(os.path.join(alices_folder, "out")) == ["fine"]


def test_run_wait_with_artifacts_makes_the_folder_and_says_what_came_back_in_one_line(executor, alices_folder):
    dest = os.path.join(alices_folder, "dest")  # missing: the client makes it, as alice
    script = "echo new > /work/out.txt; echo x > /work/o.bin"
    args = ("run", "--wait", "--no-cwd", "--artifacts", "dest:*.txt", "--", "sh", "-c", script)
    result = cli(*args, daemon=executor, user="jwtest-alice", cwd=alices_folder)
    assert result.returncode == 0, result.stderr
    [made] = os.listdir(dest)
    assert result.stderr == f"jupyter-worker: artifacts: 1 file (4 B) copied to {dest}/{made}\n"
    assert os.listdir(os.path.join(dest, made)) == ["out.txt"]
    assert open(os.path.join(dest, made, "out.txt")).read() == "new\n"


def test_run_with_artifacts_to_a_folder_alice_cannot_write_is_one_line_of_refusal(executor):
    result = cli("run", "--artifacts", "/etc", "--", "true", daemon=executor, user="jwtest-alice", cwd="/tmp")
    assert result.returncode == 2
    assert result.stderr == "jupyter-worker: artifacts: /etc is not a folder you can write\n"


def test_a_notebook_gets_artifacts_and_worker_get_owned_by_its_root_kernel_while_the_job_ran_as_nobody(kernel):  # noqa: F811
    client, notebook_dir = kernel
    with open(os.path.join(notebook_dir, "result.txt"), "w") as f:
        f.write("the notebook's own")
    cell = (
        "%%worker --wait --artifacts out\n"
        "import os, socket\n"
        "os.chdir('/work'); os.makedirs('plots')\n"
        "open('result.txt', 'w').write('from the job'); open('plots/a.png', 'wb').write(b'png')\n"
        "os.symlink('/etc/shadow', 'shadow'); os.mkfifo('fifo')\n"
        "socket.socket(socket.AF_UNIX).bind('sock')\n"
        "print('uid', os.getuid())"
    )
    os.mkdir(os.path.join(notebook_dir, "out"))
    with open(os.path.join(notebook_dir, "out", "result.txt"), "w") as f:
        f.write("the notebook's own")
    reply = run_cell(client, cell)
    assert reply["status"] == "ok", reply
    assert f"uid {pwd.getpwnam('nobody').pw_uid}" in reply["text"]
    assert "artifacts: 2 files" in reply["text"] and "3 skipped" in reply["text"]
    out = os.path.join(notebook_dir, "out")
    assert open(os.path.join(out, "result.txt")).read() == "the notebook's own"
    [made] = set(os.listdir(out)) - {"result.txt"}
    assert set(os.listdir(os.path.join(out, made))) == {"plots", "result.txt"}
    assert open(os.path.join(out, made, "result.txt")).read() == "from the job"
    for top, folders, files in os.walk(os.path.join(out, made)):
        for name in folders + files:
            info = os.lstat(os.path.join(top, name))
            assert info.st_uid == 0 and (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode))
    reply = run_cell(client, "%worker get {_worker_job.id} plots got")
    assert reply["status"] == "ok", reply
    assert open(os.path.join(notebook_dir, "got", "a.png"), "rb").read() == b"png"
    assert os.stat(os.path.join(notebook_dir, "got", "a.png")).st_uid == 0
    reply = run_cell(client, "%worker get {_worker_job.id} missing")
    assert reply["status"] == "error" and "no such file or folder" in reply["evalue"]


def test_the_sandbox_verb_runs_a_script_by_relative_path_in_the_callers_folder():
    folder = tempfile.mkdtemp(prefix="jw-sandbox-")
    os.chmod(folder, 0o755)
    try:
        with open(os.path.join(folder, "s.py"), "w") as f:
            f.write("import os\nprint('in', os.getcwd())\n")
        result = cli("sandbox", "--", "python3", "s.py", cwd=folder)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"in {folder}\n"
    finally:
        shutil.rmtree(folder)
