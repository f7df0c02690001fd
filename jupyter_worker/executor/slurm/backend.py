"""SlurmBackend: a head executor's jobs placed on a Slurm cluster (docs/slurm.md).

A job is submitted with `sbatch` run as the job's own uid, gid and groups (munge vouches for that
uid to slurmctld; root's jobs go as the user root's jobs run as). Its batch step is the relay
(jupyter_worker/slurmstep.py): it hands the job to the jupyter-worker executor on the node, so the
job runs in the same sandbox with the same limits as a local one, and publishes a TCP port in the
Slurm job's Comment. One poll task reads squeue (its light text form, by job id) for all the
backend's jobs, every start_poll_s while one is starting, else every poll_s: a pending job is
reported waiting with Slurm's reason in words, a running one running on its node; once the Comment
names the port, a follower connects through the relay (relaylink.open_relay: an HMAC
challenge on the job's secret) and speaks the executor protocol to the node executor: `follow`
with raw records, each written verbatim into the head job's log (so offsets are the node's), the
node's metrics forwarded; at the node job's end /work is pulled back into the head's folder, the
outcome is reported and the relay is released (it exits 0).

The job's Slurm side is kept in `slurm.json` in its folder (0600, root's), so a restarted head
attaches again: to the Slurm job by its id (or, if the head died inside sbatch, by its name and
user), to the node job through the relay, resuming the log from the head log's size.

Nothing here blocks the event loop: Slurm's commands are asyncio subprocesses, file writes of the
pulled /work run in threads; log records are appended as they come (small writes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from ... import protocol, relaylink, transfer
from ...errors import WorkerError
from ...sandbox import LaunchSpec
from ...sandbox.output import HEADER, MAX_RECORD, NOTICE, STDOUT, STREAM_NUMBERS
from ...spec import Outcome, Reason
from .. import retention
from ..supervision import Backend, JobEvents, JobHandle, Launch, StartError
from . import commands
from .commands import SlurmError, SlurmState
from .config import SlurmBackendConfig

log = logging.getLogger(__name__)

SLURM_FILE = "slurm.json"
MISSING_POLLS = 3  # polls (each poll_s apart at least) a job may be absent from squeue before it counts as gone
START_WINDOW_S = 5.0  # a job is looked at every start_poll_s this long after its submission or its start
FOLLOW_RETRY_S = 2.0  # after the relay could not be followed, while Slurm says it runs
RELEASE_TRIES = 20
FINAL_WAIT_S = 30.0  # a follower still connected this long after Slurm said the job ended is given up
PIECE = 1 << 20  # bytes of a /work file read in one request
MAX_PULLED_ENTRIES = 100_000  # files and folders brought back, at most
MAX_PATH_BYTES = 4000
MAX_PULLED_DEPTH = 100  # folders within folders: the walk is recursive, Python's stack is not endless
LOG_SLACK = 1 << 20  # the head's log may pass the log cap by the node's final notices
DESCRIBE_S = 30.0  # how old the partitions shown by describe() may be
STOP_THROUGH_RELAY_S = 15.0  # a stop the relay's side does not answer in time goes to scancel


class SlurmBackend(Backend):
    """Jobs on a Slurm cluster, each run by the jupyter-worker executor of its node."""

    name = "slurm"

    def __init__(self, config: SlurmBackendConfig, log_cap: int | None = None, disk_reserve: int = 0):
        self.config = config
        self.log_cap = log_cap
        self.disk_reserve = disk_reserve  # Policy.disk_reserve_bytes: a pull never takes the head's disk below it
        self.jobs: dict[str, _Job] = {}
        self._poller: asyncio.Task | None = None
        self._addresses: dict[str, str] = {}  # node name -> NodeAddr
        self._tasks: set[asyncio.Task] = set()  # releases: they outlive their jobs' records
        self._description: dict[str, Any] = {
            "partitions": [],
            "default_partition": config.default_partition or None,
            "problem": None,
        }
        self._described_at = -DESCRIBE_S
        self._woken = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        """What capabilities and the doctor show: the partitions Slurm lists and the default one,
        or the problem that keeps jobs from being submitted. Asked of Slurm in the background (at
        most every DESCRIBE_S); the first answer may still be on its way."""
        if time.monotonic() - self._described_at > DESCRIBE_S:
            self._described_at = time.monotonic()
            with contextlib.suppress(RuntimeError):  # no event loop: the last answer is shown
                self._spawn(self.refresh())
        return dict(self._description)

    async def refresh(self) -> dict[str, Any]:
        """Ask Slurm for its partitions now (scontrol show partition, as root)."""
        try:
            rc, out, err = await self._as_root("scontrol", "show", "partition", "-o")
            problem = None if rc == 0 else f"Slurm does not answer: {commands.first_error(err, out)}"
        except SlurmError as exc:
            rc, out, problem = -1, "", f"Slurm does not answer: {exc}"
        names, default = commands.parse_partitions(out) if rc == 0 else ([], None)
        self._described_at = time.monotonic()
        self._description = {
            "partitions": names,
            "default_partition": self.config.default_partition or default,
            "problem": problem,
        }
        return dict(self._description)

    # ---- the seam

    def start(self, launch: Launch, events: JobEvents) -> JobHandle:
        spec = launch.spec
        if spec.uid == 0 or spec.gid == 0:
            raise StartError("a job is never submitted to Slurm as root")
        try:
            launch.folder.make(spec.uid, spec.gid)
            state = {
                "secret": relaylink.new_secret(),
                "slurm_job_id": None,
                "node": None,
                "port": None,
                "node_job": None,
                "released": False,
            }
            _save(launch.folder.dir, state)
        except OSError as exc:
            raise StartError(f"cannot prepare the job's folder: {exc.strerror or exc}") from None
        job = _Job(self, launch, events, state)
        self.jobs[launch.id] = job
        job.spawn(self._submit(job))
        self._ensure_poller()
        return _Handle(job)

    def attach(self, launch: Launch, events: JobEvents) -> JobHandle | None:
        state = _load(launch.folder.dir)
        try:
            relaylink.secret_key(state.get("secret", ""))
        except ValueError:
            events.lost(launch.id, "the executor kept no record of the job's Slurm submission")
            return None
        job = _Job(self, launch, events, state)
        job.reported_running = bool(state.get("node"))
        job.searching = not state.get("slurm_job_id")
        self.jobs[launch.id] = job
        self._ensure_poller()
        return _Handle(job)

    def close(self) -> None:
        for job in list(self.jobs.values()):
            job.detach()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        for task in list(self._tasks):
            task.cancel()

    # ---- submission

    async def _submit(self, job: _Job) -> None:
        spec = job.launch.spec
        placement = {k: v for k, v in job.launch.placement.items() if k in ("partition", "account", "qos") and v}
        if "partition" not in placement and self.config.default_partition:
            placement["partition"] = self.config.default_partition
        args = commands.sbatch_args(spec.limits, placement, commands.job_name(job.id), self.config.time_margin_s)
        request = commands.step_request(
            node_job_request(spec, commands.job_name(job.id)),
            self.config.node_socket,
            job.state["secret"],
            self.config.linger_s,
        )
        script = commands.batch_script(self.config.node_python, request)
        try:
            rc, out, err = await self._as_user(job, "sbatch", *args, stdin=script.encode())
        except SlurmError as exc:
            # sbatch may have submitted before it hung: a job of that name is cancelled, if any
            job.end(Outcome(Reason.START_ERROR, error=f"Slurm: {exc}"))
            self._spawn(self._cancel_by_name(job))
            return
        if rc != 0:
            job.end(Outcome(Reason.START_ERROR, error=f"Slurm refused the job: {commands.first_error(err, out)}"))
            return
        try:
            slurm_id = commands.parse_job_id(out)
        except SlurmError as exc:
            job.end(Outcome(Reason.START_ERROR, error=str(exc)))
            return
        job.set(slurm_job_id=slurm_id)
        job.since = time.monotonic()
        self._wake()
        job.events.waiting(job.id, "Slurm: submitted", {"slurm_job_id": slurm_id})
        if job.stop_asked:
            await self._scancel(job)

    async def _as_user(self, job: _Job, command: str, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        spec = job.launch.spec
        # the requester's own groups only when the job runs as the requester (root's jobs: none)
        groups = list(spec.requester_groups) if spec.requester_uid == spec.uid else []
        argv = [self.config.command(command), *args]
        return await commands.run_as(argv, spec.uid, spec.gid, groups, self.config.env(), stdin=stdin)

    async def _as_root(self, command: str, *args: str) -> tuple[int, str, str]:
        return await commands.run_as([self.config.command(command), *args], None, None, [], self.config.env())

    # ---- the poll

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    def _wake(self) -> None:
        """Look at squeue now (a job was just submitted)."""
        self._woken.set()

    @staticmethod
    def _starting(job: _Job, now: float) -> bool:
        """Submitted or started within START_WINDOW_S and not yet followed: its start, then its
        relay's port, is looked for every start_poll_s."""
        return (
            not job.ended
            and bool(job.slurm_id)
            and job.follower is None
            and not job.followed
            and now - job.since < START_WINDOW_S
        )

    async def _poll_forever(self) -> None:
        last = last_all = time.monotonic()
        while self.jobs:
            # every start_poll_s while a job is starting (only those are asked: one job is
            # squeue's light single-job request), all the jobs every poll_s; intervals run from
            # the last look's start, so squeue's own time is part of them
            fast = min(self.config.start_poll_s, self.config.poll_s)
            starting = any(self._starting(j, time.monotonic()) for j in self.jobs.values())
            due = min(last + fast, last_all + self.config.poll_s) if starting else last_all + self.config.poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), max(0.005, due - time.monotonic()))
            self._woken.clear()
            now = last = time.monotonic()
            watched = [j for j in self.jobs.values() if not j.ended and (j.slurm_id or j.searching)]
            if now - last_all >= self.config.poll_s * 0.999:
                last_all = now
            else:
                watched = [j for j in watched if self._starting(j, now)]
            if not watched:
                continue
            states = await self._squeue(watched)
            if states is None:
                continue
            for job in watched:
                if not job.ended:
                    try:
                        self._update(job, states)
                    except Exception:  # one job's trouble never stops the poll of the others
                        log.exception("Slurm job of %s", job.id)
        self._poller = None

    async def _squeue(self, watched: list[_Job]) -> dict[str, SlurmState] | None:
        """The watched jobs as squeue shows them (its light text form, by id: every job when one
        is searched for by name); None when squeue fails (slurmctld restarting: nothing changes,
        the next poll tries again)."""
        ids = None if any(j.searching for j in watched) else [j.slurm_id for j in watched if j.slurm_id]
        mark = commands.squeue_mark()
        command = [self.config.command("squeue"), *commands.squeue_args(ids)]
        try:
            rc, out, err = await commands.run_as(command, None, None, [], commands.squeue_env(self.config.env(), mark))
            if rc == 0:
                return commands.parse_squeue_text(out, mark)
            if ids and len(set(ids)) == 1 and commands.forgotten(err):
                return {}  # the one job asked is no longer known to Slurm
            log.info("squeue failed (%s); trying again", commands.first_error(err, out))
        except SlurmError as exc:
            log.info("squeue: %s; trying again", exc)
        return None

    def _absent(self, job: _Job) -> bool:
        """Count a poll without the job; whether it has been absent long enough to be gone
        (MISSING_POLLS polls and as many poll_s: fast polls do not shorten the wait)."""
        now = time.monotonic()
        if job.missing == 0:
            job.missing_since = now
        job.missing += 1
        return job.missing >= MISSING_POLLS and now - job.missing_since >= MISSING_POLLS * self.config.poll_s

    def _update(self, job: _Job, states: dict[str, SlurmState]) -> None:
        if job.searching:
            found = self._found_by_name(job, states)
            if found is None:
                if self._absent(job):
                    job.lose("the executor restarted while submitting to Slurm, and Slurm has no such job")
                return
            job.set(slurm_job_id=found)
            job.searching, job.missing = False, 0
        st = states.get(job.slurm_id or "")
        if st is None:
            if job.follower is not None:  # the relay's word is awaited (Slurm may forget a job first)
                return
            if self._absent(job):
                job.lose(f"Slurm no longer knows its job {job.slurm_id}, which never said how it ended")
            return
        job.missing = 0
        if st.waiting:
            why = commands.waiting_words(st.reason)
            if why != job.last_why:
                job.last_why = why
                job.events.waiting(job.id, why, {"slurm_job_id": st.job_id})
            return
        self._placed(job, st)

    def _placed(self, job: _Job, st: SlurmState) -> None:
        """A job Slurm started (running, or ended since): on its node, followed, or ended."""
        node = st.node
        if not job.reported_running and commands.valid_node_name(node):
            job.reported_running = True
            job.since = time.monotonic()  # its relay's port is looked for every start_poll_s
            job.set(node=node)
            job.events.running(job.id, node, {"slurm_job_id": st.job_id})
        if st.running:
            comment = commands.parse_comment(st.comment)
            if comment.port and comment.node_job and job.follower is None and time.monotonic() >= job.next_follow:
                if job.state.get("port") != comment.port or job.state.get("node_job") != comment.node_job:
                    job.set(port=comment.port, node_job=comment.node_job, node=job.state.get("node") or node)
                job.followed = True
                job.follower = job.spawn(self._follow(job))
            return
        if not st.final:
            return
        if job.follower is not None:
            # the relay is gone, so its connection ends soon; a node that vanished never says so
            job.final_seen = job.final_seen or time.monotonic()
            if time.monotonic() - job.final_seen < FINAL_WAIT_S:
                return
            job.follower.cancel()
        if not job.ending:
            job.ending = True
            job.spawn(self._end_by_slurm(job, st))

    async def _end_by_slurm(self, job: _Job, st: SlurmState) -> None:
        """End a job Slurm ended without the node's outcome, in Slurm's words: its exit status
        from squeue --json (the poll's text form has none), else what the poll saw."""
        try:
            rc, out, _ = await self._as_root("squeue", "--json")
            st = commands.parse_squeue(out, {st.job_id}).get(st.job_id, st) if rc == 0 else st
        except SlurmError:
            pass
        job.end(commands.final_outcome(st))

    @staticmethod
    def _found_by_name(job: _Job, states: dict[str, SlurmState]) -> str | None:
        name, uid = commands.job_name(job.id), job.launch.spec.uid
        ids = [int(s.job_id) for s in states.values() if s.name == name and s.user_id == uid]
        return str(max(ids)) if ids else None

    # ---- following the node job through the relay

    async def _address(self, node: str) -> str:
        """The node's NodeAddr (where its relay listens); its name when Slurm does not say."""
        if node in self._addresses:
            return self._addresses[node]
        rc, out, _ = await self._as_root("scontrol", "show", "node", "-o", node)
        addr = commands.parse_node_addr(out) if rc == 0 else None
        if addr is None:
            return node
        self._addresses[node] = addr
        return addr

    async def _connect(self, job: _Job) -> _Connection:
        host = await self._address(job.state["node"])
        key = relaylink.secret_key(job.state["secret"])
        reader, writer = await relaylink.open_relay(host, int(job.state["port"]), key, "pipe")
        connection = _Connection(reader, writer)
        try:
            await connection.call("hello", version=protocol.VERSION)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _follow(self, job: _Job) -> None:
        try:
            outcome = await self._copy_log(job)
        except (OSError, WorkerError, SlurmError, ValueError, KeyError, TypeError) as exc:
            # the relay cannot be followed now: Slurm's next word says whether it still runs
            log.info("job %s: cannot follow its relay (%s)", job.id, exc)
            job.follower = None
            job.next_follow = time.monotonic() + FOLLOW_RETRY_S
            return
        try:
            note = await self._pull_work(job)
        except (OSError, WorkerError, ValueError, KeyError, TypeError) as exc:
            note = f"/work could not be brought back from the node: {exc}"
        if note:
            self._notice(job, note)
        job.end(outcome)
        self._spawn(self._release(job))

    async def _copy_log(self, job: _Job) -> Outcome:
        """The node job's log, record by record, appended to the head's log; its metrics; its end."""
        connection = await self._connect(job)
        try:
            offset = await asyncio.to_thread(complete_length, job.launch.folder.log)
            fd = _open_log(job.launch.folder.log)
            try:
                await connection.call("follow", job_id=job.state["node_job"], offset=offset, raw=True)
                while True:
                    message = await connection.read()
                    if message.get("ok") is False:
                        raise _peer_error(message.get("error"))
                    event = message.get("event")
                    if event == "log":
                        offset = self._write_record(job, fd, message, offset)
                    elif event == "metrics":
                        job.events.metrics(job.id, commands.usage_of(message.get("metrics")))
                    elif event == "end":
                        return commands.node_outcome(message.get("job"))
            finally:
                os.close(fd)
        finally:
            connection.close()

    def _write_record(self, job: _Job, fd: int, message: dict[str, Any], offset: int) -> int:
        """Write one log event as the record it was on the node; the head log's new size."""
        at = message.get("offset")
        if isinstance(at, int) and at < offset:  # already here (a resumed follow)
            return offset
        if at != offset and not job.warned_offsets:
            job.warned_offsets = True
            shown = commands.words(repr(at), 100)
            log.warning("job %s: the node's log offset %s is not the head's %d", job.id, shown, offset)
        try:
            data = base64.b64decode(message.get("data") or "", validate=True)
        except (binascii.Error, TypeError):
            raise ValueError("a log event without base64 data") from None
        stream = STREAM_NUMBERS.get(message.get("stream"), STDOUT)
        if self.log_cap is not None and offset + len(data) > self.log_cap + LOG_SLACK:
            return offset  # the node keeps to the cap; a relay that does not is not followed further
        record = b"".join(
            HEADER.pack(stream, len(part)) + part
            for part in (data[i : i + MAX_RECORD] for i in range(0, max(len(data), 1), MAX_RECORD))
        )
        _write_all(fd, record)
        return offset + len(record)

    def _notice(self, job: _Job, text: str) -> None:
        with contextlib.suppress(OSError):
            fd = _open_log(job.launch.folder.log)
            try:
                data = f"[jupyter-worker: {text}]\n".encode()
                _write_all(fd, HEADER.pack(NOTICE, len(data)) + data)
            finally:
                os.close(fd)

    # ---- /work back

    async def _pull_work(self, job: _Job) -> str | None:
        """The node job's /work into the head folder's work/ (owned by the job's uid); a note when
        not all of it came (the cap, skipped names). Links, FIFOs, sockets and devices are never
        copied; names are checked as transfer.unsafe_name does."""
        spec = job.launch.spec
        budget = max(0, self.config.max_return_mb) << 20
        connection = await self._connect(job)
        pull = _Pull(connection, job.state["node_job"], spec.uid, spec.gid, budget, into=job.launch.folder.dir)
        pull.reserve = self.disk_reserve
        top = await asyncio.to_thread(_open_dir, None, job.launch.folder.work)
        try:
            await pull.folder("", top)
        finally:
            os.close(top)
            connection.close()
        notes = []
        if pull.short_of_disk:
            reserve = self.disk_reserve >> 20
            notes.append(f"/work brought back until the head's disk was down to its reserve ({reserve} MiB free)")
        elif pull.capped:
            notes.append(f"/work brought back from the node up to {self.config.max_return_mb} MiB")
        if pull.skipped:
            why = "links, special files, unsafe names, folders too deep"
            notes.append(f"{pull.skipped} entries of /work not brought back ({why})")
        return "; ".join(notes) or None

    async def _release(self, job: _Job) -> None:
        """Tell the relay it may exit (once the node job ended): the Slurm job ends COMPLETED."""
        key = relaylink.secret_key(job.state["secret"])
        for _ in range(RELEASE_TRIES):
            try:
                host = await self._address(job.state["node"])
                _, writer = await relaylink.open_relay(host, int(job.state["port"]), key, "release")
                writer.close()
                break
            except relaylink.RelayWait:
                await asyncio.sleep(1)
            except (OSError, SlurmError):
                break  # gone already: it exits by itself after linger_s
        with contextlib.suppress(OSError):
            state = {**job.state, "released": True}
            _save(job.launch.folder.dir, state)

    # ---- stop

    async def _stop(self, job: _Job, grace_s: float | None) -> None:
        if not job.slurm_id:
            return  # still submitting: cancelled once sbatch said its id
        if job.state.get("port") and job.state.get("node_job") and job.follower is not None:
            try:
                # bounded: a hung node executor, or a listener of the user's own, never answers
                await asyncio.wait_for(self._stop_through_relay(job, grace_s), STOP_THROUGH_RELAY_S)
                return
            except TimeoutError:
                log.info("job %s: stop through the relay not answered in %g s: scancel", job.id, STOP_THROUGH_RELAY_S)
            except (OSError, WorkerError, SlurmError) as exc:
                log.info("job %s: stop through the relay failed (%s): scancel", job.id, exc)
        await self._scancel(job)

    async def _stop_through_relay(self, job: _Job, grace_s: float | None) -> None:
        connection = await self._connect(job)
        try:
            await connection.call("stop", job_id=job.state["node_job"], grace_s=grace_s)
        finally:
            connection.close()

    async def _scancel(self, job: _Job) -> None:
        try:
            rc, out, err = await self._as_user(job, "scancel", job.slurm_id or "")
        except SlurmError as exc:
            log.warning("job %s: scancel: %s", job.id, exc)
            return
        if rc != 0:
            log.warning("job %s: scancel: %s", job.id, commands.first_error(err, out))

    async def _cancel_by_name(self, job: _Job) -> None:
        with contextlib.suppress(SlurmError):
            await self._as_user(job, "scancel", f"--name={commands.job_name(job.id)}")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@dataclass(eq=False)
class _Job:
    backend: SlurmBackend
    launch: Launch
    events: JobEvents
    state: dict[str, Any]
    ended: bool = False
    stop_asked: bool = False
    reported_running: bool = False
    last_why: str | None = None
    missing: int = 0
    missing_since: float = 0.0
    since: float = field(default_factory=time.monotonic)  # submitted or started: looked at often until followed
    followed: bool = False  # a follower was started once (its start is no longer awaited)
    ending: bool = False  # Slurm said it ended without the node's outcome: being ended
    follower: asyncio.Task | None = None
    next_follow: float = 0.0
    warned_offsets: bool = False
    searching: bool = False  # attached after a restart inside sbatch: its Slurm id is looked for by name
    final_seen: float | None = None  # when Slurm first said the job ended while its follower still ran
    tasks: set[asyncio.Task] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.launch.id

    @property
    def slurm_id(self) -> str | None:
        return self.state.get("slurm_job_id")

    def set(self, **changes: Any) -> None:
        self.state.update(changes)
        try:
            _save(self.launch.folder.dir, self.state)
        except OSError as exc:
            log.warning("job %s: cannot keep %s: %s", self.id, SLURM_FILE, exc)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if task is self.follower and not self.ended:
            self.follower = None
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s: %r", self.id, task.exception())
            if not self.ended:
                self.lose(f"the Slurm backend failed: {task.exception()}")

    def end(self, outcome: Outcome) -> None:
        if self.ended:
            return
        self.ended = True
        self.backend.jobs.pop(self.id, None)
        self.events.exited(self.id, outcome)

    def lose(self, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.backend.jobs.pop(self.id, None)
        self.events.lost(self.id, why)

    def detach(self) -> None:
        """No more events; the work under way for an ended job (its release) goes on."""
        if self.ended:
            return
        self.ended = True
        self.backend.jobs.pop(self.id, None)
        for task in list(self.tasks):
            task.cancel()


class _Handle(JobHandle):
    def __init__(self, job: _Job):
        self.job = job

    def stop(self, grace_s: float | None) -> None:
        job = self.job
        if job.ended:
            return
        job.stop_asked = True
        job.spawn(job.backend._stop(job, grace_s))

    def detach(self) -> None:
        self.job.detach()


class _Connection:
    """The executor protocol over a relay's pipe (frames as in protocol.py)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.next_id = 0

    async def call(self, op: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.writer.write(protocol.encode({"op": op, "id": self.next_id, **params}))
        await self.writer.drain()
        reply = await self.read()
        if not reply.get("ok"):
            raise _peer_error(reply.get("error"))
        return reply

    async def read(self) -> dict[str, Any]:
        try:
            header = await self.reader.readexactly(protocol.LENGTH.size)
            return protocol.decode(await self.reader.readexactly(protocol.frame_length(header)))
        except asyncio.IncompleteReadError:
            raise ConnectionError("the relay closed the connection") from None

    def close(self) -> None:
        self.writer.close()


class _Pull:
    """One /work brought back: folders walked page by page, files read piece by piece."""

    def __init__(self, connection: _Connection, node_job: str, uid: int, gid: int, budget: int, *, into: str):
        self.connection = connection
        self.node_job = node_job
        self.uid, self.gid = uid, gid
        self.budget = budget
        # Every job's pull lands on the head's disk, many at once (a user's whole Slurm queue ending):
        # each piece is taken only while the disk keeps Policy.disk_reserve_bytes free, as local
        # jobs' disk limits are (executor/retention.py), so the head's disk never fills.
        self.into = into
        self.reserve = 0
        self.short_of_disk = False
        self.taken = 0
        self.entries = 0
        self.pages = 0
        self.skipped = 0
        self.capped = False

    async def folder(self, where: str, fd: int) -> None:
        offset: int | None = 0
        while offset is not None:
            self.pages += 1
            if self.pages > MAX_PULLED_ENTRIES:  # a peer paging forever (a relay that is not ours)
                self.capped = True
                return
            page = await self.connection.call("files", job_id=self.node_job, path=where, offset=offset)
            for entry in page.get("entries") or []:
                await self._entry(where, fd, entry)
            offset = page.get("next_offset")
            if not isinstance(offset, int) or isinstance(offset, bool):
                offset = None

    async def _entry(self, where: str, fd: int, entry: Any) -> None:
        name = entry.get("name") if isinstance(entry, dict) else None
        kind = entry.get("kind") if isinstance(entry, dict) else None
        path = f"{where}/{name}" if where else str(name)
        self.entries += 1
        if (
            transfer.unsafe_name(name)
            or kind not in ("directory", "file")
            or self.entries > MAX_PULLED_ENTRIES
            or len(path.encode()) > MAX_PATH_BYTES
            or path.count("/") >= MAX_PULLED_DEPTH
        ):
            self.skipped += 1
            return
        if self.capped:
            return
        size = entry.get("size")
        if kind == "file" and isinstance(size, int) and self.taken + size > self.budget:
            self.capped = True
            return
        if kind == "directory":
            sub = await asyncio.to_thread(_make_dir, fd, name, self.uid, self.gid)
            try:
                await self.folder(path, sub)
            finally:
                os.close(sub)
            return
        await self._file(fd, name, path)

    async def _file(self, fd: int, name: str, path: str) -> None:
        out, temp = await asyncio.to_thread(transfer.temporary, fd, 0o644)
        kept = False
        try:
            offset = 0
            while True:
                room = self.budget - self.taken
                if room <= 0:  # it grew past what the listing said: not kept cut short
                    self.capped = True
                    return
                if retention.free_bytes(self.into) - min(PIECE, room) < self.reserve:
                    self.capped = self.short_of_disk = True  # the file is not kept cut short either
                    return
                reply = await self.connection.call(
                    "read_file", job_id=self.node_job, path=path, offset=offset, max_bytes=min(PIECE, room)
                )
                data = base64.b64decode(reply.get("data") or "", validate=True)
                if not data:
                    break
                await asyncio.to_thread(_write_all, out, data)
                offset += len(data)
                self.taken += len(data)
                size = reply.get("size")
                if isinstance(size, int) and offset >= size:
                    break
            await asyncio.to_thread(_settle, out, fd, temp, name, (self.uid, self.gid))
            kept = True
        finally:
            if not kept:
                os.close(out)
                transfer.discard(fd, temp)


# ---- files (the head folder is root's, 0700: no user can race these paths)


def node_job_request(spec: LaunchSpec, name: str) -> dict[str, Any]:
    """The JobRequest for the node executor (as JobRequest.to_dict; no owner, holder, artifacts,
    backend or placement: the relay sets the holder, the head brings /work back)."""
    return {
        "command": list(spec.argv),
        "name": name,
        "limits": spec.limits.given(),
        "env": dict(spec.env),
        "mounts": [m.to_dict() for m in spec.mounts],
        "network": spec.network.value,
        "cwd": spec.cwd,
        "python_prefixes": list(spec.python_prefixes),
        "display": spec.display,
    }


def _peer_error(data: Any) -> WorkerError:
    """An error the relay's side sent, its words escaped and cut: a relay is its user's to make, and
    the words reach the head's own log and the job's."""
    error = WorkerError.from_dict(data)
    return WorkerError(error.reason, commands.words(error.message))


def _save(folder: str, state: dict[str, Any]) -> None:
    path = os.path.join(folder, SLURM_FILE)
    temp = path + ".new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, json.dumps(state).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)


def _load(folder: str) -> dict[str, Any]:
    try:
        fd = os.open(os.path.join(folder, SLURM_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as f:
            data = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def complete_length(path: str) -> int:
    """The length of the log's whole records; a partial last record (a head killed while writing)
    is cut off, so the follow resumes on a record boundary."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        position = 0
        while position + HEADER.size <= size:
            _, length = HEADER.unpack(os.pread(fd, HEADER.size, position))
            if position + HEADER.size + length > size:
                break
            position += HEADER.size + length
        if position != size:
            os.ftruncate(fd, position)
        return position
    finally:
        os.close(fd)


def _open_dir(parent: int | None, name: str) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags) if parent is None else os.open(name, flags, dir_fd=parent)


def _make_dir(parent: int, name: str, uid: int, gid: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
    fd = _open_dir(parent, name)  # a link in the way is refused (O_NOFOLLOW)
    os.fchown(fd, uid, gid)
    return fd


def _settle(out: int, folder: int, temp: str, name: str, owner: tuple[int, int]) -> None:
    try:
        os.fchown(out, *owner)
    finally:
        os.close(out)
    transfer.rename_into_place(folder, temp, name, replace=True)
