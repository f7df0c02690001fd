"""The executor's job table (executor/store.py) on a SQLite file of the test's own, and the job
record it keeps (spec.JobRecord)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from jupyter_worker.executor.store import JobStore
from jupyter_worker.limits import Limits
from jupyter_worker.spec import JobRecord, JobStatus, Reason

ALICE, BOB = 1001, 1002
LAUNCH = {"argv": ["sleep", "1"], "uid": ALICE}


def record(job_id: str, owner_uid: int = ALICE, **fields) -> JobRecord:
    """A queued job as the executor makes one, with fields overridden."""
    values = {
        "id": job_id,
        "name": "sleep",
        "owner": {ALICE: "alice", BOB: "bob"}[owner_uid],
        "owner_uid": owner_uid,
        "command": ["sleep", "1"],
        "status": JobStatus.QUEUED,
        "limits": Limits(memory_mb="1G", timeout_s="10m"),
        "network": "none",
        "created_at": 1_700_000_000.0,
    }
    return JobRecord(**values | fields)


def finish(job: JobRecord, at: float, status: JobStatus = JobStatus.COMPLETED) -> JobRecord:
    job.status, job.reason, job.exit_code, job.finished_at = status, Reason.EXIT, 0, at
    return job


@pytest.fixture
def store(tmp_path):
    jobs = JobStore(str(tmp_path / "jobs.sqlite"))
    yield jobs
    jobs.close()


@pytest.fixture
def five(store) -> list[str]:
    """Five jobs added in order: a0 b1 a2 b3 a4 (a: alice's, b: bob's)."""
    ids = []
    for n in range(5):
        job_id = f"{'ab'[n % 2]}{n}" + "0" * 30
        store.add(record(job_id, owner_uid=(ALICE, BOB)[n % 2]), LAUNCH)
        ids.append(job_id)
    return ids


def test_a_job_added_comes_back_as_it_was_with_its_launch(store):
    job = record("f" * 32)
    store.add(job, LAUNCH)
    assert store.get(job.id) == job
    assert store.launch_of(job.id) == LAUNCH
    store.set_launch(job.id, {"argv": ["true"]})
    assert store.launch_of(job.id) == {"argv": ["true"]}


def test_unknown_jobs_are_none_and_an_empty_launch(store):
    assert store.get("nope") is None
    assert store.launch_of("nope") == {}


def test_save_replaces_the_record_and_the_columns_queries_use(store):
    job = record("f" * 32)
    store.add(job, LAUNCH)
    job.status, job.started_at, job.metrics = JobStatus.RUNNING, 1_700_000_001.0, {"cpu_seconds": 0.5}
    store.save(job)
    assert store.get(job.id) == job
    assert store.with_status(JobStatus.RUNNING) == [job]
    store.save_many([finish(job, 1_700_000_002.0)])
    assert store.get(job.id).status is JobStatus.COMPLETED
    assert store.with_status(JobStatus.RUNNING) == []
    assert store.finished_oldest_first() == [(job.id, 1_700_000_002.0)]


def test_the_table_survives_closing_and_opening_again(tmp_path):
    path = str(tmp_path / "jobs.sqlite")
    first = JobStore(path)
    first.add(record("f" * 32), LAUNCH, holder="server-1")
    first.close()
    again = JobStore(path)
    try:
        assert again.get("f" * 32) == record("f" * 32)
        assert again.release_holder(ALICE, "server-1") == ["f" * 32]
    finally:
        again.close()


def test_pages_run_newest_first_and_the_cursor_continues_with_no_gap_or_repeat(store, five):
    first, cursor = store.page(None, None, None, 2, oldest_first=False)
    assert [j.id for j in first] == [five[4], five[3]]
    second, cursor = store.page(None, None, cursor, 2, oldest_first=False)
    assert [j.id for j in second] == [five[2], five[1]]
    last, cursor = store.page(None, None, cursor, 2, oldest_first=False)
    assert [j.id for j in last] == [five[0]]
    assert cursor is None


def test_pages_may_run_oldest_first(store, five):
    first, cursor = store.page(None, None, None, 3, oldest_first=True)
    assert [j.id for j in first] == five[:3]
    rest, cursor = store.page(None, None, cursor, 3, oldest_first=True)
    assert [j.id for j in rest] == five[3:]
    assert cursor is None


def test_a_page_that_ends_exactly_at_the_last_job_has_no_cursor(store, five):
    jobs, cursor = store.page(None, None, None, 5, oldest_first=False)
    assert len(jobs) == 5
    assert cursor is None


def test_pages_filter_by_owner_and_status(store, five):
    alices, _ = store.page(ALICE, None, None, 10, oldest_first=True)
    assert [j.id for j in alices] == [five[0], five[2], five[4]]
    store.save(finish(store.get(five[2]), 1_700_000_100.0))
    done, _ = store.page(ALICE, [JobStatus.COMPLETED.value], None, 10, oldest_first=True)
    assert [j.id for j in done] == [five[2]]
    waiting, _ = store.page(None, [JobStatus.QUEUED.value, JobStatus.RUNNING.value], None, 10, oldest_first=True)
    assert [j.id for j in waiting] == [five[0], five[1], five[3], five[4]]


def test_with_status_lists_jobs_in_the_order_they_were_added(store, five):
    for job_id in (five[3], five[1]):
        job = store.get(job_id)
        job.status = JobStatus.RUNNING
        store.save(job)
    assert [j.id for j in store.with_status(JobStatus.RUNNING)] == [five[1], five[3]]
    assert [j.id for j in store.with_status(JobStatus.QUEUED, JobStatus.RUNNING)] == five


def test_finished_jobs_come_oldest_finish_first(store, five):
    for job_id, at in ((five[0], 30.0), (five[1], 10.0), (five[2], 20.0)):
        store.save(finish(store.get(job_id), at))
    assert store.finished_oldest_first() == [(five[1], 10.0), (five[2], 20.0), (five[0], 30.0)]


def test_id_prefixes_match_within_an_owner_and_wildcards_are_plain_text(store, five):
    assert store.ids_with_prefix("a", None, limit=10) == [five[0], five[2], five[4]]
    assert store.ids_with_prefix("a", BOB, limit=10) == []
    assert store.ids_with_prefix("b1", BOB) == [five[1]]
    assert len(store.ids_with_prefix("", None)) == 2  # the caller asks for two to tell ambiguity
    assert store.ids_with_prefix("%", None, limit=10) == store.ids_with_prefix("", None, limit=10)
    assert store.ids_with_prefix("_1", None) == store.ids_with_prefix("1", None) == []


def test_delete_removes_the_job_and_its_holders_claim(store):
    store.add(record("a" * 32), LAUNCH, holder="server-1")
    store.add(record("b" * 32), LAUNCH, holder="server-1")
    store.delete("a" * 32)
    assert store.get("a" * 32) is None
    assert store.release_holder(ALICE, "server-1") == ["b" * 32]


def test_holders_are_kept_per_user_until_released(store):
    store.add_holder(ALICE, "server-1")
    store.add_holder(ALICE, "server-1")
    store.add_holder(BOB, "server-1")
    assert sorted(store.holders()) == [(ALICE, "server-1"), (BOB, "server-1")]
    store.add(record("a" * 32), LAUNCH, holder="server-1")
    store.add(record("b" * 32, owner_uid=BOB), LAUNCH, holder="server-1")
    store.add(record("c" * 32), LAUNCH)
    assert store.release_holder(ALICE, "server-1") == ["a" * 32]
    assert store.holders() == [(BOB, "server-1")]
    assert store.release_holder(ALICE, "server-1") == []


def test_a_job_that_cannot_be_added_leaves_no_claim_behind(store):
    store.add(record("a" * 32), LAUNCH, holder="server-1")
    with pytest.raises(sqlite3.IntegrityError):
        store.add(record("a" * 32), LAUNCH, holder="server-2")
    assert store.release_holder(ALICE, "server-2") == []
    assert store.release_holder(ALICE, "server-1") == ["a" * 32]


def test_a_record_survives_the_trip_through_json():
    job = finish(record("f" * 32, metrics={"memory_peak_bytes": 1 << 20}), 1_700_000_009.0)
    job.started_at, job.stopped_by = 1_700_000_001.0, None
    sent = json.loads(json.dumps(job.to_dict()))
    assert sent["status"] == "COMPLETED"
    assert sent["reason"] == "exit"
    assert sent["limits"]["memory_mb"] == 1024
    assert sent["status_text"] == "exit code 0"
    assert JobRecord.from_dict(sent) == job


def test_a_client_reads_records_of_newer_executors():
    """Fields and limits this version does not know are left out, not refused."""
    sent = record("f" * 32).to_dict() | {"gpu": "none", "priority": "default"}
    sent["limits"] = sent["limits"] | {"gpus": 1}
    assert JobRecord.from_dict(sent) == record("f" * 32)


def test_a_record_says_how_it_ended_and_what_a_shell_would_report():
    job = record("f" * 32)
    assert (job.finished, job.ending, job.shell_code) == (False, "queued", 0)
    job.status, job.reason, job.signal = JobStatus.FAILED, Reason.TIMEOUT, 9
    assert (job.finished, job.ending, job.shell_code) == (True, "timed out after 10m", 137)
