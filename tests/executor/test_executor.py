"""The executor daemon as its clients see it: ownership, roles, queueing, logs, crashes, retention."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from jupyter_worker.client import AsyncClient, Client
from jupyter_worker.errors import WorkerError
from jupyter_worker.executor.folders import JobFolder
from jupyter_worker.executor.store import JobStore
from jupyter_worker.spec import JobStatus
from tests.executor.conftest import EXECUTOR, SLEEP, as_user, ask_as, job_status, run_as, started_daemon, wait_for


def test_a_job_runs_as_its_owner_and_others_cannot_touch_it(daemon, users):
    alice = users["jwtest-alice"]
    job = run_as(daemon, "jwtest-alice", {"command": ["sh", "-c", "id -u; sleep 300"]})
    with daemon.client() as root:
        wait_for(lambda: root.logs(job.id)[0], what="output")
        assert root.logs(job.id)[0][0].data == f"{alice.pw_uid}\n".encode()
    assert job.owner == "jwtest-alice" and job.owner_uid == alice.pw_uid
    assert ask_as(daemon, "jwtest-bob", "list")[0] == []
    for method in ("get", "logs", "stop", "delete"):
        assert ask_as(daemon, "jwtest-bob", method, job.id) == "refused: not_found"
    assert ask_as(daemon, "jwtest-bob", "get", job.id[:8]) == "refused: not_found"
    assert [j.id for j in ask_as(daemon, "jwtest-alice", "list")[0]] == [job.id]
    assert ask_as(daemon, "jwtest-alice", "stop", job.id[:6]).id == job.id


def test_every_user_reaches_a_socket_folder_made_under_a_strict_umask(users, tmp_path):
    folder = tempfile.mkdtemp(prefix="jupyter-worker-test-")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "run", "executor.sock")
    command = [*EXECUTOR, "--socket", path, "--state-dir", str(tmp_path / "state")]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, umask=0o077)
    try:
        wait_for(lambda: os.path.exists(path), timeout=60, what="the socket")  # the VM lane starts slowly
        assert as_user("jwtest-alice", lambda: Client(path).capabilities())["max_concurrent_jobs"] > 0
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o755
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder)


def test_root_sees_and_stops_every_job(daemon, users):
    job = run_as(daemon, "jwtest-alice", SLEEP)
    with daemon.client() as root:
        assert job.id in [j.id for j in root.list()[0]]
        assert root.stop(job.id).stopped_by == "root"
        final = wait_for(lambda: (j := root.get(job.id)).status != "RUNNING" and j, what="stop")
    assert final.status == "STOPPED" and final.reason == "stopped"


def test_a_viewer_reads_every_job_but_runs_and_stops_none(daemon, users):
    job = run_as(daemon, "jwtest-alice", {"command": ["sh", "-c", "echo visible; sleep 300"]})
    assert job.id in [j.id for j in ask_as(daemon, "jwtest-carol", "list")[0]]
    wait_for(lambda: ask_as(daemon, "jwtest-carol", "logs", job.id)[0], what="output")
    assert ask_as(daemon, "jwtest-carol", "run", SLEEP) == "refused: forbidden"
    assert ask_as(daemon, "jwtest-carol", "stop", job.id) == "refused: forbidden"
    assert ask_as(daemon, "jwtest-carol", "delete", job.id) == "refused: forbidden"


@pytest.mark.executor_flags("--Policy.max_concurrent_jobs=2", "--Policy.max_jobs_per_user=0")
def test_jobs_beyond_the_concurrency_cap_wait_in_order(daemon):
    with daemon.client() as client:
        ids = [client.run(SLEEP).id for _ in range(4)]
        assert [job_status(client, i) for i in ids] == ["RUNNING", "RUNNING", "QUEUED", "QUEUED"]
        client.stop(ids[0], grace_s=0)
        wait_for(lambda: job_status(client, ids[2]) == "RUNNING", what="the third job to start")
        assert job_status(client, ids[3]) == "QUEUED"
        client.stop(ids[3])
        assert job_status(client, ids[3]) == "STOPPED"


@pytest.mark.executor_flags("--Policy.max_jobs_per_user=1")
def test_the_per_user_cap_queues_one_user_without_holding_back_another(daemon, users):
    first = run_as(daemon, "jwtest-alice", SLEEP)
    second = run_as(daemon, "jwtest-alice", SLEEP)
    other = run_as(daemon, "jwtest-bob", SLEEP)
    assert (first.status, second.status, other.status) == ("RUNNING", "QUEUED", "RUNNING")


@pytest.mark.executor_flags("--Policy.max_memory_limit=512", "--Policy.max_job_timeout=60")
def test_limits_above_the_maxima_are_refused_with_a_clear_error(daemon):
    with daemon.client() as client, pytest.raises(WorkerError, match="memory limit: 1024 MiB is above the maximum"):
        client.run({"command": ["true"], "limits": {"memory_mb": 1024}})
    with daemon.client() as client, pytest.raises(WorkerError, match="timeout: 2m is above the maximum"):
        client.run({"command": ["true"], "limits": {"timeout_s": 120}})
    with daemon.client() as client:
        assert client.list()[0] == []


def test_a_timeout_ends_the_job_and_says_so(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["sleep", "300"], "limits": {"timeout_s": 1}})
        final = wait_for(lambda: (j := client.get(job.id)).status != "RUNNING" and j, what="timeout")
    assert (final.status, final.reason) == ("FAILED", "timeout")


COUNTER = (
    "import time\nfor i in range(4000):\n    print(i, flush=True)\n    time.sleep(0.0005) if i % 50 == 0 else None\n"
)


def test_logs_resume_from_any_offset_with_no_gap_or_duplicate(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["python3", "-c", COUNTER]})
        expected = b"".join(b"%d\n" % i for i in range(4000))
        seen, offset = b"", 0
        while True:
            chunks, offset, finished = client.logs(job.id, offset, max_bytes=997)
            seen += b"".join(c.data for c in chunks)
            if finished and not chunks:
                break
        assert seen == expected
        middle = client.logs(job.id, 0, max_bytes=5000)[1]
        followed = b"".join(e["data"] for e in client.follow(job.id, middle) if e["event"] == "log")
        assert expected[: len(expected) - len(followed)] + followed == expected
        assert len(followed) < len(expected)


def test_following_a_live_job_delivers_every_byte_then_ends(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["python3", "-c", COUNTER]})
        events = list(client.follow(job.id))
    data = b"".join(e["data"] for e in events if e["event"] == "log")
    assert data == b"".join(b"%d\n" % i for i in range(4000))
    assert events[-1]["event"] == "end" and events[-1]["job"].status == "COMPLETED"
    assert "status" in {e["event"] for e in events}


@pytest.mark.executor_flags("--Policy.log_max_bytes=10000")
def test_the_log_cap_keeps_the_start_marks_the_cut_and_lets_the_job_finish(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["sh", "-c", "head -c 100000 /dev/zero | tr '\\\\0' x; echo; echo end"]})
        final = wait_for(lambda: (j := client.get(job.id)).status != "RUNNING" and j, what="the job")
        chunks, _, _ = client.logs(job.id)
    assert final.status == "COMPLETED"
    assert sum(len(c.data) for c in chunks if c.stream == "stdout") <= 10000
    assert any(c.stream == "notice" and b"log cap of 10000 bytes" in c.data for c in chunks)


def test_a_crash_of_the_executor_loses_nothing(daemon):
    with daemon.client() as client:
        done_meanwhile = client.run({"command": ["python3", "-c", COUNTER]}).id
        still_running = client.run({"command": ["sh", "-c", "echo before; sleep 300"]}).id
        wait_for(lambda: client.logs(still_running)[0], what="output")
    daemon.kill_hard()
    time.sleep(3)
    daemon.start()
    with daemon.client() as client:
        ended = client.get(done_meanwhile)
        assert (ended.status, ended.reason, ended.exit_code) == ("COMPLETED", "exit", 0)
        log = b"".join(c.data for c in client.logs(done_meanwhile, max_bytes=1 << 20)[0])
        assert log == b"".join(b"%d\n" % i for i in range(4000))
        assert client.get(still_running).status == "RUNNING"
        client.stop(still_running, grace_s=0)
        final = wait_for(lambda: (j := client.get(still_running)).status != "RUNNING" and j, what="stop")
        assert final.status == "STOPPED"


@pytest.mark.executor_flags("--Policy.max_concurrent_jobs=4", "--Policy.max_jobs_per_user=0")
def test_a_kill_of_the_executor_right_after_many_submits_loses_no_acknowledged_job(daemon):
    script = "echo start {0}; sleep 0.{1}; echo end {0}; exit {2}"
    with daemon.client() as client:
        ids = [client.run({"command": ["sh", "-c", script.format(i, i % 4, i % 3)]}).id for i in range(24)]
    daemon.kill_hard()  # at once: some jobs are starting, some running, some waiting, some ended
    daemon.start()
    with daemon.client() as client:
        for i, job_id in enumerate(ids):
            final = wait_for(lambda job_id=job_id: (j := client.get(job_id)).finished and j, 60, what=f"job {i}")
            status = "COMPLETED" if i % 3 == 0 else "FAILED"
            assert (final.status, final.reason, final.exit_code) == (status, "exit", i % 3), final.error
            log = b"".join(c.data for c in client.logs(job_id)[0])
            assert log == f"start {i}\nend {i}\n".encode()


def test_a_job_recorded_running_whose_folder_or_result_file_was_never_made_runs_after_a_kill(daemon):
    """The executor killed after recording jobs RUNNING but before making one's folder (or its
    result file): no supervisor ever had them, so the next start queues them again and runs them
    once, rather than settling them as lost. Made by hand: a kill -9 at that instant is a race."""
    with daemon.client() as client:
        ids = [client.run({"command": ["sh", "-c", f"echo once {i}"]}).id for i in range(2)]
        for job_id in ids:
            wait_for(lambda job_id=job_id: client.get(job_id).finished, what="the job")
    daemon.kill_hard()
    store = JobStore(os.path.join(daemon.state_dir, "jobs.db"))
    try:
        for job_id in ids:
            record = store.get(job_id)
            assert record is not None
            record.status, record.reason, record.exit_code, record.finished_at = JobStatus.RUNNING, None, None, None
            store.save(record)
    finally:
        store.close()
    folders = [JobFolder.of(os.path.join(daemon.state_dir, "jobs"), job_id) for job_id in ids]
    shutil.rmtree(folders[0].dir)  # killed before its folder was made
    shutil.rmtree(folders[1].dir)
    folders[1].make(0, 0)  # killed after its folder was made, before its files were
    daemon.start()
    with daemon.client() as client:
        for i, job_id in enumerate(ids):
            final = wait_for(lambda job_id=job_id: (j := client.get(job_id)).finished and j, 60, what=f"job {i}")
            assert (final.status, final.reason, final.exit_code) == ("COMPLETED", "exit", 0), final.error
            log = b"".join(c.data for c in client.logs(job_id)[0])
            assert log == f"once {i}\n".encode()  # run once, from its new folder


def test_a_job_stopped_while_its_start_was_under_way_never_runs_after_a_kill(daemon):
    """Stopped before its start reached a supervisor, then the executor killed: the next start
    ends it STOPPED rather than queuing it again (made by hand, as above: the instant is a race)."""
    with daemon.client() as client:
        job_id = client.run({"command": ["sh", "-c", "echo ran"]}).id
        wait_for(lambda: client.get(job_id).finished, what="the job")
    daemon.kill_hard()
    store = JobStore(os.path.join(daemon.state_dir, "jobs.db"))
    try:
        record = store.get(job_id)
        assert record is not None
        record.status, record.reason, record.exit_code, record.finished_at = JobStatus.RUNNING, None, None, None
        record.stopped_by = "root"
        store.save(record)
    finally:
        store.close()
    shutil.rmtree(JobFolder.of(os.path.join(daemon.state_dir, "jobs"), job_id).dir)  # no supervisor had it
    daemon.start()
    with daemon.client() as client:
        final = wait_for(lambda: (j := client.get(job_id)).finished and j, 60, what="the job")
        assert (final.status, final.reason) == ("STOPPED", "stopped"), final.error
        assert client.logs(job_id)[0] == []  # it never ran again


def test_the_folders_a_killed_executor_made_ahead_are_removed_at_its_next_start(daemon):
    jobs = os.path.join(daemon.state_dir, "jobs")

    def spares() -> set[str]:
        return {name for name in os.listdir(jobs) if name.startswith(".spare-")}

    before = wait_for(spares, what="folders made ahead")
    daemon.kill_hard()
    daemon.start()
    wait_for(lambda: not before & spares(), what="the killed executor's spares to be removed")
    with daemon.client() as client:
        job = client.run({"command": ["sh", "-c", "echo ok"]})
        final = wait_for(lambda: (j := client.get(job.id)).finished and j, what="the job")
        assert (final.status, client.logs(job.id)[0][0].data) == ("COMPLETED", b"ok\n")
    assert oct(os.stat(jobs).st_mode & 0o777) == oct(0o700)


def test_a_stop_asked_for_just_before_the_executor_stops_is_carried_out(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["sleep", "300"]})
        client.stop(job.id, grace_s=0)
    daemon.stop()
    daemon.start()
    with daemon.client() as client:
        final = wait_for(lambda: (j := client.get(job.id)).status != "RUNNING" and j, what="the stop")
    assert (final.status, final.reason) == ("STOPPED", "stopped")


def test_a_state_folder_too_deep_for_a_socket_address_still_runs_and_reattaches_jobs():
    parent = tempfile.mkdtemp(prefix="jupyter-worker-deep-")
    state = os.path.join(parent, "d" * 80)
    try:
        with started_daemon([], state_dir=state) as daemon:
            with daemon.client() as client:
                job = client.run({"command": ["sh", "-c", "echo hi; sleep 300"]})
                wait_for(lambda: client.logs(job.id)[0], what="the job's output")
            assert len(os.path.join(state, "jobs", job.id, "control")) > 107
            daemon.kill_hard()
            daemon.start()
            with daemon.client() as client:
                assert client.get(job.id).status == "RUNNING"
                client.stop(job.id, grace_s=0)
                final = wait_for(lambda: (j := client.get(job.id)).status != "RUNNING" and j, what="stop")
            assert final.status == "STOPPED"
    finally:
        shutil.rmtree(parent)


def test_retention_deletes_old_jobs_and_delete_removes_one(daemon):
    with daemon.client() as client:
        kept = client.run({"command": ["true"]}).id
        doomed = client.run({"command": ["true"]}).id
        wait_for(lambda: job_status(client, doomed) == "COMPLETED", what="the job")
        with pytest.raises(WorkerError, match="stop it first"):
            client.delete(client.run(SLEEP).id)
        client.delete(doomed)
        with pytest.raises(WorkerError, match="no job"):
            client.get(doomed)
    assert not os.path.exists(os.path.join(daemon.state_dir, "jobs", doomed))
    daemon.stop()
    daemon.start("--Policy.retention_max_bytes=0")
    with daemon.client() as client, pytest.raises(WorkerError, match="no job"):
        client.get(kept)


def test_the_async_client_runs_and_follows(daemon):
    async def scenario():
        async with AsyncClient(daemon.socket) as client:
            job = await client.run({"command": ["sh", "-c", "echo async"]})
            events = [e async for e in client.follow(job.id)]
            return job, events, await client.get(job.id)

    _, events, final = asyncio.run(scenario())
    assert b"".join(e["data"] for e in events if e["event"] == "log") == b"async\n"
    assert final.status == "COMPLETED"


def test_watchers_hear_of_every_change_to_their_jobs(daemon):
    with daemon.client() as client:
        stream = client.watch()
        job = client.run({"command": ["true"]})
        statuses = []
        for event in stream:
            if event.get("event") == "job" and event["job"].id == job.id:
                statuses.append(event["job"].status)
                if event["job"].status == "COMPLETED":
                    break
        stream.close()
    assert statuses[0] in ("QUEUED", "RUNNING") and statuses[-1] == "COMPLETED"


def test_an_executor_started_with_exit_with_parent_stops_when_its_parent_dies(tmp_path):
    sock = tmp_path / "child.sock"
    command = (
        f"{sys.executable} -m jupyter_worker.cli executor --exit-with-parent --socket {sock} "
        f"--state-dir {tmp_path / 'state'} & wait"
    )
    parent = subprocess.Popen(["sh", "-c", command])
    wait_for(sock.exists, what="the executor's socket")
    with Client(str(sock)) as client:
        assert client.capabilities()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    wait_for(lambda: not sock.exists(), what="the executor to stop")
