"""Jobs through the Slurm backend on a real cluster: a head executor with the backend on submits as
the user, the relay on the node hands the job to the node's executor (the same sandbox and limits
as a local job), and the head follows it there (issue 18's list)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from tests.executor.conftest import Daemon, as_user, started_daemon, wait_for
from tests.slurm.conftest import head_flags

pytestmark = pytest.mark.slurm

MEMORY_BOMB = "b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n"
ENDED = ("COMPLETED", "FAILED", "STOPPED")


@pytest.fixture(scope="module")
def head(slurm_cluster) -> Iterator[Daemon]:
    """One head executor with the Slurm backend for the module's tests that do not restart it."""
    with started_daemon(head_flags(slurm_cluster)) as daemon:
        yield daemon


def on_slurm(command: list[str], **fields: Any) -> dict[str, Any]:
    return {"command": command, "backend": "slurm", **fields}


def submit(daemon: Daemon, user: str, request: dict[str, Any]) -> str:
    return as_user(user, lambda: Client(daemon.socket).run(request).id)


def record(daemon: Daemon, user: str, job_id: str) -> dict[str, Any]:
    return as_user(user, lambda: Client(daemon.socket).get(job_id).to_dict())


def ended(daemon: Daemon, user: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (r := record(daemon, user, job_id))["status"] in ENDED and r, timeout, f"job {job_id} to end"
    )


def log_of(daemon: Daemon, user: str, job_id: str) -> bytes:
    def read() -> bytes:
        with Client(daemon.socket) as client:
            chunks, _, _ = client.logs(job_id, 0, max_bytes=1 << 20)
        return b"".join(c.data for c in chunks if c.stream in ("stdout", "stderr"))

    return as_user(user, read)


def test_a_job_lands_on_a_node_and_its_output_streams_live(slurm_cluster, head):
    request = on_slurm(["sh", "-c", "echo start; sleep 3; echo end"])

    def follow() -> dict[str, Any]:
        with Client(head.socket) as client:
            job = client.run(request)
            seen: dict[str, Any] = {"id": job.id, "data": b""}
            for event in client.follow(job.id):
                if event["event"] == "log" and b"start" in event["data"] and "live" not in seen:
                    now = client.get(job.id)
                    seen["live"] = (now.status, now.node)
                if event["event"] == "log":
                    seen["data"] += event["data"]
                if event["event"] == "end":
                    seen["end"] = event["job"].to_dict()
            return seen

    seen = as_user("jwtest-alice", follow)
    final = seen["end"]
    assert seen["live"][0] == "RUNNING" and seen["live"][1] in slurm_cluster.nodes
    assert seen["data"] == b"start\nend\n"
    assert (final["status"], final["reason"], final["exit_code"]) == ("COMPLETED", "exit", 0)
    assert final["backend"] == "slurm" and final["node"] == seen["live"][1]
    slurm_id = final["placement"]["slurm_job_id"]
    fields = slurm_cluster.wait_state(slurm_id, "COMPLETED", "FAILED", "CANCELLED")
    assert fields["JobState"] == "COMPLETED" and fields["NodeList"] == final["node"]
    assert fields["UserId"].startswith("jwtest-alice(")  # submitted as the user, not as root


def test_two_jobs_land_on_two_different_nodes(slurm_cluster, head):
    # each asks for two CPUs: a whole node of this cluster
    request = on_slurm(["sleep", "4"], limits={"cpu_percent": 200})
    first, second = (submit(head, "jwtest-alice", request) for _ in range(2))

    def both_running() -> list[dict] | None:
        running = [r for j in (first, second) if (r := record(head, "jwtest-alice", j))["status"] == "RUNNING"]
        return running if len(running) == 2 else None

    both = wait_for(both_running, 30, "both jobs to run")
    assert len(both) == 2 and both[0]["node"] != both[1]["node"]
    assert all(ended(head, "jwtest-alice", j)["status"] == "COMPLETED" for j in (first, second))


def test_a_memory_bomb_ends_as_out_of_memory(head):
    job_id = submit(head, "jwtest-alice", on_slurm(["python3", "-c", MEMORY_BOMB], limits={"memory_mb": 64}))
    final = ended(head, "jwtest-alice", job_id)
    assert (final["status"], final["reason"]) == ("FAILED", "oom")


def test_a_timeout_ends_the_job_and_says_so(head):
    job_id = submit(head, "jwtest-alice", on_slurm(["sleep", "300"], limits={"timeout_s": 2}))
    final = ended(head, "jwtest-alice", job_id)
    assert (final["status"], final["reason"]) == ("FAILED", "timeout")


def test_stop_ends_a_running_job_and_its_slurm_job(slurm_cluster, head):
    job_id = submit(head, "jwtest-alice", on_slurm(["sh", "-c", "echo up; sleep 300"]))
    wait_for(lambda: b"up" in log_of(head, "jwtest-alice", job_id), 30, "the job's output")
    as_user("jwtest-alice", lambda: Client(head.socket).stop(job_id, grace_s=0))
    final = ended(head, "jwtest-alice", job_id)
    assert (final["status"], final["reason"]) == ("STOPPED", "stopped")
    slurm_id = final["placement"]["slurm_job_id"]
    wait_for(lambda: not slurm_cluster._active((slurm_id,)), 30, "the Slurm job to end")


def test_with_the_cluster_full_a_job_is_queued_with_slurms_reason_then_runs(slurm_cluster, head):
    taken = slurm_cluster.fill("jwtest-bob")
    try:
        job_id = submit(head, "jwtest-alice", on_slurm(["echo", "ran"]))
        queued = wait_for(
            lambda: ((r := record(head, "jwtest-alice", job_id))["placement"] or {}).get("slurm_job_id") and r,
            30,
            "a Slurm job id",
        )
        time.sleep(1)  # Slurm's first scheduling pass has given its reason
        queued = record(head, "jwtest-alice", job_id)
        assert queued["status"] == "QUEUED" and queued["node"] is None
        assert "waiting" in queued["queue"]["reason"], queued["queue"]
        slurm_cluster.cancel(*taken)
        final = ended(head, "jwtest-alice", job_id)
        assert final["status"] == "COMPLETED" and log_of(head, "jwtest-alice", job_id) == b"ran\n"
    finally:
        slurm_cluster.cancel(*taken)


def test_stop_of_a_queued_job_cancels_it_in_slurm(slurm_cluster, head):
    taken = slurm_cluster.fill("jwtest-bob")
    try:
        job_id = submit(head, "jwtest-alice", on_slurm(["true"]))
        slurm_id = wait_for(
            lambda: (record(head, "jwtest-alice", job_id)["placement"] or {}).get("slurm_job_id"), 30, "a Slurm job id"
        )
        as_user("jwtest-alice", lambda: Client(head.socket).stop(job_id, grace_s=0))
        final = ended(head, "jwtest-alice", job_id)
        assert final["status"] == "STOPPED" and final["node"] is None
        assert slurm_cluster.wait_state(slurm_id, "CANCELLED")["JobState"] == "CANCELLED"
    finally:
        slurm_cluster.cancel(*taken)


def test_work_files_come_back_to_the_head(head):
    script = "mkdir -p /work/out && echo result > /work/out/answer.txt"
    job_id = submit(head, "jwtest-alice", on_slurm(["sh", "-c", script]))
    assert ended(head, "jwtest-alice", job_id)["status"] == "COMPLETED"
    data, size = as_user("jwtest-alice", lambda: Client(head.socket).read_file(job_id, "out/answer.txt"))
    assert (data, size) == (b"result\n", 7)


def test_a_second_users_job_runs_as_their_uid_on_the_node_and_is_invisible_to_the_first(slurm_cluster, head):
    bob = pwd.getpwnam("jwtest-bob")
    job_id = submit(head, "jwtest-bob", on_slurm(["sh", "-c", "id -u; id -g"]))
    final = ended(head, "jwtest-bob", job_id)
    assert final["status"] == "COMPLETED" and final["owner"] == "jwtest-bob"
    assert log_of(head, "jwtest-bob", job_id) == f"{bob.pw_uid}\n{bob.pw_gid}\n".encode()
    # on the node, the job belongs to bob too
    with slurm_cluster.nodes[final["node"]].client() as node:
        owners = {j.owner for j in node.list(limit=1000)[0]}
    assert "jwtest-bob" in owners
    # alice sees neither the job nor its log
    assert job_id not in [j.id for j in as_user("jwtest-alice", lambda: Client(head.socket).list(limit=1000)[0])]
    with pytest.raises(WorkerError):
        record(head, "jwtest-alice", job_id)
    assert slurm_cluster.job(final["placement"]["slurm_job_id"])["UserId"].startswith("jwtest-bob(")


def test_a_node_without_a_jupyter_worker_executor_fails_the_job_in_words(slurm_cluster, head):
    slurm_cluster.stop_node_executor("n3")
    try:
        job_id = submit(head, "jwtest-alice", on_slurm(["true"], placement={"partition": "only-n3"}))
        final = ended(head, "jwtest-alice", job_id)
    finally:
        slurm_cluster.start_node_executor("n3")
    assert (final["status"], final["reason"]) == ("FAILED", "start_error")
    assert "no jupyter-worker executor on node n3" in final["error"]


def test_a_restart_of_slurmctld_loses_nothing(slurm_cluster, head):
    job_id = submit(head, "jwtest-alice", on_slurm(["sh", "-c", "echo before; sleep 3; echo after"]))
    wait_for(lambda: b"before" in log_of(head, "jwtest-alice", job_id), 30, "the job's output")
    slurm_cluster.restart_slurmctld()
    final = ended(head, "jwtest-alice", job_id)
    assert final["status"] == "COMPLETED"
    assert log_of(head, "jwtest-alice", job_id) == b"before\nafter\n"


def test_kill_9_of_the_head_mid_job_then_a_restart_loses_nothing(slurm_cluster):
    with started_daemon(head_flags(slurm_cluster)) as daemon:
        running = submit(daemon, "jwtest-alice", on_slurm(["sh", "-c", "echo before; sleep 4; echo after"]))
        quick = submit(daemon, "jwtest-alice", on_slurm(["sh", "-c", "sleep 1; echo quick"]))
        wait_for(lambda: b"before" in log_of(daemon, "jwtest-alice", running), 30, "the job's output")
        daemon.kill_hard()
        time.sleep(2)  # the quick job ends while the head is away
        daemon.start()
        for job_id, expected in ((running, b"before\nafter\n"), (quick, b"quick\n")):
            final = ended(daemon, "jwtest-alice", job_id)
            assert (final["status"], final["exit_code"]) == ("COMPLETED", 0), final
            assert log_of(daemon, "jwtest-alice", job_id) == expected
            # the restarted head released the relay too: its Slurm job ended by itself
            slurm_id = final["placement"]["slurm_job_id"]
            assert slurm_cluster.wait_state(slurm_id, "COMPLETED", "FAILED", "CANCELLED")["JobState"] == "COMPLETED"


def test_a_worker_cell_with_backend_slurm_runs_on_a_node_with_its_widget(slurm_cluster, head):
    from tests.test_magics import WIDGET, run_cell, started_kernel, wait_in_kernel  # noqa: PLC0415

    notebook_dir = tempfile.mkdtemp(prefix="jupyter-worker-notebook-")
    os.chmod(notebook_dir, 0o777)
    try:
        with started_kernel(notebook_dir, JUPYTER_WORKER_SOCKET=head.socket) as client:
            run_cell(client, "%load_ext jupyter_worker")
            reply = run_cell(client, "%%worker --backend slurm --name on-slurm\nprint('hello from the cluster')")
            assert reply["status"] == "ok" and reply["text"].startswith("job on-slurm "), reply
            wait_in_kernel(client, f"{WIDGET}.finished")
            header = run_cell(client, f"print({WIDGET}.header.value)")["text"]
            log = run_cell(client, f"print({WIDGET}.log.value)")["text"]
            job = run_cell(client, f"print({WIDGET}.job.backend, {WIDGET}.job.node)")["text"].split()
    finally:
        shutil.rmtree(notebook_dir, ignore_errors=True)
    assert "exit code 0" in header
    assert "hello from the cluster" in log
    assert job[0] == "slurm" and job[1] in slurm_cluster.nodes
