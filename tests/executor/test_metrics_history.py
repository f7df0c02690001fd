"""A job's metric history: a point a second, over the protocol, after the job ended and across a
restart of the executor; seen by whoever may see the job, and no one else."""

from __future__ import annotations

import os

import pytest

from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from tests.executor.conftest import SLEEP, ask_as, run_as, wait_for

# Busy for about 3 s with 32 MiB held: a chart has CPU and memory to show.
BUSY = "import time\nheld = bytearray(32 << 20)\nend = time.time() + 3\nwhile time.time() < end:\n    pass\n"


def samples(client: Client, job_id: str) -> list[dict]:
    return client.metrics(job_id)["samples"]


def test_an_ended_jobs_history_holds_a_point_a_second_and_its_limits(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["python3", "-c", BUSY], "limits": {"memory_mb": 256, "cpu_percent": 100}})
        done = wait_for(lambda: (record := client.get(job.id)).finished and record, what="the job to end")
        history = client.metrics(job.id)
    assert done.metrics["memory_peak_bytes"] >= 32 << 20  # an ended job's record keeps the run's peaks
    assert set(history) == {"samples", "memory_limit_bytes", "cpu_limit_percent"}
    assert (history["memory_limit_bytes"], history["cpu_limit_percent"]) == (256 << 20, 100.0)
    points = history["samples"]
    assert len(points) >= 2, points
    assert all(set(point) == {"t", "cpu_percent", "memory_bytes", "pids"} for point in points)
    times = [point["t"] for point in points]
    assert times == sorted(times) and job.created_at - 1 <= times[0]
    # the busy loop, in percent of one core: all of it on an idle host, a share of it on a busy one
    assert 5 < max(point["cpu_percent"] for point in points) <= 100 * len(os.sched_getaffinity(0)) + 5
    assert max(point["memory_bytes"] for point in points) >= 32 << 20
    assert max(point["pids"] for point in points) >= 1


def test_a_running_jobs_history_grows_a_point_a_second(daemon):
    with daemon.client() as client:
        job = client.run(SLEEP)
        first = wait_for(lambda: samples(client, job.id), what="a first point")
        wait_for(lambda: len(samples(client, job.id)) > len(first), what="a second point")


@pytest.mark.executor_flags("--Policy.max_concurrent_jobs=1")
def test_a_queued_job_has_no_points_yet(daemon):
    with daemon.client() as client:
        client.run(SLEEP)
        queued = client.run(SLEEP)
        assert queued.status == "QUEUED"
        history = client.metrics(queued.id)
    assert history == {"samples": [], "memory_limit_bytes": 1024 << 20, "cpu_limit_percent": 100.0}


def test_the_history_survives_a_restart_of_the_executor(daemon):
    with daemon.client() as client:
        job = client.run(SLEEP)
        before = wait_for(lambda: len(points := samples(client, job.id)) >= 3 and points, what="three points")
    daemon.stop()
    daemon.start()
    with daemon.client() as client:
        after = wait_for(lambda: len(points := samples(client, job.id)) > len(before) and points, what="more points")
    assert after[: len(before) - 1] == before[:-1]  # the last may have been a partial point, since merged


def test_the_history_goes_with_the_deleted_job(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["sleep", "2"]})
        wait_for(lambda: client.get(job.id).finished, what="the job to end")
        assert samples(client, job.id)
        history = os.path.join(daemon.state_dir, "jobs", job.id, "metrics")
        assert os.path.isfile(history)
        client.delete(job.id)
        assert not os.path.exists(history)
        with pytest.raises(WorkerError, match="no job"):
            client.metrics(job.id)


def test_another_users_job_history_is_not_found_but_a_viewer_reads_it(daemon, users):
    job = run_as(daemon, "jwtest-alice", SLEEP)
    wait_for(lambda: ask_as(daemon, "jwtest-alice", "metrics", job.id)["samples"], what="a first point")
    assert ask_as(daemon, "jwtest-bob", "metrics", job.id) == "refused: not_found"
    assert ask_as(daemon, "jwtest-carol", "metrics", job.id)["samples"]  # carol is in the viewer group
