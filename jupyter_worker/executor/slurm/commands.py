"""What the head says to Slurm and how it reads Slurm's answers; Slurm's commands run as a user.

Everything here but `run_as` is pure and unit-tested (tests/unit/test_slurm_commands.py). Every
text that comes back from Slurm may hold what a user put there (a job's Comment is the user's to
set, a job name too): it is parsed strictly and shown only escaped and cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shlex
from dataclasses import dataclass, fields
from typing import Any

from ...formatting import inert
from ...limits import Limits
from ...spec import Outcome, Reason, Usage

STEP_MODULE = "jupyter_worker.slurmstep"
JOB_NAME_PREFIX = "jw-"
COMMENT_PREFIX = "jw1:"
MAX_WORDS = 300  # a Slurm reason or a relay's error, as shown
COMMAND_TIMEOUT_S = 30.0
MAX_OUTPUT = 64 << 20  # the stream buffer's limit for a command's output (squeue --json of a big cluster)
# --mem covers the Slurm job's own processes: the relay (a small Python), beside the job's memory
# (which the node executor's cgroup enforces); a cluster confining jobs by cgroups would otherwise
# kill the relay of a job with a small limit.
RELAY_MEMORY_MB = 64

# Slurm job states (squeue's job_state) by what they mean for the head.
WAITING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"})
RUNNING_STATES = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"})
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "PREEMPTED",
        "DEADLINE",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)

# Slurm's reason codes (squeue %r, state_reason) in words; the code follows in brackets.
REASON_WORDS = {
    "Resources": "waiting for resources on the cluster",
    "Priority": "waiting behind higher-priority jobs",
    "Dependency": "waiting for a job it depends on",
    "DependencyNeverSatisfied": "its dependency can never be satisfied",
    "BeginTime": "waiting for its start time",
    "JobHeldUser": "held by its owner",
    "JobHeldAdmin": "held by an administrator",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "PartitionNodeLimit": "asks more nodes than its partition allows",
    "PartitionTimeLimit": "asks more time than its partition allows",
    "ReqNodeNotAvail": "the nodes it needs are not available",
    "NodeDown": "a node it needs is down",
    "BadConstraints": "its constraints cannot be met",
    "Reservation": "waiting for its reservation",
    "Licenses": "waiting for licenses",
    "InvalidAccount": "its account is not valid",
    "InvalidQOS": "its QOS is not valid",
    "AssociationJobLimit": "its account's job limit is reached",
    "AssociationResourceLimit": "its account's resource limit is reached",
    "AssociationTimeLimit": "its account's time limit is reached",
    "QOSJobLimit": "its QOS's job limit is reached",
    "QOSResourceLimit": "its QOS's resource limit is reached",
    "QOSTimeLimit": "its QOS's time limit is reached",
    "JobArrayTaskLimit": "its array's task limit is reached",
    "Cleaning": "waiting while its node is cleaned up after a job",
    "Prolog": "its node runs the prolog",
    "BurstBufferResources": "waiting for burst buffer resources",
    "None": "waiting to be scheduled",
}
_REASON_PREFIXES = (  # families of codes, e.g. QOSMaxCpuPerUserLimit, AssocGrpMemLimit
    ("QOS", "a limit of its QOS is reached"),
    ("AssocGrp", "a limit of its account is reached"),
    ("AssocMax", "a limit of its account is reached"),
    ("MaxCpuPerAccount", "its account's CPU limit is reached"),
)


class SlurmError(Exception):
    """A Slurm command failed or answered what cannot be read; the message is in words."""


# ---- submission


def job_name(job_id: str) -> str:
    """The Slurm job's name: found again by it after a restart during submission."""
    return JOB_NAME_PREFIX + job_id[:8]


def sbatch_args(limits: Limits, placement: dict[str, str], job_name: str, margin_s: int) -> list[str]:
    """sbatch's options for a job (the command itself not included): our limits as Slurm's (so
    Slurm places the job where they fit; memory with the relay's own RELAY_MEMORY_MB), the
    placement as asked; output goes nowhere (the log comes through the relay), in a folder every
    user can enter."""
    args = ["--parsable", f"--job-name={job_name}", "--output=/dev/null", "--chdir=/tmp", "--nodes=1", "--ntasks=1"]
    if limits.memory_mb is not None:
        args.append(f"--mem={int(limits.memory_mb) + RELAY_MEMORY_MB}M")
    if limits.cpu_percent is not None:
        args.append(f"--cpus-per-task={max(1, math.ceil(limits.cpu_percent / 100))}")
    if limits.timeout_s is not None:
        args.append(f"--time={max(1, math.ceil((limits.timeout_s + max(0, margin_s)) / 60))}")
    for key in ("partition", "account", "qos"):
        value = placement.get(key)
        if value:
            args.append(f"--{key}={value}")
    return args


def step_request(job: dict[str, Any], socket: str, secret: str, linger_s: int) -> dict[str, Any]:
    """The relay's one JSON object (jupyter_worker/slurmstep.py)."""
    return {"version": 1, "job": job, "socket": socket, "secret": secret, "linger_s": linger_s}


def batch_script(python: str, step_request: dict[str, Any]) -> str:
    """The batch script: the relay, fed the step request on stdin by a quoted heredoc (nothing in
    it is expanded). The request is one line of ASCII JSON, and the delimiter is chosen so that it
    is not in that line, so no request can end the heredoc early or smuggle a line to the shell."""
    body = json.dumps(step_request, separators=(",", ":"), ensure_ascii=True)
    if "\n" in body or "\r" in body:  # json.dumps escapes them; a guard, not a case
        raise ValueError("a step request is one line")
    while True:
        delimiter = f"JW_STEP_{secrets.token_hex(8)}"
        if delimiter not in body:
            break
    return f"#!/bin/sh\nexec {shlex.quote(python)} -I -m {STEP_MODULE} <<'{delimiter}'\n{body}\n{delimiter}\n"


def parse_job_id(out: str) -> str:
    """sbatch --parsable's answer: "123" or "123;cluster"."""
    first = out.strip().splitlines()[0] if out.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit() or len(job_id) > 20:
        raise SlurmError(f"sbatch answered no job id: {words(first or '(nothing)')}")
    return job_id


def first_error(err: str, out: str = "") -> str:
    """sbatch's own first error line, escaped and cut ("sbatch: error: " dropped)."""
    for raw in (err or out).splitlines():
        line = raw.strip()
        if line:
            return words(re.sub(r"^(sbatch|scancel|squeue|scontrol): error: ", "", line))
    return "no word from Slurm"


def words(text: str, limit: int = MAX_WORDS) -> str:
    """Text from Slurm (or a user) for a record: hidden characters spelled out, cut to limit."""
    shown = inert(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


# ---- squeue's text form (the poll)

# What the poll asks of squeue, one field a directive: job id, state, reason, nodes, batch host,
# name, user id, Comment. The name and the Comment are the user's to set (any bytes, newlines too),
# so no separator of ours can be trusted unless the user cannot know it: every field is preceded by
# a fresh random mark, given to squeue in its environment (SQUEUE_FORMAT: a root process's
# environment is root's to read, its argv everyone's). The Comment comes last: its record runs to
# the next mark.
SQUEUE_FIELDS = ("%i", "%T", "%r", "%N", "%B", "%j", "%U", "%k")
_UNSET = ("(null)", "n/a")  # what squeue prints for a field without a value


def squeue_mark() -> str:
    """A fresh mark for one poll (squeue_env, parse_squeue_text)."""
    return f"JW{secrets.token_hex(16)}:"


def squeue_env(env: dict[str, str], mark: str) -> dict[str, str]:
    """env with SQUEUE_FORMAT for the poll's text form: every field preceded by mark."""
    return {**env, "SQUEUE_FORMAT": "".join(mark + field for field in SQUEUE_FIELDS)}


def squeue_args(job_ids: list[str] | None) -> list[str]:
    """squeue's options for the poll: the jobs given (every job when None), in any state, no header.
    (One job is squeue's light single-job request to slurmctld; a list fetches every job and
    filters. A single job the controller has forgotten fails: see forgotten.)"""
    args = ["--noheader", "--states=all"]
    if job_ids is not None:
        args.append("--jobs=" + ",".join(sorted(set(job_ids), key=lambda job_id: (len(job_id), job_id))))
    return args


def forgotten(err: str) -> bool:
    """Whether squeue's failure for a single job says the controller does not know it."""
    return "Invalid job id specified" in err


def parse_squeue_text(out: str, mark: str, wanted: set[str] | frozenset[str] | None = None) -> dict[str, SlurmState]:
    """The poll's squeue output (squeue_env's format with mark) by Slurm job id, only those wanted
    when given. Nothing but the mark separates fields, so no name or Comment can forge a field or
    a job; an answer not in that form is a SlurmError (the poll tries again)."""
    if not out.strip():
        return {}
    if not out.startswith(mark):
        raise SlurmError(f"squeue answered in an unknown form: {words(out.splitlines()[0], 100)}")
    parts = out.split(mark)[1:]
    count = len(SQUEUE_FIELDS)
    if len(parts) % count:
        raise SlurmError("squeue answered a record with fields missing")
    states: dict[str, SlurmState] = {}
    for at in range(0, len(parts), count):
        job_id, state, reason, nodes, batch_host, name, user_id, comment = parts[at : at + count]
        comment = comment[:-1] if comment.endswith("\n") else comment  # the record's own line end
        if not (job_id.isascii() and job_id.isdigit() and len(job_id) <= 20):
            continue  # an array's or a heterogeneous job's element: never one of ours
        if wanted is not None and job_id not in wanted:
            continue
        states[job_id] = SlurmState(
            job_id=job_id,
            state=state.strip().upper(),
            reason=_field(reason),
            nodes=_field(nodes),
            comment=_field(comment),
            name=name,
            user_id=int(user_id) if user_id.isascii() and user_id.isdigit() and len(user_id) <= 10 else None,
            batch_host=_field(batch_host),
        )
    return states


def _field(value: str) -> str:
    value = value.strip()
    return "" if value in _UNSET else value


# ---- squeue --json (a job's exit status, for an ending without the node's outcome)


@dataclass(frozen=True)
class SlurmState:
    """A job as squeue shows it."""

    job_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    comment: str = ""
    exit_code: int | None = None
    signal: int | None = None
    name: str = ""
    user_id: int | None = None
    batch_host: str = ""

    @property
    def node(self) -> str:
        """The node the batch step runs on."""
        return self.batch_host or self.nodes.split(",")[0]

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def parse_squeue(json_text: str, wanted: set[str] | frozenset[str] | None = None) -> dict[str, SlurmState]:
    """squeue --json's jobs by Slurm job id, only those wanted when given (22.05's squeue --json
    lists every job the controller holds, whatever --jobs says). 22.05 (openapi v0.0.38): job_state
    a word, exit_code the wait status; later versions' lists and objects are read too."""
    try:
        data = json.loads(json_text)
    except ValueError:
        raise SlurmError("squeue --json answered what is not JSON") from None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list):
        raise SlurmError("squeue --json answered no list of jobs")
    states: dict[str, SlurmState] = {}
    for job in jobs:
        if not isinstance(job, dict):
            continue
        job_id = _number(job.get("job_id"))
        if job_id is None or (wanted is not None and str(job_id) not in wanted):
            continue
        code, signal = _exit_status(job.get("exit_code"))
        user_id = _number(job.get("user_id"))
        states[str(job_id)] = SlurmState(
            job_id=str(job_id),
            state=_state(job.get("job_state")),
            reason=_text(job.get("state_reason")),
            nodes=_text(job.get("nodes")),
            comment=_text(job.get("comment")),
            exit_code=code,
            signal=signal,
            name=_text(job.get("name")),
            user_id=user_id,
            batch_host=_text(job.get("batch_host")),
        )
    return states


def _number(value: Any) -> int | None:
    if isinstance(value, dict):  # later versions: {"set": true, "infinite": false, "number": 5}
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _state(value: Any) -> str:
    if isinstance(value, list):  # later versions: ["RUNNING", "COMPLETING"]: the base state first
        value = value[0] if value else ""
    return value.upper() if isinstance(value, str) else ""


def _exit_status(value: Any) -> tuple[int | None, int | None]:
    """(exit code, signal) from 22.05's wait status (1792 = exit 7; 9 = killed by signal 9) or a
    later version's {"return_code": .., "signal": {"id": ..}}."""
    if isinstance(value, dict):
        code = _number(value.get("return_code"))
        signal_value = value.get("signal")
        signal = _number(signal_value.get("id") if isinstance(signal_value, dict) else signal_value)
        return code, signal or None
    status = _number(value)
    if status is None or status < 0:
        return None, None
    if status & 0x7F:
        return None, status & 0x7F
    return (status >> 8) & 0xFF, None


# ---- the relay's Comment


@dataclass(frozen=True)
class Comment:
    """What the relay published in the Slurm job's Comment."""

    port: int | None = None
    node_job: str | None = None
    error: str | None = None


_PORT_COMMENT = re.compile(r"jw1:port=([0-9]{1,5}),job=([0-9A-Za-z-]{1,64})")


def parse_comment(comment: str) -> Comment:
    """`jw1:port=<port>,job=<node job id>` or `jw1:error=<words>`; anything else says nothing."""
    comment = comment.strip() if isinstance(comment, str) else ""
    found = _PORT_COMMENT.fullmatch(comment)
    if found:
        port = int(found.group(1))
        return Comment(port=port, node_job=found.group(2)) if 0 < port < 65536 else Comment()
    if comment.startswith(COMMENT_PREFIX + "error="):
        return Comment(error=words(comment[len(COMMENT_PREFIX + "error=") :]) or "no words")
    return Comment()


# ---- scontrol show node -o


def parse_node_addr(out: str) -> str | None:
    """NodeAddr from `scontrol show node -o NAME`'s one line (the address the relay listens on)."""
    found = re.search(r"(?:^|\s)NodeAddr=(\S+)", out)
    if not found:
        return None
    addr = found.group(1)
    return addr if re.fullmatch(r"[0-9A-Za-z.:_-]{1,253}", addr) else None


def parse_partitions(out: str) -> tuple[list[str], str | None]:
    """The partitions in `scontrol show partition -o` (one line each) and the default one."""
    names, default = [], None
    for line in out.splitlines():
        found = re.search(r"(?:^|\s)PartitionName=([0-9A-Za-z_.+-]{1,64})(?:\s|$)", line)
        if not found:
            continue
        names.append(found.group(1))
        if re.search(r"(?:^|\s)Default=YES(?:\s|$)", line):
            default = found.group(1)
    return names, default


def valid_node_name(name: str) -> bool:
    return bool(re.fullmatch(r"[0-9A-Za-z._-]{1,64}", name or ""))


# ---- words and endings


def waiting_words(reason: str) -> str:
    """Why a job waits, from Slurm's reason code: 'Slurm: waiting for resources on the cluster
    (Resources)'; an unknown code as 'Slurm: <code>', escaped."""
    code = words(reason or "None", 100)
    known = REASON_WORDS.get(reason or "None")
    if known is None:
        known = next((text for prefix, text in _REASON_PREFIXES if code.startswith(prefix)), None)
    return f"Slurm: {known} ({code})" if known else f"Slurm: {code}"


def final_outcome(state: SlurmState) -> Outcome:
    """How a job ended that never gave the node's outcome (its relay never ran, or died)."""
    comment = parse_comment(state.comment)
    if state.state == "CANCELLED":
        return Outcome(Reason.STOPPED, signal=state.signal)
    if state.state in ("TIMEOUT", "DEADLINE"):
        return Outcome(Reason.TIMEOUT, error="Slurm's time limit for the job was reached")
    if state.state == "OUT_OF_MEMORY":
        return Outcome(Reason.OOM, error="Slurm: out of memory")
    if state.state in ("NODE_FAIL", "BOOT_FAIL"):
        return Outcome(Reason.LOST, error=f"Slurm: the node {words(state.node or '?', 64)} failed ({state.state})")
    if comment.error:
        return Outcome(Reason.START_ERROR, error=comment.error)
    ending = state.state or "an unknown state"
    if state.reason and state.reason != "None":
        ending += f", {words(state.reason, 100)}"
    if state.signal:
        ending += f", signal {state.signal}"
    elif state.exit_code:
        ending += f", exit code {state.exit_code}"
    return Outcome(Reason.LOST, error=f"Slurm ended the job's relay without the job's outcome ({ending})")


def node_outcome(record: Any) -> Outcome:
    """The outcome the node executor recorded (its follow's 'end' job), read strictly: a record
    that says nothing valid is a lost job."""
    if not isinstance(record, dict):
        return Outcome(Reason.LOST, error="the node executor gave no outcome")
    try:
        reason = Reason(record.get("reason"))
    except ValueError:
        return Outcome(Reason.LOST, error="the node executor gave no valid outcome")
    code, signal, error = record.get("exit_code"), record.get("signal"), record.get("error")
    return Outcome(
        reason,
        exit_code=code if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < 256 else None,
        signal=signal if isinstance(signal, int) and not isinstance(signal, bool) and 0 < signal < 128 else None,
        error=words(error, 2000) if isinstance(error, str) else None,
        usage=usage_of(record.get("metrics")),
    )


_USAGE_FIELDS = {f.name: f.type for f in fields(Usage)}
MAX_USAGE = 1 << 53  # bytes, seconds, percent, counts: JSON-safe whole numbers, far past any real job


def usage_of(data: Any) -> Usage:
    """A Usage from a node's metrics, keeping only known fields with number values, from 0 to
    MAX_USAGE (a relay is its user's to make: 1e308 CPU seconds would widen every listing's row)."""
    if not isinstance(data, dict):
        return Usage()
    kept: dict[str, Any] = {}
    for name, kind in _USAGE_FIELDS.items():
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not 0 <= value <= MAX_USAGE:  # NaN fails too
            continue
        kept[name] = float(value) if kind in ("float", float) else int(value)
    return Usage(**kept)


# ---- running commands


async def run_as(
    argv: list[str],
    uid: int | None,
    gid: int | None,
    groups: list[int],
    env: dict[str, str],
    *,
    stdin: bytes | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
) -> tuple[int, str, str]:
    """Run a command (as uid/gid/groups when uid is given; else as this process) with env alone;
    (exit code, stdout, stderr). SlurmError when it cannot be run or does not end in time."""
    if uid == 0:
        raise SlurmError("Slurm commands are never run as root on a user's behalf")
    who: dict[str, Any] = {}
    if uid is not None:
        who = {"user": uid, "group": gid, "extra_groups": list(groups)}
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
            limit=MAX_OUTPUT,
            **who,
        )
    except OSError as exc:
        raise SlurmError(f"cannot run {os.path.basename(argv[0])}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise SlurmError(f"{os.path.basename(argv[0])} did not answer within {timeout:g} s") from None
    code = process.returncode if process.returncode is not None else -1
    return code, out.decode(errors="replace"), err.decode(errors="replace")
