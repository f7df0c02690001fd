"""The executor's job lifecycle: submit, queue, start, watch, stop, delete, recover, retain.

Every state change is written to the store before anyone is told. Each running job's supervisor
owns the job's output (its log file) and its outcome (its result file) and keeps a control socket
in the job's folder, so a restarted executor reattaches to running jobs and learns how the others
ended; a job whose supervisor and result are both gone is recorded as lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pwd
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorReason, WorkerError
from ..sandbox import CaptureFiles, LaunchSpec, RunningJob, Sandbox, SandboxError, unix_address
from ..sandbox.output import read_chunks
from ..spec import JobRecord, JobRequest, JobStatus, NetworkMode, Outcome, Reason
from . import workfiles
from .holds import Holds
from .isolation import IsolatedNetwork
from .policy import Policy
from .store import JobStore

METRICS_FLUSH_S = 2.0
FOLLOW_POLL_S = 0.05
READ_MAX = 2 << 20  # log bytes per response: base64 of it stays well inside one protocol frame


@dataclass(frozen=True)
class Caller:
    """Who is asking: the uid the kernel vouches for (SO_PEERCRED), and the role it has here."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    role: str

    @property
    def sees_all(self) -> bool:
        return self.role in ("admin", "viewer")


@dataclass
class _Live:
    """A job with a supervisor: its control connection, and who waits for news of it."""

    handle: RunningJob
    waiters: set[asyncio.Event] = field(default_factory=set)
    dirty: bool = False


class Executor:
    def __init__(self, policy: Policy, store: JobStore, sandbox: Sandbox, state_dir: str, root_runs_as: str):
        self.policy = policy
        self.store = store
        self.sandbox = sandbox
        self.jobs_dir = os.path.join(state_dir, "jobs")
        self.root_runs_as = root_runs_as
        self.live: dict[str, _Live] = {}
        self.list_watchers: set[asyncio.Queue] = set()
        self.network = IsolatedNetwork(policy)
        self.holds = Holds(store, policy.hold_grace_s, self._stop_held)
        self._tasks: list[asyncio.Task] = []
        os.makedirs(self.jobs_dir, mode=0o711, exist_ok=True)

    async def start(self) -> None:
        self.recover()
        self.schedule()
        self._tasks = [asyncio.create_task(self._flush_metrics()), asyncio.create_task(self._retain())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.holds.close()
        for job_id in list(self.live):
            self._detach(job_id)
        self.flush()
        self.network.close()

    def paths(self, job_id: str) -> dict[str, str]:
        folder = os.path.join(self.jobs_dir, job_id)
        return {name: os.path.join(folder, name) for name in ("work", "log", "result", "control")} | {"dir": folder}

    # ---- requests

    def submit(self, caller: Caller, request: JobRequest) -> JobRecord:
        """Check the request against the policy, record it QUEUED, and start it if there is room."""
        if caller.role == "viewer":
            raise WorkerError(ErrorReason.FORBIDDEN, "viewers may read jobs but not run them")
        self.policy.check_command(request.command)
        limits = self.policy.limits_for(request.limits, self.policy.allowance(request.owner or caller.name))
        network = self.policy.network_for(request, self.network.default_mode(self.policy.default_network))
        if network is NetworkMode.ISOLATED and self.network.problem():
            problem = self.network.problem()
            raise WorkerError(ErrorReason.UNSUPPORTED, f"network 'isolated' is not available here: {problem}")
        if request.owner is not None and caller.role != "admin":
            raise WorkerError(ErrorReason.FORBIDDEN, "only root or an admin may name another owner")
        if request.holder is not None:
            self.holds.check(caller.uid, request.holder)
        job_id = str(uuid.uuid4())
        run_uid, run_gid = self._runs_as(caller)
        launch = LaunchSpec(
            argv=request.command, env=request.env, cwd=request.cwd, uid=run_uid, gid=run_gid,
            requester_uid=caller.uid, requester_gid=caller.gid, requester_groups=list(caller.groups),
            limits=limits, mounts=request.mounts, network=network, work_dir=self.paths(job_id)["work"],
            python_prefixes=request.python_prefixes, name=job_id.replace("-", ""),
        )  # fmt: skip
        record = JobRecord(
            id=job_id, name=request.name or os.path.basename(request.command[0]), owner=request.owner or caller.name,
            owner_uid=caller.uid, command=request.command, status=JobStatus.QUEUED, limits=limits,
            network=network.value, created_at=time.time(),
        )  # fmt: skip
        self.store.add(record, launch.to_dict(), request.holder)
        self._announce(record)
        self.schedule()
        return self.store.get(job_id) or record

    def _runs_as(self, caller: Caller) -> tuple[int, int]:
        if caller.uid != 0:
            return caller.uid, caller.gid
        try:
            entry = pwd.getpwnam(self.root_runs_as)
        except KeyError:
            raise WorkerError(ErrorReason.MISCONFIGURED, f"root_runs_as: no user {self.root_runs_as!r}") from None
        return entry.pw_uid, entry.pw_gid

    def find(self, caller: Caller, job_ref: str) -> JobRecord:
        """A job by id or unique id prefix, among those the caller may see."""
        if not isinstance(job_ref, str) or not job_ref.replace("-", "").isalnum() or len(job_ref) > 36:
            raise WorkerError(ErrorReason.BAD_REQUEST, "a job id is a UUID or a prefix of one")
        visible = None if caller.sees_all else caller.uid
        matches = self.store.ids_with_prefix(job_ref.lower(), visible)
        if not matches:
            raise WorkerError(ErrorReason.NOT_FOUND, f"no job {job_ref}")
        if len(matches) > 1:
            raise WorkerError(ErrorReason.AMBIGUOUS, f"{job_ref} matches more than one job; give more of the id")
        record = self.store.get(matches[0])
        assert record is not None
        return self._live(record)

    def _live(self, record: JobRecord) -> JobRecord:
        """A running job's record carries its current usage, not the last one persisted."""
        if record.id in self.live:
            record.metrics = self.metrics_of(record.id) or record.metrics
        return record

    def _check_write(self, caller: Caller, record: JobRecord) -> None:
        if caller.role == "admin" or (caller.role != "viewer" and caller.uid == record.owner_uid):
            return
        raise WorkerError(ErrorReason.FORBIDDEN, f"not permitted to change job {record.id}")

    def list(self, caller: Caller, query: dict) -> tuple[list[JobRecord], int | None]:
        owner = None if caller.sees_all else caller.uid
        statuses = query.get("status") or None
        if isinstance(statuses, str):
            statuses = [statuses]
        if statuses is not None and not all(s in JobStatus.__members__ for s in statuses):
            raise WorkerError(ErrorReason.BAD_REQUEST, f"status: one or more of {', '.join(JobStatus.__members__)}")
        limit = query.get("limit", 50)
        cursor = query.get("cursor")
        if not isinstance(limit, int) or not 1 <= limit <= 1000 or not (cursor is None or isinstance(cursor, int)):
            raise WorkerError(ErrorReason.BAD_REQUEST, "limit: 1 to 1000; cursor: the number a previous page gave")
        records, next_cursor = self.store.page(owner, statuses, cursor, limit, query.get("order") == "oldest")
        if query.get("owner") and caller.sees_all:
            records = [r for r in records if r.owner == query["owner"]]
        return [self._live(r) for r in records], next_cursor

    def stop(self, caller: Caller, job_ref: str, grace_s: float | None = None) -> JobRecord:
        record = self.find(caller, job_ref)
        self._check_write(caller, record)
        return self._stop(record, caller.name, grace_s)

    def _stop_held(self, job_ids: list[str]) -> None:
        """A holder has gone: the jobs it held and that still run or wait are stopped."""
        for job_id in job_ids:
            record = self.store.get(job_id)
            if record is not None:
                self._stop(self._live(record), f"{record.owner}'s server ending")

    def _stop(self, record: JobRecord, by: str, grace_s: float | None = None) -> JobRecord:
        if record.finished:
            return record
        record.stopped_by = by
        if record.status is JobStatus.QUEUED:
            self._finish(record, Outcome(Reason.STOPPED))
            return record
        self.store.save(record)
        live = self.live.get(record.id)
        if live is not None:
            live.handle.stop(grace_s)
        return record

    def delete(self, caller: Caller, job_ref: str) -> None:
        record = self.find(caller, job_ref)
        self._check_write(caller, record)
        if not record.finished:
            raise WorkerError(ErrorReason.CONFLICT, f"job {record.id} is {record.status.value}; stop it first")
        self._remove(record.id)

    def _remove(self, job_id: str) -> None:
        shutil.rmtree(self.paths(job_id)["dir"], ignore_errors=True)
        self.store.delete(job_id)

    def logs(self, caller: Caller, job_ref: str, offset: int, max_bytes: int) -> tuple[JobRecord, list, int]:
        record = self.find(caller, job_ref)
        if not isinstance(offset, int) or offset < 0 or not isinstance(max_bytes, int) or max_bytes < 1:
            raise WorkerError(ErrorReason.BAD_REQUEST, "offset: a whole number >= 0; max_bytes: >= 1")
        chunks, next_offset = read_chunks(self.paths(record.id)["log"], offset, min(max_bytes, READ_MAX))
        return record, chunks, next_offset

    def work_listing(self, caller: Caller, job_ref: str, path: Any) -> dict[str, Any]:
        """A folder of the job's /work, for whoever may see the job."""
        record = self.find(caller, job_ref)
        return workfiles.listing(self.paths(record.id)["work"], path, self._ran_as(record))

    def work_read(self, caller: Caller, job_ref: str, path: Any, offset: Any, max_bytes: Any) -> tuple[bytes, int]:
        record = self.find(caller, job_ref)
        return workfiles.read(self.paths(record.id)["work"], path, offset, max_bytes, self._ran_as(record))

    def _ran_as(self, record: JobRecord) -> tuple[int, int]:
        launch = self.store.launch_of(record.id)
        return launch["uid"], launch["gid"]

    async def follow(self, caller: Caller, job_ref: str, offset: int) -> AsyncIterator[dict]:
        """Log chunks from offset on, status changes and metrics, until the job has ended and
        its log is read to the end."""
        record = self.find(caller, job_ref)
        news = asyncio.Event()
        live = self.live.get(record.id)
        if live:
            live.waiters.add(news)
        try:
            status, metrics = None, None
            while True:
                record, chunks, offset = self.logs(caller, record.id, offset, READ_MAX)
                for event in _coalesce(chunks, offset):
                    yield event
                if record.status != status:
                    status = record.status
                    yield {"event": "status", "job": record.to_dict()}
                current = self.metrics_of(record.id) or record.metrics
                if current and current != metrics:
                    metrics = current
                    yield {"event": "metrics", "metrics": metrics}
                if record.finished and not chunks:
                    yield {"event": "end", "job": record.to_dict(), "offset": offset}
                    return
                if not chunks:
                    news.clear()
                    try:
                        await asyncio.wait_for(news.wait(), FOLLOW_POLL_S)
                    except TimeoutError:
                        pass
        finally:
            if live:
                live.waiters.discard(news)

    def watch_list(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        self.list_watchers.add(queue)
        return queue

    def unwatch_list(self, queue: asyncio.Queue) -> None:
        self.list_watchers.discard(queue)

    # ---- scheduling and supervision

    def schedule(self) -> None:
        """Start queued jobs, oldest first, while the global cap and each owner's own cap allow."""
        running = self.store.with_status(JobStatus.RUNNING)
        per_user: dict[str, int] = {}
        for record in running:
            per_user[record.owner] = per_user.get(record.owner, 0) + 1
        caps: dict[str, int] = {}
        slots = self.policy.max_concurrent_jobs - len(running)
        for record in self.store.with_status(JobStatus.QUEUED):
            if slots <= 0:
                break
            if record.owner not in caps:
                caps[record.owner] = self.policy.allowance(record.owner).max_jobs
            if caps[record.owner] and per_user.get(record.owner, 0) >= caps[record.owner]:
                continue
            self._launch(record)
            per_user[record.owner] = per_user.get(record.owner, 0) + 1
            slots -= 1

    def _launch(self, record: JobRecord) -> None:
        launch = LaunchSpec.from_dict(self.store.launch_of(record.id))
        paths = self.paths(record.id)
        record.status, record.started_at = JobStatus.RUNNING, time.time()
        self.store.save(record)
        try:
            if launch.network is NetworkMode.ISOLATED:
                launch = dataclasses.replace(launch, link=self.network.lease(record.id))
                self.store.set_launch(record.id, launch.to_dict())
            handle = self._start_supervised(launch, paths)
        except (OSError, WorkerError, SandboxError) as exc:
            self._finish(record, Outcome(Reason.START_ERROR, error=str(exc)))
            return
        self._watch(record.id, handle)
        self._announce(record)

    def _start_supervised(self, launch: LaunchSpec, paths: dict[str, str]) -> RunningJob:
        os.makedirs(paths["dir"], mode=0o711, exist_ok=True)
        os.makedirs(paths["work"], mode=0o700, exist_ok=True)
        os.chown(paths["work"], launch.uid, launch.gid)
        flags = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        log = os.open(paths["log"], flags | os.O_WRONLY | os.O_APPEND, 0o600)
        result = os.open(paths["result"], flags | os.O_WRONLY, 0o600)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            if os.path.exists(paths["control"]):
                os.unlink(paths["control"])
            with unix_address(paths["control"]) as address:
                listener.bind(address)
            os.chmod(paths["control"], 0o600)
            listener.listen(8)
            return self.sandbox.launch_captured(
                launch, CaptureFiles(log, result, listener.fileno(), self.policy.log_max_bytes)
            )
        finally:
            os.close(log)
            os.close(result)
            listener.close()

    def _watch(self, job_id: str, handle: RunningJob) -> None:
        self.live[job_id] = _Live(handle)
        handle.control.setblocking(False)
        asyncio.get_running_loop().add_reader(handle.fileno(), self._on_event, job_id)

    def _on_event(self, job_id: str) -> None:
        live = self.live.get(job_id)
        if live is None:
            return
        try:
            data = live.handle.control.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        record = self.store.get(job_id)
        if record is None:
            self._detach(job_id)
            return
        try:
            event = live.handle.handle(data)
        except SandboxError:
            self._detach(job_id)
            self._settle(record)
            return
        if event["event"] == "metrics":
            live.dirty = True
        elif event["event"] == "exit":
            self._detach(job_id)
            self._finish(record, live.handle.outcome)  # type: ignore[arg-type]
            return
        for waiter in live.waiters:
            waiter.set()

    def _detach(self, job_id: str) -> None:
        live = self.live.pop(job_id, None)
        if live is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(live.handle.fileno())
        except (RuntimeError, ValueError):
            pass
        live.handle.close()
        for waiter in live.waiters:
            waiter.set()

    def metrics_of(self, job_id: str) -> dict:
        live = self.live.get(job_id)
        return live.handle.usage.to_dict() if live else {}

    def _finish(self, record: JobRecord, outcome: Outcome) -> None:
        self.network.release(record.id)
        record.status = outcome.status
        record.reason, record.exit_code, record.signal = outcome.reason, outcome.exit_code, outcome.signal
        record.error = outcome.error
        record.metrics = outcome.usage.to_dict()
        record.finished_at = time.time()
        self.store.save(record)
        self._announce(record)
        self.schedule()

    def _announce(self, record: JobRecord) -> None:
        for queue in list(self.list_watchers):
            try:
                queue.put_nowait(record.to_dict())
            except asyncio.QueueFull:
                self.list_watchers.discard(queue)

    def flush(self) -> None:
        """Persist the latest metrics of running jobs (about every METRICS_FLUSH_S)."""
        dirty = []
        for job_id, live in self.live.items():
            if live.dirty:
                record = self.store.get(job_id)
                if record is not None and not record.finished:
                    record.metrics = live.handle.usage.to_dict()
                    dirty.append(record)
                live.dirty = False
        if dirty:
            self.store.save_many(dirty)

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.flush()

    # ---- crash recovery and retention

    def recover(self) -> None:
        """After a restart: reattach to running jobs, record how the others ended, or call them lost."""
        for record in self.store.with_status(JobStatus.RUNNING):
            paths = self.paths(record.id)
            try:
                handle = RunningJob.attach(paths["control"], record.id)
            except OSError:
                self._settle(record)
                continue
            link = LaunchSpec.from_dict(self.store.launch_of(record.id)).link
            if link is not None:
                self.network.reserve(record.id, link)
            self._watch(record.id, handle)
        self.network.sweep()

    def _settle(self, record: JobRecord) -> None:
        """A job with no supervisor to talk to: its result file says how it ended, or it is lost."""
        result = _read_result(self.paths(record.id)["result"])
        if "reason" in result:
            outcome = Outcome.from_dict(result)
        else:
            outcome = Outcome(Reason.LOST, error="the job's supervisor vanished without an outcome")
            if result.get("cgroup"):
                self.sandbox.remove_leftovers(result["cgroup"])
        self._finish(record, outcome)

    def retain(self) -> None:
        """Delete finished jobs older than retention_days, then the oldest past retention_max_bytes."""
        now = time.time()
        finished = self.store.finished_oldest_first()
        keep_after = now - self.policy.retention_days * 86400 if self.policy.retention_days else None
        sizes = {job_id: _folder_size(self.paths(job_id)["dir"]) for job_id, _ in finished}
        total = sum(sizes.values())
        for job_id, finished_at in finished:
            too_old = keep_after is not None and finished_at < keep_after
            if too_old or total > self.policy.retention_max_bytes:
                self._remove(job_id)
                total -= sizes[job_id]

    async def _retain(self) -> None:
        while True:
            self.retain()
            await asyncio.sleep(60)


def _coalesce(chunks: list, end: int) -> list[dict]:
    """Consecutive records of one stream as one log event; next_offset is where reading goes on."""
    events: list[dict] = []
    for index, chunk in enumerate(chunks):
        if events and events[-1]["stream"] == chunk.stream_name:
            events[-1]["data"] += chunk.data
        else:
            events.append({"event": "log", "offset": chunk.offset, "stream": chunk.stream_name, "data": chunk.data})
        events[-1]["next_offset"] = chunks[index + 1].offset if index + 1 < len(chunks) else end
    return events


def _read_result(path: str) -> dict:
    """The supervisor's result file: the outcome once the job ended, before that its cgroup name."""
    try:
        with open(path) as f:
            data = json.loads(f.read() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _folder_size(path: str) -> int:
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total
