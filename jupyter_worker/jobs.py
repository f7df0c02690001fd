"""A Python API for scripts and notebooks: run code or a command as a sandboxed job.

    import jupyter_worker
    job = jupyter_worker.run("import numpy; print(numpy.__version__)", memory_mb=512, timeout="10m")
    job.wait()           # raises JobFailed if it did not complete
    print(job.logs(), job.result)

A string is Python code, run by this interpreter (its packages are shown read-only in the job);
a list is a command. Everything goes through the executor (jupyter_worker.client).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import Any, TextIO

from .client import Client
from .spec import Mount, describe_ending, python_prefixes, requested_limits


class JobFailed(RuntimeError):
    """The job ended without completing; the message says how, in words."""

    def __init__(self, job: dict[str, Any]):
        super().__init__(f"job {job['id'][:8]} {job['status'].lower()}: {describe_ending(job)}")
        self.job = job


TABLE_COLUMNS = ("ID", "STATUS", "NAME", "COMMAND", "STARTED", "DURATION", "CPU", "MEMORY")


def table_row(job: dict[str, Any]) -> tuple[str, ...]:
    """One job as the CLI's and %worker's listings show it: CPU is CPU time, MEMORY the peak."""
    started, ended = job.get("started_at"), job.get("finished_at")
    metrics = job.get("metrics") or {}
    stamp = datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S") if started else "-"
    duration = f"{(ended or time.time()) - started:.1f}s" if started else "-"
    peak = metrics.get("memory_peak_bytes") or metrics.get("memory_bytes")
    return (
        job["id"][:8],
        job["status"],
        job.get("name") or "",
        " ".join(" ".join(job["command"]).split())[:40],
        stamp,
        duration,
        f"{metrics['cpu_seconds']:.2f}s" if "cpu_seconds" in metrics else "-",
        f"{peak / 2**20:.1f} MiB" if peak else "-",
    )


def text_table(jobs: list[dict[str, Any]]) -> str:
    rows = [TABLE_COLUMNS, *(table_row(job) for job in jobs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)
    return "\n".join(lines) + "\n"


class Job:
    """A handle on a submitted job."""

    def __init__(self, record: dict[str, Any], socket: str | None = None):
        self.id = record["id"]
        self._record = record
        self._socket = socket

    def _client(self) -> Client:
        return Client(self._socket)

    def __repr__(self) -> str:
        return f"<Job {self.id[:8]} {self._record['status']}>"

    @property
    def record(self) -> dict[str, Any]:
        """The job's record as the executor has it now."""
        with self._client() as client:
            self._record = client.get(self.id)
        return self._record

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def result(self) -> dict[str, Any] | None:
        """exit_code, reason, signal, error and metrics once it has ended; None while it runs."""
        record = self.record
        if record["status"] in ("QUEUED", "RUNNING"):
            return None
        return {key: record.get(key) for key in ("status", "exit_code", "reason", "signal", "error", "metrics")}

    def stop(self, grace_s: float | None = None) -> None:
        with self._client() as client:
            self._record = client.stop(self.id, grace_s)

    def logs(self) -> str:
        """Everything the job printed so far, stdout and stderr interleaved as they came."""
        text, offset = [], 0
        with self._client() as client:
            while True:
                chunks, offset, _ = client.logs(self.id, offset)
                if not chunks:
                    return "".join(text)
                text += [c.data.decode(errors="replace") for c in chunks]

    def wait(self, stream: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None) -> dict:
        """Block until the job ends (printing its output if stream); raise JobFailed unless it completed."""
        with self._client() as client:
            for event in client.follow(self.id):
                if stream and event["event"] == "log":
                    out = (stderr or sys.stderr) if event["stream"] != "stdout" else (stdout or sys.stdout)
                    out.write(event["data"].decode(errors="replace"))
                    out.flush()
                elif event["event"] == "end":
                    self._record = event["job"]
        if self._record["status"] != "COMPLETED":
            raise JobFailed(self._record)
        return self._record


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The --max-* and --timeout flags, as the CLI and the magics both take them."""
    parser.add_argument("--max-memory", type=int, metavar="MB", help="memory limit in MiB (swap excluded)")
    parser.add_argument("--max-cpu", type=int, metavar="PCT", help="CPU limit, percent of one core (200 = two)")
    parser.add_argument("--max-pids", type=int, metavar="N", help="most processes and threads at once")
    parser.add_argument("--max-iobps", type=int, metavar="BPS", help="read and write bytes per second")
    parser.add_argument("--max-netbps", type=int, metavar="BPS", help="network bytes per second each way (isolated)")
    parser.add_argument("--timeout", metavar="DURATION", help="wall-clock limit, e.g. 30s, 10m, 1h")


def flag_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The limits those flags ask for (those not given are left to the executor)."""
    return requested_limits(
        memory_mb=args.max_memory,
        cpu_percent=args.max_cpu,
        pids=args.max_pids,
        io_bps=args.max_iobps,
        net_bps=args.max_netbps,
        timeout=args.timeout or None,
        timeout_label="--timeout",
    )


def python_code(code: str) -> list[str]:
    """Code run by this interpreter, unbuffered so that its prints reach the log as they happen
    (and are not lost in a buffer when the job is killed)."""
    return [sys.executable, "-u", "-c", code]


def job_request(
    command: list[str],
    limits: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    mounts: list[str] | None = None,
    network: str | None = None,
    name: str | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    """A request that runs in the caller's folder: shown read-only at its own path (a mount of it
    with :rw makes it writable), so relative paths work; /work stays the job's own folder."""
    here = cwd or os.getcwd()
    parsed = [Mount.parse(m, cwd=here) for m in (mounts or [])]
    if all(m.destination != here for m in parsed):
        parsed.insert(0, Mount(here, here))
    return {
        "command": command,
        "name": name,
        "limits": limits,
        "env": env or {},
        "mounts": [m.to_dict() for m in parsed],
        "network": network,
        "cwd": here,
        "python_prefixes": python_prefixes(),
    }


def run(
    code_or_command: str | list[str],
    *,
    memory_mb: int | None = None,
    cpu_percent: int | None = None,
    pids: int | None = None,
    io_bps: int | None = None,
    net_bps: int | None = None,
    timeout: str | float | None = None,
    network: str | None = None,
    env: dict[str, str] | None = None,
    mounts: list[str] | None = None,
    name: str | None = None,
    cwd: str | None = None,
    socket: str | None = None,
) -> Job:
    """Submit a job; returns at once with its handle. Limits not given come from the executor."""
    command = python_code(code_or_command) if isinstance(code_or_command, str) else list(code_or_command)
    limits = requested_limits(
        memory_mb=memory_mb, cpu_percent=cpu_percent, pids=pids, io_bps=io_bps, net_bps=net_bps, timeout=timeout
    )
    request = job_request(command, limits, env=env, mounts=mounts, network=network, name=name, cwd=cwd)
    with Client(socket) as client:
        return Job(client.run(request), socket)
