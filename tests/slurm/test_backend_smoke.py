"""The Slurm backend end to end on the test cluster, in a few strokes: a job's log, outcome, node and
/work come back to the head; Stop reaches it; a bad partition is a start error in sbatch's words.
(tests/slurm/test_slurm_jobs.py has the issue's full list.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_worker.client import Client
from tests.executor.conftest import Daemon, as_user, started_daemon, wait_for

pytestmark = pytest.mark.slurm

ENDED = ("COMPLETED", "FAILED", "STOPPED")
USER = "jwtest-alice"


@pytest.fixture(scope="module")
def head(slurm_cluster) -> Iterator[Daemon]:
    with started_daemon(slurm_cluster.head_config(poll_s=0.2, linger_s=60)) as daemon:
        yield daemon


def call(daemon: Daemon, method: str, *args: Any, **kwargs: Any) -> Any:
    def act() -> Any:
        with Client(daemon.socket) as client:
            return getattr(client, method)(*args, **kwargs)

    return as_user(USER, act)


def ended(daemon: Daemon, job_id: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (r := call(daemon, "get", job_id).to_dict())["status"] in ENDED and r, timeout, f"job {job_id} to end"
    )


def test_a_slurm_job_comes_back_with_its_log_outcome_node_and_work_files(slurm_cluster, head):
    script = "echo out; echo err >&2; mkdir -p d; echo kept > d/f.txt; ln -s /etc/passwd link; exit 3"
    job = call(head, "run", {"command": ["sh", "-c", script], "backend": "slurm", "limits": {"memory_mb": 128}})
    final = ended(head, job.id)
    assert (final["status"], final["reason"], final["exit_code"]) == ("FAILED", "exit", 3), final
    assert final["node"] in slurm_cluster.nodes
    assert final["placement"]["slurm_job_id"]
    chunks, _, finished = call(head, "logs", job.id)
    streams = {(c.stream, c.data) for c in chunks}
    assert finished and ("stdout", b"out\n") in streams and ("stderr", b"err\n") in streams
    data, _ = call(head, "read_file", job.id, "d/f.txt")
    assert data == b"kept\n"
    names = {e["name"] for e in call(head, "files", job.id)["entries"]}
    assert "d" in names and "link" not in names
    slurm_id = final["placement"]["slurm_job_id"]
    fields = slurm_cluster.wait_state(slurm_id, "COMPLETED", "FAILED", "CANCELLED")
    assert fields["JobState"] == "COMPLETED"  # the relay was released
    assert fields["UserId"].startswith(f"{USER}(")


def test_stop_reaches_a_running_slurm_job(slurm_cluster, head):
    job = call(head, "run", {"command": ["sh", "-c", "echo up; sleep 300"], "backend": "slurm"})
    wait_for(lambda: b"up" in b"".join(c.data for c in call(head, "logs", job.id)[0]), 30, "the job's output")
    call(head, "stop", job.id, grace_s=0)
    final = ended(head, job.id)
    assert (final["status"], final["reason"]) == ("STOPPED", "stopped")


def test_a_bad_partition_is_a_start_error_in_sbatchs_words(head):
    job = call(head, "run", {"command": ["true"], "backend": "slurm", "placement": {"partition": "nope"}})
    final = ended(head, job.id)
    assert (final["status"], final["reason"]) == ("FAILED", "start_error")
    assert "invalid partition specified: nope" in final["error"]


def test_capabilities_show_the_slurm_backend_with_the_clusters_partitions(head):
    def described() -> dict[str, Any]:
        return call(head, "_call", "capabilities", {}, lambda r: r)

    found = wait_for(lambda: (d := described()).get("slurm", {}).get("partitions") and d, 10, "the partitions")
    assert "slurm" in found["backends"]
    assert "debug" in found["slurm"]["partitions"] and found["slurm"]["default_partition"] == "debug"
    assert found["slurm"]["problem"] is None


def test_a_job_with_a_small_memory_limit_is_not_killed_by_slurm_for_its_relays_memory(head):
    # Slurm's --mem covers the batch step, the relay; the job's own memory is the node executor's
    request = {"command": ["sh", "-c", "sleep 4; echo small"], "backend": "slurm", "limits": {"memory_mb": 8}}
    job = call(head, "run", request)
    final = ended(head, job.id)
    assert (final["status"], final["reason"]) == ("COMPLETED", "exit"), final


def test_every_ended_jobs_relay_is_released_and_its_slurm_job_done(slurm_cluster, head):
    job = call(head, "run", {"command": ["echo", "last"], "backend": "slurm"})
    ended(head, job.id)
    wait_for(lambda: not slurm_cluster._active(), 15, f"no Slurm job left running ({slurm_cluster._active()})")
