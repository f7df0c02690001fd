"""A Python API for scripts and notebooks: run code or a command as a sandboxed job.

    import jupyter_worker
    job = jupyter_worker.run("import numpy; print(numpy.__version__)", memory_mb="512M", timeout="10m")
    job.wait()           # raises JobFailed if it did not complete
    print(job.logs(), job.result.exit_code)

A string is Python code, run by this interpreter (its packages are shown read-only in the job);
a list is a command. Everything goes through the executor (jupyter_worker.client).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TextIO

from . import transfer, values
from .cell import RESULT_NAME
from .client import Client
from .errors import SpecError
from .flags import job_request
from .formatting import LogWriter, artifacts_line, follow_log, inert
from .limits import LIMITS
from .spec import JobRecord, JobStatus


class JobFailed(RuntimeError):
    """The job ended without completing; the message says how, in words; `job` is its record."""

    def __init__(self, job: JobRecord):
        super().__init__(f"job {job.id[:8]} {job.status.value.lower()}: {job.ending}")
        self.job = job

    def _render_traceback_(self) -> list[str]:
        """IPython shows this one line for a failed cell, not the client's internal frames."""
        return [f"JobFailed: {inert(str(self))}"]


class Job:
    """A handle on a submitted job."""

    def __init__(self, record: JobRecord, socket: str | None = None):
        self.id = record.id
        self._record = record
        self._socket = socket
        self.out_pickle = False  # value() reads pickled values (run(..., out_pickle=True))
        self.inputs: values.Inputs | None = None  # run(fn)'s arguments, removed when the job has ended

    def _client(self) -> Client:
        return Client(self._socket)

    def __repr__(self) -> str:
        return f"<Job {self.id[:8]} {self._record.status.value}>"

    @property
    def record(self) -> JobRecord:
        """The job's record as the executor has it now."""
        with self._client() as client:
            self._record = client.get(self.id)
        return self._record

    @property
    def status(self) -> str:
        """QUEUED, RUNNING, COMPLETED, FAILED or STOPPED."""
        return self.record.status.value

    @property
    def result(self) -> JobRecord | None:
        """Once it has ended, its record (exit_code, reason, signal, error, metrics); None while it runs."""
        record = self.record
        return record if record.finished else None

    def stop(self, grace_s: float | None = None) -> None:
        """Ask the executor to stop the job: SIGTERM, then SIGKILL after grace_s seconds (None: the
        job's own grace); a queued job ends at once, an ended one is left as it is. Returns at once:
        wait() sees the end (JobFailed, status STOPPED)."""
        with self._client() as client:
            self._record = client.stop(self.id, grace_s)

    def logs(self) -> str:
        """Everything the job printed so far, stdout and stderr interleaved as they came (its display
        output, rich output for a notebook, is not text: it is left out)."""
        text, offset = [], 0
        with self._client() as client:
            while True:
                chunks, offset, _ = client.logs(self.id, offset)
                if not chunks:
                    return "".join(text)
                text += [c.data.decode(errors="replace") for c in chunks if c.stream != "display"]

    def wait(
        self,
        stream: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        on_display: Callable[[bytes], None] | None = None,
    ) -> JobRecord:
        """Block until the job ends (printing its output if stream, its display stream's bytes to
        on_display); raise JobFailed unless it completed."""
        with self._client() as client:
            # someone else's job (an admin's): its bytes shown inert, as the CLI's `log` shows them
            others = self._record.owner_uid != os.getuid()
            writer = LogWriter(stdout, stderr, inert=others, on_display=on_display) if stream else None
            self._record = follow_log(client.follow(self.id), writer)
        if self.inputs is not None:  # the job has ended: its --in values are no longer needed
            self.inputs.remove()
        if self._record.status is not JobStatus.COMPLETED:
            raise JobFailed(self._record)
        return self._record

    def value(self, name: str = RESULT_NAME) -> Any:
        """A value the job sent back, once it has completed (waiting for it; JobFailed if it did not):
        by default run(fn)'s return value, else a name the job sent back (a %%worker cell's --out
        names, on its `_worker_job`). Safe formats only (values.py) unless the job was run with
        out_pickle=True; ValuesNotReturned says why a value is missing, one line each."""
        self.wait()
        with self._client() as client:
            got, problems = values.read_values(client, self.id, [name], allow_pickle=self.out_pickle)
        if problems:
            raise values.ValuesNotReturned(problems)
        return got[name]

    # ---- the files the job left in its /work (transfer.py: paged, streamed, names checked)

    def artifacts_note(self) -> str | None:
        """One line on what --artifacts copied, as last seen (after wait: the end); None when the
        job asked for none or has not ended."""
        asked = self._record.artifacts
        return artifacts_line(self._record) if asked and ("copied" in asked or "error" in asked) else None

    def files(self, path: str = "") -> list[dict[str, Any]]:
        """The entries of a folder of the job's /work (every page): name, type (directory, file,
        symlink, other), size, mtime; folders first. Links are listed, never followed."""
        with self._client() as client:
            return transfer.listing(client, self.id, path)

    def read(self, path: str) -> bytes:
        """The whole of a regular file in the job's /work (as it was when the read began), read
        from the executor a piece at a time."""
        with self._client() as client:
            return transfer.read(client, self.id, path)

    def download(self, path: str, dest: str = ".") -> transfer.Downloaded:
        """Copy a file or folder (recursively) of the job's /work to dest, written by this process
        so it is yours; dest an existing folder puts it inside, like cp; a file of the same name
        is replaced (written beside it, then renamed over it). Returns the path written (a str)
        whose .report says what came back and .report.skipped what did not: links, special files,
        names that could not be written safely (a warning names them too)."""
        with self._client() as client:
            report = transfer.download(client, self.id, path, dest)
        if report.skipped:
            warnings.warn(report.summary(), stacklevel=2)
        return transfer.Downloaded.of(report)


def python_code(code: str) -> list[str]:
    """Code run by this interpreter, unbuffered so that its prints reach the log as they happen
    (and are not lost in a buffer when the job is killed)."""
    return [sys.executable, "-u", "-c", code]


def run(
    code_or_command: str | list[str] | Callable[..., Any],
    *args: Any,
    kwargs: dict[str, Any] | None = None,
    out_pickle: bool = False,
    name: str | None = None,
    network: str | None = None,
    env: dict[str, str] | None = None,
    mounts: list[str] | None = None,
    cwd: str | None = None,
    artifacts: str | dict[str, Any] | None = None,
    backend: str | None = None,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    socket: str | None = None,
    timeout: str | float | None = None,
    **limits: Any,
) -> Job:
    """Submit a job; returns at once with its handle.

    A function is called in the job with args (and kwargs=, a dict: keyword arguments of run itself
    are the job's); job.value() is what it returned, sent back in a safe format (values.py: JSON-able
    values, str, bytes, numpy arrays, pandas DataFrames and Series; out_pickle=True: anything, by
    pickle, which runs code of the job's choosing here). A function of an importable module is sent
    by reference (pickle), one defined in a notebook or script by its source: a top-level def that
    imports what it uses. Arguments are pickled (they must be picklable).

    The job runs in cwd (default: this process's folder), shown read-only at its own path;
    mounts are SRC:DST[:rw] ('.:.:rw' makes that folder writable). network is none, host or
    isolated. artifacts is DIR[:GLOB,...] (relative to cwd) or a dict of destination, patterns: when
    the job ends the executor copies /work's files into a new folder there, DIR/ID8 (the job id's
    first 8 characters), as you; DIR is made if missing. backend="slurm" runs it on a node of the
    Slurm cluster (in the same sandbox), where partition, account and qos pass to Slurm as they are.
    timeout is another name for timeout_s. Limits not given
    come from the executor; sizes and durations take units (memory_mb="1G", timeout_s="10m"). The limits:

    {limits}"""
    if timeout is not None:
        if limits.get("timeout_s") is not None:
            raise SpecError("timeout: give timeout or timeout_s, not both")
        limits["timeout_s"] = timeout
    where = {"backend": backend, "placement": {"partition": partition, "account": account, "qos": qos}}
    if not callable(code_or_command):
        if args or kwargs:
            raise SpecError("run: arguments are for a function: run(fn, *args, kwargs={...})")
        command = python_code(code_or_command) if isinstance(code_or_command, str) else list(code_or_command)
        request = job_request(
            command,
            limits=limits,
            env=env,
            mounts=mounts or (),
            network=network,
            name=name,
            cwd=cwd,
            artifacts=artifacts,
            **where,
        )
        with Client(socket) as client:
            return Job(client.run(request), socket)
    code, given = values.function_call(code_or_command, args, kwargs or {})
    inputs = values.Inputs(given, what="run() arguments")
    try:
        with Client(socket) as client:
            command = values.runner_command(
                code,
                outputs=[RESULT_NAME],
                out_pickle=out_pickle,
                max_value_bytes=values.max_value_bytes(client),
            )
            request = job_request(
                command,
                limits=limits,
                env={**(env or {}), **inputs.env},
                mounts=[*(mounts or ()), inputs.mount],
                network=network,
                name=name or getattr(code_or_command, "__name__", None),
                cwd=cwd,
                artifacts=artifacts,
                **where,
            )
            job = Job(client.run(request), socket)
    except BaseException:
        inputs.remove()
        raise
    job.out_pickle = out_pickle
    job.inputs = inputs
    return job


def attach(job_id: str, socket: str | None = None) -> Job:
    """Show a live widget for a job of yours (by id or unique prefix), running or ended, in this
    notebook, whichever kernel started it: its log and metric history from the start, Stop while it
    runs, its lasting form once it has ended (docs/magics.md). Returns the job's handle."""
    from .widgets import JobWidget  # noqa: PLC0415 - ipywidgets only where a widget is shown

    with Client(socket) as client:
        record = client.get(job_id)
    JobWidget(record, socket).show()
    return Job(record, socket)


# The limit keywords are documented from the table, so a new limit documents itself.
run.__doc__ = (run.__doc__ or "").format(limits="\n    ".join(f"{r.field}: {r.words}" for r in LIMITS))
