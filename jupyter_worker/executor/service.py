"""The executor's jobs and their states: submit, queue, start, end; stop, delete, read, watch.

    submit -> QUEUED -> (a free slot) -> RUNNING -> COMPLETED | FAILED | STOPPED
                     \\-> STOPPED (stopped while it waited)

Every state change is written to the store before anyone is told. Where a job runs is the
backend's business (executor/supervision.py): the executor starts it there, hears how it ended,
and after a restart of its own attaches to the jobs that were running. A job for a cluster backend
(Slurm: executor/slurm/) skips this host's queue: it is handed over at once and stays QUEUED, with
the cluster's reason, until the cluster runs it. Who may do what is in
executor/access.py, which finished jobs go in executor/retention.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .. import protocol
from ..errors import ErrorReason, WorkerError
from ..limits import Limits
from ..sandbox import LaunchSpec
from ..sandbox import disk as sandbox_disk
from ..sandbox.output import Chunk, read_chunks
from ..spec import (
    PLACEMENT_KEYS,
    BackendName,
    JobRecord,
    JobRequest,
    JobStatus,
    NetworkMode,
    Outcome,
    Reason,
    clip,
    default_name,
)
from . import artifacts, capacity, history, retention, waits
from .access import Caller, Role, runs_as
from .folders import JobFolder, empty_trash
from .holds import Holds
from .isolation import IsolatedNetwork
from .policy import Allowance, Policy
from .store import JobStore
from .supervision import Backend, Launch, StartError, Supervision

READ_MAX = 2 << 20  # log bytes per response: base64 of it stays well inside one protocol frame


@dataclass(frozen=True)
class ListQuery:
    """One page of the job list: statuses (None: any), newest first unless oldest_first."""

    statuses: tuple[JobStatus, ...] | None = None
    limit: int = 50
    cursor: int | None = None
    oldest_first: bool = False
    owner: str | None = None


class Executor:
    def __init__(
        self, policy: Policy, store: JobStore, backends: dict[str, Backend], state_dir: str, root_runs_as: str
    ):
        self.policy = policy
        self.store = store
        self.jobs_dir = os.path.join(state_dir, "jobs")
        self.root_runs_as = root_runs_as
        self.supervision = Supervision(backends, store, self._ended, self._progress, self._unstarted)
        self.list_watchers: set[asyncio.Queue] = set()
        self.network = IsolatedNetwork(policy)
        self.holds = Holds(store, policy.hold_grace_s, self._stop_held)
        self._tasks: list[asyncio.Task] = []
        self._copies: dict[str, asyncio.Task] = {}  # jobs whose artifacts are being copied
        self._scheduling = self._again = False
        self.capacity = capacity.host()  # what this host can give a job (executor/capacity.py)
        self._queue: dict[str, dict[str, Any]] = {}  # each QUEUED job's place and reason (_schedule_once)
        self._remote_waits: dict[str, dict[str, Any]] = {}  # a cluster's reason for each job it holds
        self._random = b""  # random bytes for the next job ids (_new_id)
        self._submitted: dict[str, LaunchSpec] = {}  # the LaunchSpec submit just stored, for _start
        os.makedirs(self.jobs_dir, mode=0o700, exist_ok=True)

    async def start(self) -> None:
        self.recover()
        self.schedule()
        self._tasks = [
            asyncio.create_task(self.supervision.flush_forever()),
            asyncio.create_task(self._retain_forever()),
            asyncio.create_task(asyncio.to_thread(empty_trash, self.jobs_dir)),
        ]

    async def close(self) -> None:
        for task in [*self._tasks, *self._copies.values()]:
            task.cancel()
        await self.supervision.starts_done()  # a job being started is running before we let go of it
        self.holds.close()
        self.supervision.close()
        self.network.close()

    def folder(self, job_id: str) -> JobFolder:
        return JobFolder.of(self.jobs_dir, job_id)

    # ---- requests

    def submit(self, caller: Caller, request: JobRequest) -> JobRecord:
        """Check the request against the policy, record it QUEUED, and start it if there is room."""
        caller.check_run()
        caller.check_owner(request.owner)
        if request.backend.value not in self.supervision.backends:
            why = "ask the administrator to enable it (docs/slurm.md)"
            raise WorkerError(ErrorReason.UNSUPPORTED, f"backend {request.backend.value!r} is not enabled here: {why}")
        self.policy.check_command(request.command)
        caller.check_sources([*request.python_prefixes, *(mount.source for mount in request.mounts)])
        place: dict[str, Any] = {}  # where --artifacts go, as resolved now (executor/artifacts.py)
        if request.artifacts is not None:
            groups = list(caller.groups)
            place = artifacts.check_destination(request.artifacts.destination, caller.uid, caller.gid, groups)
            place["umask"] = caller.umask  # the files are the requester's: made as their own would be
        owner = request.owner or caller.name
        allowance = self.policy.allowance(owner)
        local = request.backend is BackendName.LOCAL
        limits = self.policy.limits_for(request.limits, allowance)
        if local:  # a cluster node's capacity and disk are its own executor's to check
            self.capacity.check(request.limits)  # more than the host has: refused whatever the policy says
            limits = self._disk_checked(self.capacity.lowered(limits), request.limits, allowance)
        allowed = self.networks_for(caller, allowance)
        default = self.network.default_mode(self.policy.default_network, allowed)
        network = self.policy.network_for(request, default, allowed, owner)
        if local and network is NetworkMode.ISOLATED and (problem := self.network.problem()):
            raise WorkerError(ErrorReason.UNSUPPORTED, f"network 'isolated' is not available here: {problem}")
        if request.holder is not None:
            self.holds.check(caller.uid, request.holder)
        self._check_queue(owner, allowance)
        job_id = self._new_id()
        uid, gid = runs_as(caller, self.root_runs_as)
        launch = LaunchSpec(
            argv=request.command,
            env=request.env,
            cwd=request.cwd,
            uid=uid,
            gid=gid,
            requester_uid=caller.uid,
            requester_gid=caller.gid,
            requester_groups=list(caller.groups),
            limits=limits,
            mounts=request.mounts,
            network=network,
            work_dir=self.folder(job_id).work,
            python_prefixes=request.python_prefixes,
            name=job_id.replace("-", ""),
            display=request.display,
        )
        record = JobRecord(
            id=job_id,
            name=request.name or default_name(request.command[0]),
            owner=owner,
            owner_uid=caller.uid,
            command=request.command,
            status=JobStatus.QUEUED,
            limits=limits,
            network=network.value,
            created_at=time.time(),
            artifacts={**request.artifacts.to_dict(), **place} if request.artifacts else None,
            backend=request.backend.value,
            placement=request.placement.to_dict() if request.placement else None,
        )
        with self.store.batch():  # the job and its start (if it starts now): one commit, before the answer
            self.store.add(record, launch.to_dict(), request.holder)
            self._announce(record)
            if local:
                self._submitted[job_id] = launch  # not read back from the store if it starts now
                try:
                    self.schedule({owner: allowance})
                finally:
                    self._submitted.pop(job_id, None)
            else:
                self._hand_over(record, launch)
        return self._with_usage(self.store.get(job_id) or record)

    async def submit_started(self, caller: Caller, request: JobRequest) -> JobRecord:
        """submit, answered once a job that starts at once has been handed to its supervisor
        (its start runs off the event loop meanwhile): a job acknowledged RUNNING is running, and
        a kill -9 of the executor after the answer finds it and its outcome (executor/local.py)."""
        record = self.submit(caller, request)
        if record.status is JobStatus.RUNNING and record.backend == BackendName.LOCAL.value:
            await self.supervision.started(record.id)
            if record.id not in self.supervision.live:  # its start failed (or it ended already): as stored
                record = self._with_usage(self.store.get(record.id) or record)
        return record

    def _new_id(self) -> str:
        """A random (version 4) UUID, from random bytes read 64 ids at a time: one getrandom call,
        not one a job, on the submit path."""
        if not self._random:
            self._random = os.urandom(16 * 64)
        raw, self._random = self._random[:16], self._random[16:]
        return str(uuid.UUID(bytes=raw, version=4))

    def _disk_checked(self, limits: Limits, asked: Limits, allowance: Allowance) -> Limits:
        """A disk limit this host cannot enforce refuses the job when the request asked for it or a
        maximum applies to the user; one that only came from the default is dropped (the doctor and
        capabilities say disk limits are not enforced here). One that cannot fit on the state
        folder's disk even alone is refused (executor/retention.py)."""
        if limits.disk_mb is None:
            return limits
        if problem := sandbox_disk.problem():
            if asked.disk_mb is not None or allowance.maxima.get("max_disk_limit") is not None:
                raise WorkerError(ErrorReason.UNSUPPORTED, f"disk limit: cannot be enforced here: {problem}")
            return Limits(**{**limits.to_dict(), "disk_mb": None})
        free, reserve = retention.free_bytes(self.jobs_dir), self.policy.disk_reserve_bytes
        if retention.room(limits.disk_mb << 20, free, reserve, []) is retention.Room.NEVER:
            raise WorkerError(ErrorReason.UNSUPPORTED, retention.no_room_message(limits.disk_mb, free, reserve))
        return limits

    def networks_for(self, caller: Caller, allowance: Allowance) -> tuple[NetworkMode, ...]:
        """Root and admins use every mode; others what the policy allows them (Policy.allowed_networks)."""
        return tuple(NetworkMode) if caller.role is Role.ADMIN else allowance.networks

    def _check_queue(self, owner: str, allowance: Allowance) -> None:
        """A user's waiting jobs are capped (Policy.max_queued_per_user): the queue is shared."""
        cap = allowance.max_queued
        if cap and sum(r.owner == owner for r in self.store.with_status(JobStatus.QUEUED)) >= cap:
            why = "wait for some to start or stop some"
            raise WorkerError(ErrorReason.BUSY, f"{owner} already has {cap} jobs queued, the most allowed: {why}")

    def find(self, caller: Caller, job_ref: str) -> JobRecord:
        """A job by id or unique id prefix, among those the caller may see."""
        matches = self.store.ids_with_prefix(job_ref.lower(), caller.visible_owner)
        if not matches:
            raise WorkerError(ErrorReason.NOT_FOUND, f"no job {job_ref}")
        if len(matches) > 1:
            raise WorkerError(ErrorReason.AMBIGUOUS, f"{job_ref} matches more than one job; give more of the id")
        return self._current(matches[0])

    def _current(self, job_id: str) -> JobRecord:
        """The stored record, with a running job's usage now."""
        record = self.store.get(job_id)
        if record is None:
            raise WorkerError(ErrorReason.NOT_FOUND, f"no job {job_id}")
        return self._with_usage(record)

    def _with_usage(self, record: JobRecord) -> JobRecord:
        """A running job's record carries its usage now, not the last one persisted; a queued
        job's its place in the queue and why it waits."""
        record.metrics = self.supervision.usage(record.id) or record.metrics
        queued = record.status is JobStatus.QUEUED
        record.queue = (self._queue.get(record.id) or self._remote_waits.get(record.id)) if queued else None
        return record

    def list(self, caller: Caller, query: ListQuery) -> tuple[list[JobRecord], int | None]:
        statuses = [s.value for s in query.statuses] if query.statuses else None
        page_bytes = protocol.LIST_PAGE_BYTES
        records, cursor = self.store.page(
            caller.visible_owner, statuses, query.cursor, query.limit, query.oldest_first, max_bytes=page_bytes
        )
        if query.owner and caller.sees_all:
            records = [r for r in records if r.owner == query.owner]
        return [self._with_usage(record) for record in records], cursor

    def stop(self, caller: Caller, job_ref: str, grace_s: float | None = None) -> JobRecord:
        record = self.find(caller, job_ref)
        caller.check_write(record)
        return self._stop(record, caller.name, grace_s)

    def _stop_held(self, job_ids: list[str]) -> None:
        """A holder has gone: the jobs it held and that still run or wait are stopped."""
        for job_id in job_ids:
            record = self.store.get(job_id)
            if record is not None:
                self._stop(record, f"{record.owner}'s server ending")

    def _stop(self, record: JobRecord, by: str, grace_s: float | None = None) -> JobRecord:
        if record.finished:
            return record
        record.stopped_by = by
        if record.status is JobStatus.QUEUED and record.id not in self.supervision.live:
            self._finish(record, Outcome(Reason.STOPPED))
            return record
        self.store.save(record)
        self.supervision.stop(record.id, grace_s)
        return record

    def delete(self, caller: Caller, job_ref: str) -> None:
        record = self.find(caller, job_ref)
        caller.check_write(record)
        if not record.finished:
            raise WorkerError(ErrorReason.CONFLICT, f"job {record.id} is {record.status.value}; stop it first")
        self._remove(record.id)

    def _remove(self, job_id: str) -> None:
        self.folder(job_id).remove()
        self.store.delete(job_id)

    def logs(self, caller: Caller, job_ref: str, offset: int, max_bytes: int) -> tuple[JobRecord, list[Chunk], int]:
        """Log records from offset on, at most max_bytes (and READ_MAX) of them, and where to go on."""
        record = self.find(caller, job_ref)
        chunks, next_offset = read_chunks(self.folder(record.id).log, offset, min(max_bytes, READ_MAX))
        return record, chunks, next_offset

    def metrics(self, caller: Caller, job_ref: str) -> dict[str, Any]:
        """The job's metric history (executor/history.py) and the limits to draw it against: a
        running job's from memory, an ended one's from its folder, a queued one's empty."""
        record = self.find(caller, job_ref)
        samples = self.supervision.samples(record.id)
        if samples is None:
            path = os.path.join(self.folder(record.id).dir, history.FILE_NAME)
            samples = [point.to_dict() for point in history.load(path)]
        return history.reply(samples, record.limits.memory_mb, record.limits.cpu_percent)

    def work_of(self, caller: Caller, job_ref: str) -> tuple[JobFolder, tuple[int, int]]:
        """A job's folder and the uid, gid it ran as, for whoever may see the job."""
        record = self.find(caller, job_ref)
        return self.folder(record.id), self._ran_as(record)

    def _ran_as(self, record: JobRecord) -> tuple[int, int]:
        launch = self.store.launch_of(record.id)
        return launch["uid"], launch["gid"]

    async def follow(
        self, caller: Caller, job_ref: str, offset: int, raw: bool = False
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Log chunks from offset on, status changes and metrics, until the job has ended and
        its log is read to the end; in batches, each what one look found (sent together). raw: a
        log event per record, as stored (a head executor copies a node's log record by record, so
        offsets stay the same: executor/slurm/)."""
        job_id = self.find(caller, job_ref).id
        log = self.folder(job_id).log
        newsroom = self.supervision.newsroom
        with newsroom.subscribe(job_id) as news:
            status, metrics = None, None
            while True:
                # Cleared before looking, so news that comes while we look wakes the wait below.
                news.clear()
                wait_s = newsroom.watch_log(job_id, log)
                record = self._current(job_id)
                chunks, offset = read_chunks(log, offset, READ_MAX)
                batch = _raw(chunks, offset) if raw else _coalesce(chunks, offset)
                shown = None  # the record as a dict, encoded once for the status and end events
                if (record.status, record.queue) != status:  # a queued job's new place is news too
                    status = (record.status, record.queue)
                    shown = record.to_dict()
                    batch.append({"event": "status", "job": shown})
                if record.metrics and record.metrics != metrics:
                    metrics = record.metrics
                    batch.append({"event": "metrics", "metrics": metrics})
                if record.finished and not chunks:
                    batch.append({"event": "end", "job": shown or record.to_dict(), "offset": offset})
                    yield batch
                    return
                if batch:
                    yield batch
                if chunks:  # more may be there than one read takes
                    continue
                if wait_s is None:  # no timer: a quiet job's follower sleeps until there is news
                    await news.wait()
                    continue
                try:
                    await asyncio.wait_for(news.wait(), wait_s)
                except TimeoutError:
                    pass

    def watch_list(self) -> asyncio.Queue[JobRecord]:
        """A queue of every job as it changes (the caller filters what its client may see)."""
        queue: asyncio.Queue[JobRecord] = asyncio.Queue(maxsize=1000)
        self.list_watchers.add(queue)
        return queue

    def unwatch_list(self, queue: asyncio.Queue[JobRecord]) -> None:
        self.list_watchers.discard(queue)

    def _announce(self, record: JobRecord) -> None:
        snapshot = self._with_usage(dataclasses.replace(record))  # later changes are announced on their own
        self.supervision.newsroom.wake(record.id)  # its followers: the status may have changed
        for queue in list(self.list_watchers):
            try:
                queue.put_nowait(snapshot)
            except asyncio.QueueFull:
                self.list_watchers.discard(queue)

    # ---- the state machine: start, end

    def schedule(self, known: dict[str, Allowance] | None = None) -> None:
        """Start queued jobs, oldest first, while the global cap and each owner's own cap allow
        (known: allowances the caller has just read, not read again).

        A job that ends while this runs (a start error, no room for its disk) asks for another pass
        instead of scheduling inside this one, whose list of queued jobs would then be stale (and a
        job could be started or ended twice)."""
        if self._scheduling:
            self._again = True
            return
        self._scheduling = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._schedule_once(known or {})
        finally:
            self._scheduling = False

    def _schedule_once(self, known: dict[str, Allowance]) -> None:
        """One pass over the queue, oldest first; each job left waiting gets its place and the
        reason in words (executor/waits.py), announced when they change."""
        running = [job for job in self.store.running() if job[2] == BackendName.LOCAL.value]
        per_user: dict[str, int] = {}
        for _, owner, _, _ in running:
            per_user[owner] = per_user.get(owner, 0) + 1
        caps = {owner: allowance.max_jobs for owner, allowance in known.items()}
        total = len(running)
        held = [self._disk_held(job_id, disk_mb) for job_id, _, _, disk_mb in running if disk_mb is not None]
        no_room: list[JobRecord] = []
        waiting: list[tuple[JobRecord, str]] = []
        free: int | None = None  # the state folder's free bytes, read once a pass when needed
        for record in self.store.with_status(JobStatus.QUEUED):
            if record.backend != BackendName.LOCAL.value:  # in a cluster's queue, not this host's
                continue
            if total >= self.policy.max_concurrent_jobs:
                waiting.append((record, waits.slots_full(total, self.policy.max_concurrent_jobs)))
                continue
            if record.owner not in caps:
                caps[record.owner] = self.policy.allowance(record.owner).max_jobs
            if caps[record.owner] and per_user.get(record.owner, 0) >= caps[record.owner]:
                waiting.append((record, waits.own_cap(per_user[record.owner])))
                continue
            if record.limits.disk_mb is not None:  # its disk must fit: it waits, or can never start
                free = retention.free_bytes(self.jobs_dir) if free is None else free
                fits = retention.room(record.limits.disk_mb << 20, free, self.policy.disk_reserve_bytes, held)
                if fits is retention.Room.NEVER:
                    no_room.append(record)
                if fits is retention.Room.WAIT:
                    usable = max(0, free - self.policy.disk_reserve_bytes)
                    waiting.append((record, waits.disk_held(record.limits.disk_mb, usable)))
                if fits is not retention.Room.FITS:
                    continue
                held.append((record.limits.disk_mb << 20, 0))
            self._start(record)
            per_user[record.owner] = per_user.get(record.owner, 0) + 1
            total += 1
        for record in no_room:
            error = retention.no_room_message(record.limits.disk_mb, free or 0, self.policy.disk_reserve_bytes)
            self._finish(record, Outcome(Reason.START_ERROR, error=error))
        self._queued(waiting)

    def _queued(self, waiting: list[tuple[JobRecord, str]]) -> None:
        """Keep each waiting job's place and reason; tell its followers and watchers when they changed."""
        before, self._queue = self._queue, waits.numbered([(record.id, reason) for record, reason in waiting])
        for record, _ in waiting:
            if before.get(record.id) != self._queue[record.id]:
                self._announce(record)

    def _disk_held(self, job_id: str, disk_mb: int) -> tuple[int, int]:
        """A running job's disk limit and what its image takes already, in bytes."""
        return disk_mb << 20, sandbox_disk.allocated_bytes(self.folder(job_id).image)

    def _start(self, record: JobRecord) -> None:
        """QUEUED -> RUNNING; an isolated job leases its place on the bridge first."""
        spec = self._submitted.pop(record.id, None) or LaunchSpec.from_dict(self.store.launch_of(record.id))
        record.status, record.started_at = JobStatus.RUNNING, time.time()
        self.store.save(record)
        try:
            if spec.network is NetworkMode.ISOLATED:
                spec = dataclasses.replace(spec, link=self.network.lease(record.id))
                self.store.set_launch(record.id, spec.to_dict())
        except WorkerError as exc:
            self._finish(record, Outcome(Reason.START_ERROR, error=str(exc)))
            return
        # the folder, files and the engine's answer in a thread: the event loop goes on serving
        self.supervision.start_soon(record.backend, self._launch(record, spec), self._start_failed)
        self._announce(record)

    def _start_failed(self, job_id: str, why: str) -> None:
        """A start that failed in its thread: the job ends with the error."""
        record = self.store.get(job_id)
        if record is not None and not record.finished:
            self._finish(record, Outcome(Reason.START_ERROR, error=why))

    def _launch(self, record: JobRecord, spec: LaunchSpec) -> Launch:
        placement = {k: v for k, v in (record.placement or {}).items() if k in PLACEMENT_KEYS}
        return Launch(record.id, spec, self.folder(record.id), placement, record.owner)

    def _hand_over(self, record: JobRecord, spec: LaunchSpec) -> None:
        """A cluster backend's job goes to it at once; it stays QUEUED until the cluster runs it."""
        self._remote_waits[record.id] = {"position": None, "reason": f"being handed to {record.backend}"}
        try:
            self.supervision.start(record.backend, self._launch(record, spec))
        except (WorkerError, StartError) as exc:
            self._finish(record, Outcome(Reason.START_ERROR, error=str(exc)))

    def _progress(self, job_id: str, node: str | None, why: str | None, details: dict[str, str]) -> None:
        """A cluster's word on a job it holds: still waiting (why), or running on node."""
        record = self.store.get(job_id)
        if record is None or record.finished:
            return
        placement = {**(record.placement or {}), **details}
        if node is not None:
            self._remote_waits.pop(job_id, None)
            if record.status is JobStatus.RUNNING and record.node == node and placement == record.placement:
                return
            record.status, record.node, record.placement = JobStatus.RUNNING, node, placement
            record.started_at = record.started_at or time.time()
        else:
            wait = {"position": None, "reason": why or "waiting"}
            if self._remote_waits.get(job_id) == wait and placement == record.placement:
                return
            self._remote_waits[job_id], record.placement = wait, placement
        self.store.save(record)
        self._announce(record)

    def _ended(self, job_id: str, outcome: Outcome) -> None:
        """The backend's word that a running job ended (or was lost). A job with --artifacts stays
        RUNNING while its files are copied (off the event loop, bounded), so whoever sees its end
        sees them."""
        record = self.store.get(job_id)
        if record is None or job_id in self._copies:
            return
        if record.artifacts is not None and outcome.reason is not Reason.START_ERROR:
            task = asyncio.get_running_loop().create_task(self._copy_then_finish(job_id, outcome))
            self._copies[job_id] = task
            task.add_done_callback(lambda _: self._copies.pop(job_id, None))
            return
        self._finish(record, outcome)

    async def _copy_then_finish(self, job_id: str, outcome: Outcome) -> None:
        """The copy, then the end; whatever goes wrong in between is recorded as the copy's
        error, never a job left RUNNING. A copy that started before an executor restart is not
        run again (its record says it started): its folder may hold part of the files."""
        record = self.store.get(job_id)
        if record is None or record.artifacts is None:
            return
        try:
            if "started" in record.artifacts or "copied" in record.artifacts:
                copied: dict[str, Any] = {}
                if "copied" not in record.artifacts:
                    copied = {"error": "the executor restarted during the copy; not copied again"}
            else:
                record.artifacts = {**record.artifacts, "started": time.time()}
                self.store.save(record)
                copied = await artifacts.copy(self._copy_request(job_id, record))
        except Exception as exc:  # recorded on the job: the job must still end (a cancel is not one)
            copied = {"error": f"the copy failed: {exc}"}
        record = self.store.get(job_id)  # as it is now (a stop asked meanwhile was saved)
        if record is not None:
            record.artifacts = {**(record.artifacts or {}), **copied}
            self._finish(record, outcome)

    def _copy_request(self, job_id: str, record: JobRecord) -> artifacts.Request:
        """What the copying process needs, from the record and its launch."""
        assert record.artifacts is not None
        launch = self.store.launch_of(job_id)
        return artifacts.Request(
            jobs_dir=self.jobs_dir,
            job_id=job_id,
            destination=record.artifacts["destination"],
            resolved=record.artifacts["resolved"],
            identity=list(record.artifacts["identity"]),
            patterns=list(record.artifacts.get("patterns") or []),
            runs_as=(launch["uid"], launch["gid"]),
            requester=(launch["requester_uid"], launch["requester_gid"], list(launch["requester_groups"])),
            max_bytes=self.policy.max_artifacts_mb << 20,
            max_files=self.policy.max_artifacts_files,
            timeout_s=self.policy.artifacts_timeout_s,
            umask=int(record.artifacts.get("umask", 0o022)),
        )

    def _finish(self, record: JobRecord, outcome: Outcome) -> None:
        """-> COMPLETED, FAILED or STOPPED, as the outcome says; its slot goes to the next job."""
        self.network.release(record.id)
        self._remote_waits.pop(record.id, None)
        record.status = outcome.status
        record.reason, record.exit_code, record.signal = outcome.reason, outcome.exit_code, outcome.signal
        record.error = clip(outcome.error)  # a start error may echo the request: bounded in the record
        record.metrics = outcome.usage.to_dict()
        record.finished_at = time.time()
        with self.store.batch():  # its end and the starts it makes room for: one commit
            self.store.save(record)
            self._announce(record)
            self.schedule()

    # ---- after a restart, and retention

    def recover(self) -> None:
        """After a restart: follow the jobs that still run, and record how the others ended."""
        remote = [r for r in self.store.with_status(JobStatus.QUEUED) if r.backend != BackendName.LOCAL.value]
        for record in [*self.store.with_status(JobStatus.RUNNING), *remote]:
            spec = LaunchSpec.from_dict(self.store.launch_of(record.id))
            if spec.link is not None:
                self.network.reserve(record.id, spec.link)
            if record.status is JobStatus.QUEUED:
                self._remote_waits[record.id] = {"position": None, "reason": f"waiting at {record.backend}"}
            self.supervision.attach(record.backend, self._launch(record, spec))
        self.network.sweep()

    def _unstarted(self, job_id: str) -> None:
        """A job recorded RUNNING that never reached its supervisor (the executor was stopped in
        between): QUEUED again, so the scheduling after recover starts it (it never ran: it cannot
        run twice); one that was stopped meanwhile ends STOPPED instead."""
        record = self.store.get(job_id)
        if record is None or record.status is not JobStatus.RUNNING:
            return
        self.network.release(job_id)
        if record.stopped_by is not None:  # stopped while its start was under way: it never runs
            self._finish(record, Outcome(Reason.STOPPED))
            return
        record.status, record.started_at = JobStatus.QUEUED, None
        self.store.save(record)

    def retain(self, sizes: dict[str, int]) -> None:
        """Delete the finished jobs retention picks (executor/retention.py), given their folders'
        sizes (measured off the event loop: see sizes)."""
        doomed = retention.expired(
            self.store.finished_with_owners(),
            lambda job_id: sizes.get(job_id, 0),
            time.time(),
            days=self.policy.retention_days,
            max_bytes=self.policy.retention_max_bytes,
            per_user_bytes=self.policy.max_kept_disk_per_user,
        )
        for job_id in doomed:
            self._remove(job_id)

    def sizes(self, job_ids: list[str]) -> dict[str, int]:
        """The bytes each job's folder takes; blocking file work, for a thread."""
        return {job_id: self.folder(job_id).size() for job_id in job_ids}

    async def _retain_forever(self) -> None:
        while True:
            job_ids = [entry[0] for entry in self.store.finished_oldest_first()]
            self.retain(await asyncio.to_thread(self.sizes, job_ids))
            await asyncio.sleep(retention.RETAIN_EVERY_S)


def _raw(chunks: list[Chunk], end: int) -> list[dict[str, Any]]:
    """A log event per record, as stored (follow with raw)."""
    return [
        {
            "event": "log",
            "offset": chunk.offset,
            "stream": chunk.stream_name,
            "data": chunk.data,
            "next_offset": chunks[index + 1].offset if index + 1 < len(chunks) else end,
        }
        for index, chunk in enumerate(chunks)
    ]


def _coalesce(chunks: list[Chunk], end: int) -> list[dict[str, Any]]:
    """Consecutive records of one stream as one log event; next_offset is where reading goes on."""
    events: list[dict[str, Any]] = []
    for index, chunk in enumerate(chunks):
        if events and events[-1]["stream"] == chunk.stream_name:
            events[-1]["data"] += chunk.data
        else:
            events.append({"event": "log", "offset": chunk.offset, "stream": chunk.stream_name, "data": chunk.data})
        events[-1]["next_offset"] = chunks[index + 1].offset if index + 1 < len(chunks) else end
    return events
