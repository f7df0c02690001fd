"""%%worker and %worker: run a cell or a command as a sandboxed job from a notebook.

    %load_ext jupyter_worker
    %%worker --max-memory 512M --timeout 10m --wait
    import numpy; print(numpy.ones(3))

The cell body is Python run by the kernel's own interpreter (--bash: a shell script). The
notebook's folder is shown read-only at its own path and is the job's working directory;
--mount .:.:rw makes it writable. Without --wait the cell returns at once with the job's live
widget; where no front end draws widgets (nbconvert, papermill, a terminal) it streams the job's
output instead, and an interrupt detaches from the job.

What is shown of a job (name, command, status words, errors) is made inert by formatting: control
characters spelled out in text/plain, HTML-escaped with `$` as `&#36;` in a block MathJax skips.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import NoReturn

import ipywidgets as widgets
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from . import transfer
from .client import Client
from .errors import WorkerError
from .flags import JobParser, add_job_flags, request_from_flags
from .formatting import html_job, html_table, inert, text_table
from .jobs import Job, JobFailed, python_code
from .widgets import JobWidget


def _usage(prog: str, message: str) -> NoReturn:
    raise UsageError(f"{prog}: {message}")


def _parser(prog: str, *, command: bool) -> JobParser:
    """The job flags (flags.py); %worker run takes its command after --, %%worker runs the cell."""
    parser = JobParser(prog=prog, fail=_usage, add_help=False)
    add_job_flags(parser, command=command)
    return parser


def widget_frontend(shell: object) -> bool:
    """Whether this cell's output will be drawn by a front end that renders widgets.

    Headless runners (nbconvert, papermill, `jupyter execute`: all nbclient) send their cells with
    allow_stdin off; interactive front ends allow input or have opened ipywidgets' control channel.
    A terminal IPython has no kernel at all."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    return bool(getattr(kernel, "_allow_stdin", False)) or widgets.Widget._control_comm is not None


@magics_class
class WorkerMagics(Magics):
    def _submit(self, args: argparse.Namespace, command: list[str] | None = None) -> Job:
        """The job the flags ask for (a bad value or a refusal is a UsageError, one message)."""
        try:
            with Client() as client:
                return Job(client.run(request_from_flags(args, command)))
        except WorkerError as exc:
            raise UsageError(inert(str(exc))) from None

    def _show(self, job: Job) -> None:
        self.last_widget = JobWidget(job.record)
        display(self.last_widget.box)

    @cell_magic
    def worker(self, line: str, cell: str) -> None:
        """%%worker [limits] [--wait] [--bash] [--name N]: run this cell as a sandboxed job.

        The cell's output is the job's widget; where widgets are not drawn (nbconvert, papermill,
        a terminal) it is the job's streamed output. The handle is `_worker_job` in the namespace."""
        parser = _parser("%%worker", command=False)
        parser.add_argument("--bash", action="store_true")
        args = parser.parse_args(shlex.split(self.shell.var_expand(line)))
        command = ["bash", "-c", cell] if args.bash else python_code(cell)
        job = self.shell.user_ns["_worker_job"] = self._submit(args, command)
        if args.wait:
            _wait_or_stop(job)
        elif widget_frontend(self.shell):
            self._show(job)
        else:
            _stream_detachable(job)

    @line_magic("worker")
    def worker_line(self, line: str) -> Job | None:
        """%worker run [limits] -- CMD ARGS | list | status ID | logs ID [-f] | stop ID | get ID PATH [DEST]"""
        words = shlex.split(self.shell.var_expand(line))
        if not words or words[0] not in ("run", "list", "status", "logs", "stop", "get"):
            raise UsageError(
                "%worker run [limits] -- CMD ARGS | list | status ID | logs ID [-f] | stop ID | get ID PATH [DEST]"
            )
        verb, rest = words[0], words[1:]
        if verb == "run":
            return self._run(rest)
        try:
            return self._query(verb, rest)
        except WorkerError as exc:
            raise UsageError(inert(str(exc))) from None

    def _run(self, words: list[str]) -> Job | None:
        """A background job: its widget where widgets are drawn, else its id; --wait follows it here."""
        args = _parser("%worker run", command=True).parse_args(words)
        job = self._submit(args)
        if args.wait:
            _wait_or_stop(job)
            return None
        if widget_frontend(self.shell):
            self._show(job)
        else:
            print(f"job {job.id[:8]} submitted: %worker logs {job.id[:8]} -f to follow its output")
        return job

    def _query(self, verb: str, rest: list[str]) -> None:
        with Client() as client:
            if verb == "list":
                records, _ = client.list(limit=50)
                display({"text/plain": text_table(records), "text/html": html_table(records)}, raw=True)
                return
            if not rest:
                raise UsageError(f"%worker {verb} ID")
            if verb == "status":
                record = client.get(rest[0])
                line = f"{inert(record.id)} {record.status.value} ({inert(record.ending)})\n"
                display({"text/plain": line, "text/html": html_job(record)}, raw=True)
            elif verb == "stop":
                client.stop(rest[0])
                print(f"stopping {inert(rest[0])}")
            elif verb == "get":
                # a file or folder of the job's /work into this folder (or DEST), written by the kernel
                if not 2 <= len(rest) <= 3:
                    raise UsageError("%worker get ID PATH [DEST]")
                print(transfer.download(client, rest[0], rest[1], rest[2] if len(rest) == 3 else ".").summary())
            elif "-f" in rest[1:]:
                _stream_detachable(Job(client.get(rest[0])))
            else:
                print(Job(client.get(rest[0])).logs(), end="")


def _wait_or_stop(job: Job) -> None:
    """--wait: the cell is the job, so interrupting the cell stops the job; failure raises JobFailed."""
    try:
        job.wait(stream=True)
    except KeyboardInterrupt:
        job.stop()
        print(f"\njob {job.id[:8]} stopped: the cell was interrupted", file=sys.stderr)
        raise


def _stream_detachable(job: Job) -> None:
    """Follow a background job's output to its end; an interrupt leaves it running."""
    try:
        final = job.wait(stream=True)
    except JobFailed as failed:
        print(f"\n{inert(str(failed))}", file=sys.stderr)
        return
    except KeyboardInterrupt:
        print(f"\ndetached: job {job.id[:8]} keeps running (%worker logs {job.id[:8]} -f, %worker stop {job.id[:8]})")
        return
    print(f"\njob {job.id[:8]} completed: {inert(final.ending)}")
