"""A queued job says where it stands and why it waits, from the cap that holds it back, in its
record (get, list, run) and in the stream of its followers."""

from __future__ import annotations

import pytest

from tests.executor.conftest import SLEEP, ask_as, run_as, wait_for


@pytest.mark.executor_flags("--Policy.max_concurrent_jobs=2", "--Policy.max_jobs_per_user=0")
def test_jobs_past_the_running_slots_say_their_place_and_that_the_slots_are_in_use(daemon):
    with daemon.client() as client:
        ids = [client.run(SLEEP).id for _ in range(4)]
        records = [client.get(job_id) for job_id in ids]
        assert [r.queue for r in records[:2]] == [None, None]
        assert records[2].queue == {"position": 1, "reason": "2 of 2 running slots in use"}
        assert records[3].queue == {"position": 2, "reason": "2 of 2 running slots in use"}
        listed = {job.id: job.queue for job in client.list()[0]}
        assert listed[ids[3]] == records[3].queue
        assert records[3].to_dict()["queue"] == records[3].queue
        client.stop(ids[0], grace_s=0)
        wait_for(lambda: client.get(ids[2]).status == "RUNNING", what="the first waiting job to start")
        assert client.get(ids[2]).queue is None
        assert client.get(ids[3]).queue == {"position": 1, "reason": "2 of 2 running slots in use"}


@pytest.mark.executor_flags("--Policy.max_jobs_per_user=2")
def test_a_job_held_back_by_its_owners_cap_says_so_in_words(daemon, users):
    for _ in range(2):
        assert run_as(daemon, "jwtest-alice", SLEEP).status == "RUNNING"
    third = run_as(daemon, "jwtest-alice", SLEEP)
    assert third.status == "QUEUED"
    assert third.queue == {"position": 1, "reason": "you have 2 jobs running, your maximum"}
    assert run_as(daemon, "jwtest-bob", SLEEP).queue is None  # bob's job is not held back by alice's cap
    assert ask_as(daemon, "jwtest-alice", "get", third.id).queue == third.queue


ONE_SLOT = "1 of 1 running slots in use"


@pytest.mark.executor_flags("--Policy.max_concurrent_jobs=1")
def test_a_followers_status_events_carry_the_place_as_it_changes(daemon):
    with daemon.client() as client:
        first, second, third = (client.run(SLEEP) for _ in range(3))
        events = client.follow(third.id)
        status = next(e for e in events if e["event"] == "status")
        assert status["job"].queue == {"position": 2, "reason": ONE_SLOT}
        client.stop(first.id, grace_s=0)
        status = next(e for e in events if e["event"] == "status")
        assert status["job"].queue == {"position": 1, "reason": ONE_SLOT}
        client.stop(second.id, grace_s=0)
        status = next(e for e in events if e["event"] == "status")
        assert (status["job"].status, status["job"].queue) == ("RUNNING", None)
        events.close()


@pytest.mark.executor_flags("--Policy.max_concurrent_jobs=1")
def test_watchers_hear_a_waiting_jobs_new_place(daemon):
    with daemon.client() as client:
        first, second, third = (client.run(SLEEP) for _ in range(3))
        watch = client.watch()
        client.stop(second.id, grace_s=0)
        heard = next(e["job"] for e in watch if e["job"].id == third.id)
        assert heard.queue == {"position": 1, "reason": ONE_SLOT}
        watch.close()
        client.stop(first.id, grace_s=0)
