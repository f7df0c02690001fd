"""The executor's rules that need no root: who may do what (access.py), what the socket accepts
(server.py's decoding), which finished jobs go (retention.py), a job's folder (folders.py), and
the supervision seam driven by a backend of the test's own (supervision.py)."""

from __future__ import annotations

import asyncio
import os

import pytest

from jupyter_worker.errors import WorkerError
from jupyter_worker.executor import retention, server
from jupyter_worker.executor.access import Caller, Role
from jupyter_worker.executor.folders import JobFolder
from jupyter_worker.executor.service import ListQuery
from jupyter_worker.executor.store import JobStore
from jupyter_worker.executor.supervision import Backend, JobEvents, JobHandle, Launch, Supervision
from jupyter_worker.limits import Limits
from jupyter_worker.sandbox import LaunchSpec
from jupyter_worker.spec import JobRecord, JobStatus, Outcome, Reason, Usage

ALICE, BOB = 1001, 1002


def caller(role: Role, uid: int = ALICE) -> Caller:
    return Caller(uid, uid, (uid,), f"user{uid}", role)


def record(owner_uid: int = ALICE, job_id: str = "0f" * 16) -> JobRecord:
    return JobRecord(
        job_id, "sleep", f"user{owner_uid}", owner_uid, ["sleep", "1"], JobStatus.RUNNING, Limits(), "none", 0.0
    )


def reason_of(action) -> str | None:
    try:
        action()
    except WorkerError as exc:
        return exc.reason.value
    return None


@pytest.mark.parametrize(
    ("role", "uid", "see", "change"),
    [
        (Role.USER, ALICE, True, None),
        (Role.USER, BOB, False, "forbidden"),
        (Role.ADMIN, BOB, True, None),
        (Role.VIEWER, BOB, True, "forbidden"),
        (Role.VIEWER, ALICE, True, "forbidden"),
    ],
)
def test_users_see_and_change_their_own_jobs_admins_every_job_and_viewers_see_all_but_change_none(
    role, uid, see, change
):
    who = caller(role, uid)
    assert who.may_see(record()) is see
    assert reason_of(lambda: who.check_write(record())) == change
    assert who.visible_owner == (None if role is not Role.USER else uid)


def test_viewers_may_not_run_and_only_admins_name_another_owner():
    assert reason_of(caller(Role.VIEWER).check_run) == "forbidden"
    assert reason_of(caller(Role.USER).check_run) is None
    assert reason_of(lambda: caller(Role.USER).check_owner("hub-user")) == "forbidden"
    assert reason_of(lambda: caller(Role.ADMIN).check_owner("hub-user")) is None
    assert reason_of(lambda: caller(Role.USER).check_owner(None)) is None


def test_a_list_request_is_decoded_once_with_defaults_for_absent_and_null_fields():
    assert server._list_query({}) == ListQuery()
    client_defaults = {"status": None, "limit": 50, "cursor": None, "order": "newest", "owner": None}
    assert server._list_query(client_defaults) == ListQuery()
    query = server._list_query({"status": "RUNNING", "limit": 5, "cursor": 7, "order": "oldest", "owner": "al"})
    assert query == ListQuery((JobStatus.RUNNING,), 5, 7, True, "al")


@pytest.mark.parametrize(
    "fields",
    [
        {"status": ["DONE"]},
        {"status": 3},
        {"limit": 0},
        {"limit": 1001},
        {"limit": True},
        {"cursor": "x"},
        {"owner": 1},
    ],
)
def test_a_bad_list_field_is_a_bad_request(fields):
    assert reason_of(lambda: server._list_query(fields)) == "bad_request"


def test_job_ids_offsets_and_grace_periods_are_checked_at_the_boundary():
    assert server._job_ref({"job_id": "0f0f-12"}) == "0f0f-12"
    for bad in (7, None, "../etc", "a" * 37, "50%"):
        assert reason_of(lambda bad=bad: server._job_ref({"job_id": bad})) == "bad_request"
    assert server._whole({}, "offset", 0, 0) == 0
    assert server._whole({"offset": 12}, "offset", 0, 0) == 12
    for bad in (-1, 1.5, True, "3"):
        assert reason_of(lambda bad=bad: server._whole({"offset": bad}, "offset", 0, 0)) == "bad_request"
    assert server._grace({}) is None and server._grace({"grace_s": 0.5}) == 0.5
    assert reason_of(lambda: server._grace({"grace_s": -1})) == "bad_request"


def test_retention_deletes_jobs_past_their_age_then_the_oldest_past_the_size_cap():
    day = retention.DAY_S
    now = 100 * day
    finished = [("old", now - 20 * day), ("big", now - 5 * day), ("mid", now - 2 * day), ("new", now - 1)]
    sizes = {"old": 10, "big": 500, "mid": 300, "new": 300}.__getitem__
    assert retention.expired(finished, sizes, now, days=14, max_bytes=10_000) == ["old"]
    assert retention.expired(finished, sizes, now, days=14, max_bytes=700) == ["old", "big"]
    assert retention.expired(finished, sizes, now, days=0, max_bytes=10_000) == []
    assert retention.expired(finished, sizes, now, days=0, max_bytes=0) == ["old", "big", "mid", "new"]


def test_a_job_folder_names_its_files_and_counts_their_bytes(tmp_path):
    folder = JobFolder.of(str(tmp_path), "abc")
    assert (folder.work, folder.log, folder.result, folder.control) == tuple(
        os.path.join(tmp_path, "abc", name) for name in ("work", "log", "result", "control")
    )
    folder.make(os.getuid(), os.getgid())
    with open(folder.log, "wb") as f:
        f.write(b"x" * 100)
    with open(os.path.join(folder.work, "out"), "wb") as f:
        f.write(b"y" * 20)
    os.symlink("/etc/passwd", os.path.join(folder.work, "link"))
    assert folder.size() == sum(
        os.lstat(p).st_blocks * 512 for p in (folder.log, f"{folder.work}/out", f"{folder.work}/link")
    )
    folder.remove()
    assert not os.path.exists(folder.dir)


class _Handle(JobHandle):
    def __init__(self):
        self.stopped: list[float | None] = []
        self.attached = True

    def stop(self, grace_s: float | None) -> None:
        self.stopped.append(grace_s)

    def detach(self) -> None:
        self.attached = False


class _ElsewhereBackend(Backend):
    """Jobs that run somewhere the test reports for: the seam as a second backend would use it."""

    def __init__(self):
        self.handles: dict[str, _Handle] = {}
        self.events: JobEvents | None = None

    def start(self, launch: Launch, events: JobEvents) -> JobHandle:
        self.events = events
        self.handles[launch.id] = _Handle()
        return self.handles[launch.id]

    def attach(self, launch: Launch, events: JobEvents) -> JobHandle | None:
        events.lost(launch.id, "gone while nobody watched")
        return None


def test_supervision_follows_a_job_through_any_backend_and_keeps_its_usage(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    job = record()
    store.add(job, {})
    ended: list[tuple[str, Outcome]] = []
    backend = _ElsewhereBackend()
    supervision = Supervision({"elsewhere": backend}, store, lambda job_id, outcome: ended.append((job_id, outcome)))
    launch = Launch(job.id, LaunchSpec(argv=["sleep", "1"], uid=ALICE, gid=ALICE), JobFolder(str(tmp_path)))

    async def scenario() -> None:
        supervision.start("elsewhere", launch)
        with supervision.news(job.id) as news:
            assert supervision.usage(job.id) == {}
            backend.events.metrics(job.id, Usage(cpu_seconds=1.5))
            assert news.is_set() and supervision.usage(job.id)["cpu_seconds"] == 1.5
        supervision.flush()
        assert store.get(job.id).metrics["cpu_seconds"] == 1.5
        supervision.stop(job.id, 2.0)
        backend.events.exited(job.id, Outcome(Reason.STOPPED))
        supervision.attach("elsewhere", launch)

    asyncio.run(scenario())
    assert backend.handles[job.id].stopped == [2.0] and not backend.handles[job.id].attached
    assert [(job_id, outcome.reason) for job_id, outcome in ended] == [(job.id, Reason.STOPPED), (job.id, Reason.LOST)]
    assert ended[1][1].error == "gone while nobody watched"
    assert supervision.live == {}
