"""%%worker and %worker: run a cell or a command as a sandboxed job from a notebook.

    %load_ext jupyter_worker
    %%worker --max-memory 512M --timeout 10m --wait
    import numpy; print(numpy.ones(3))

The cell body is Python run by the kernel's own interpreter (--bash: a shell script), through the
in-job runner (cell.py): display() output, a last expression's value and matplotlib figures come
back as the cell's output, sanitized (richoutput.py); --in A,B gives the job kernel variables (by
pickle), --out C,D sets the job's variables here when it completes (safe formats only, values.py;
--out-pickle: anything, by pickle). The notebook's folder is shown read-only at its own path and
is the job's working directory; --mount .:.:rw makes it writable. Without --wait the cell returns
at once with the job's live widget; where no front end draws widgets (nbconvert, papermill, a
terminal) it streams the job's output instead, an interrupt detaches from the job, and a job that
does not complete fails the cell, so a headless run stops there (--no-fail: it goes on).

What is shown of a job (name, command, status words, errors) is made inert by formatting: control
characters spelled out in text/plain, HTML-escaped with `$` as `&#36;` in a block MathJax skips.

A cell's job is named after its notebook and first line unless --name is given; the widget's
output lasts (widgets.py: once the job has ended, its text and HTML forms alone); `%worker attach
ID` shows any job of yours again. Re-running a cell whose job still runs leaves that job running
(it may be wanted) and the new widget names it with a Stop of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import ipywidgets as widgets
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from . import transfer, values
from .client import Client
from .errors import SpecError, WorkerError
from .flags import JobParser, add_job_flags, request_from_flags
from .formatting import html_job, html_table, inert, text_table
from .jobs import Job, JobFailed
from .richoutput import DisplaySink
from .spec import MAX_NAME_CHARS, JobRecord, JobStatus
from .widgets import JobWidget

USAGE = (
    "%worker run [limits] -- CMD ARGS | list [--status S] [--limit N] [--json] | status ID | logs ID [-f]"
    " | stop ID | attach ID | get ID PATH [DEST]"
)
_NOT_IN_A_NAME = re.compile(r"[^\w .@+-]+")  # spec's name rule: words, spaces and . @ + - only


def _usage(prog: str, message: str) -> NoReturn:
    raise UsageError(f"{prog}: {message}")


def one_line_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython's handler for a WorkerError from the Python API (job.wait(), run(), attach()): one
    line naming the reason, made inert, not the client's internal frames (set_custom_exc)."""
    line = [f"{etype.__name__}: {inert(str(value))}"]
    shell._showtraceback(etype, value, line)
    return line


class JobInterrupted(KeyboardInterrupt):
    """A --wait cell was interrupted and its job stopped: IPython shows this one line."""

    def __init__(self, job: Job):
        super().__init__(f"stopped job {job.id[:8]}")

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def cell_name(session: object, cell: str) -> str | None:
    """A cell job's name: its notebook's file name (ipykernel's `__session__`, where a front end
    gives it) and the cell's first line, within the job name rule (other characters become
    spaces); None when nothing is left (the executor's default then)."""
    first = next((line for line in cell.splitlines() if line.strip()), "")
    notebook = os.path.basename(session) if isinstance(session, str) and session else ""
    words = " - ".join(part for part in (notebook, first) if part)
    name = " ".join(_NOT_IN_A_NAME.sub(" ", words).split())[:MAX_NAME_CHARS].strip()
    return name or None


def _parser(prog: str, *, command: bool) -> JobParser:
    """The job flags (flags.py); %worker run takes its command after --, %%worker runs the cell."""
    parser = JobParser(prog=prog, fail=_usage, add_help=False)
    add_job_flags(parser, command=command)
    return parser


def _cell_args(line: str) -> tuple[argparse.Namespace, list[str], list[str]]:
    """%%worker's flags: the job's (flags.py) and the cell's own; the --in and --out names."""
    parser = _parser("%%worker", command=False)
    parser.add_argument("--bash", action="store_true")
    parser.add_argument("--in", dest="inputs", metavar="A,B", help="kernel variables the job gets (pickled)")
    parser.add_argument("--out", dest="outputs", metavar="C,D", help="job variables set here when it completes")
    parser.add_argument("--out-pickle", action="store_true", help="--out values of any type, by pickle (unsafe)")
    parser.add_argument("--no-fail", action="store_true", help="a job that does not complete does not fail the cell")
    args = parser.parse_args(shlex.split(line))
    try:
        names_in = values.parse_names(args.inputs, "--in")
        names_out = values.parse_names(args.outputs, "--out")
    except SpecError as exc:
        raise UsageError(f"%%worker: {inert(exc.message)}") from None
    if args.bash and (names_in or names_out or args.out_pickle):
        raise UsageError("%%worker: --in, --out and --out-pickle are for Python cells, not --bash")
    return args, names_in, names_out


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
    def __init__(self, shell: Any = None):
        super().__init__(shell)
        self.cell_jobs: dict[str, str] = {}  # which job each cell (by id, else text) started last
        self.last_widget: JobWidget | None = None

    def _submit(self, args: argparse.Namespace, command: list[str] | None = None) -> Job:
        """The job the flags ask for (a bad value or a refusal is a UsageError, one message)."""
        try:
            with Client() as client:
                return Job(client.run(request_from_flags(args, command)))
        except WorkerError as exc:
            raise UsageError(inert(str(exc))) from None

    def _show(
        self, job: Job, on_end: Callable[[JobWidget], Awaitable[None]] | None = None, cell: str | None = None
    ) -> None:
        """The job's widget in this cell's output; a cell's earlier job that still runs is named in it."""
        previous = None
        if cell is not None:
            key = self._cell_key(cell)
            earlier = self.cell_jobs.get(key)
            self.cell_jobs[key] = job.id
            if earlier is not None:
                try:
                    with Client() as client:
                        record = client.get(earlier)
                    previous = None if record.finished else record
                except WorkerError:
                    previous = None
        self.last_widget = JobWidget(job.record, on_end=on_end, previous=previous).show()

    def _cell_key(self, cell: str) -> str:
        """Which cell runs: JupyterLab's cell id where the front end sends it, else the cell's text."""
        parent = getattr(self.shell, "parent_header", None) or {}
        cell_id = (parent.get("metadata") or {}).get("cellId") if isinstance(parent, dict) else None
        return f"id:{cell_id}" if cell_id else f"text:{cell}"

    @cell_magic
    def worker(self, line: str, cell: str) -> None:
        """%%worker [limits] [--wait] [--bash] [--name N] [--in A,B] [--out C,D] [--out-pickle] [--no-fail]:
        run this cell as a sandboxed job.

        The cell's output is the job's widget, its display output (display(), tables, figures)
        under it; where widgets are not drawn (nbconvert, papermill, a terminal) it is the job's
        streamed output and display output. With --wait and headless, a job that does not complete
        fails the cell (--no-fail: it only says so). --in: kernel variables given to the job
        (pickled); --out: the job's variables set here when it completes, in safe formats only
        unless --out-pickle. The handle is `_worker_job` in the namespace."""
        args, names_in, names_out = _cell_args(self.shell.var_expand(line))
        if args.name is None:
            args.name = cell_name(self.shell.user_ns.get("__session__"), cell)
        if args.bash:
            job = self.shell.user_ns["_worker_job"] = self._submit(args, ["bash", "-c", cell])
            inputs = None
        else:
            job, inputs = self._submit_cell(args, cell, names_in, names_out)
            self.shell.user_ns["_worker_job"] = job
        outcome = _CellValues(self.shell, job, inputs, names_out, args.out_pickle)
        if args.wait:
            _wait_cell(job, outcome, no_fail=args.no_fail)
        elif widget_frontend(self.shell):
            self._show(job, on_end=outcome.take_later, cell=cell)
        else:
            try:
                final = _stream_detachable(job, fail=not args.no_fail, on_display=DisplaySink(_publish).feed)
            except JobFailed:
                outcome.release()
                raise
            if final is not None:  # it ended (an interrupt detaches: the job may still need its inputs)
                outcome.release()
                if final.status is JobStatus.COMPLETED:
                    outcome.take()

    def _submit_cell(
        self, args: argparse.Namespace, code: str, names_in: list[str], names_out: list[str]
    ) -> tuple[Job, values.Inputs | None]:
        """A Python cell through the in-job runner (cell.py), with its display channel and values."""
        inputs = None
        try:
            if names_in:
                inputs = values.Inputs(values.gather(self.shell.user_ns, names_in))
                args.mount = [*args.mount, inputs.mount]
            with Client() as client:
                limit = values.max_value_bytes(client) if names_out else None
                command = values.runner_command(
                    code, outputs=names_out, out_pickle=args.out_pickle, max_value_bytes=limit
                )
                request = request_from_flags(args, command)
                request.display = True
                if inputs is not None:  # the file's name by the environment: a command line is public
                    request.env = {**request.env, **inputs.env}
                return Job(client.run(request)), inputs
        except WorkerError as exc:
            if inputs is not None:
                inputs.remove()
            raise UsageError(inert(str(exc))) from None
        except BaseException:
            if inputs is not None:
                inputs.remove()
            raise

    @line_magic("worker")
    def worker_line(self, line: str) -> Job | None:
        """%worker run [limits] -- CMD ARGS | list [--status S] [--limit N] [--json] | status ID |
        logs ID [-f] | stop ID | attach ID | get ID PATH [DEST]"""
        words = shlex.split(self.shell.var_expand(line))
        if not words or words[0] not in ("run", "list", "status", "logs", "stop", "attach", "get"):
            raise UsageError(USAGE)
        verb, rest = words[0], words[1:]
        try:
            if verb == "run":
                return self._run(rest)
            if verb == "attach":
                if len(rest) != 1:
                    raise UsageError("%worker attach ID")
                with Client() as client:  # jobs.attach, keeping the widget at hand
                    self.last_widget = JobWidget(client.get(rest[0])).show()
                return None
            return self._query(verb, rest)
        except WorkerError as exc:
            raise UsageError(inert(str(exc))) from None

    def _run(self, words: list[str]) -> Job | None:
        """A background job: its widget where widgets are drawn, else its id; --wait follows it here
        (and returns its handle once it has completed)."""
        args = _parser("%worker run", command=True).parse_args(words)
        job = self._submit(args)
        if args.wait:
            _wait_or_stop(job)
            return job
        if widget_frontend(self.shell):
            self._show(job)
        else:
            print(f"job {job.id[:8]} submitted: %worker logs {job.id[:8]} -f to follow its output")
        return job

    def _query(self, verb: str, rest: list[str]) -> None:
        with Client() as client:
            if verb == "list":
                self._list(client, rest)
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
                record = client.get(rest[0])
                text = Job(record).logs()  # someone else's job (an admin's look): inert, as the CLI's `log`
                print(inert(text, keep="\n\t") if record.owner_uid != os.getuid() else text, end="")

    @staticmethod
    def _list(client: Client, words: list[str]) -> None:
        """The jobs table, with the CLI's list filters (--status, repeatable; --limit; --json)."""
        parser = JobParser(prog="%worker list", fail=_usage, add_help=False)
        parser.add_argument("--status", action="append", type=str.upper, choices=[s.value for s in JobStatus])
        parser.add_argument("--limit", type=int, default=50)
        parser.add_argument("--json", action="store_true")
        args = parser.parse_args(words)
        if args.limit < 1:
            raise UsageError("%worker list: --limit must be 1 or more")
        records: list[JobRecord] = []
        cursor: int | None = None
        while len(records) < args.limit:  # pages on: a page is short when its records are big
            page, cursor = client.list(status=args.status, limit=args.limit - len(records), cursor=cursor)
            records += page
            if cursor is None:
                break
        if args.json:
            print(json.dumps([record.to_dict() for record in records]))
            return
        display({"text/plain": text_table(records), "text/html": html_table(records)}, raw=True)


def _publish(bundle: dict[str, str]) -> None:
    """A job's display output (sanitized by richoutput) as this cell's own output."""
    display(bundle, raw=True)


class _CellValues:
    """A cell job's --in folder and --out values: the folder goes when the job has ended; the values
    are set in the kernel's namespace when it completed (at once with --wait or headless; under a
    widget when its follow task sees the end, i.e. when the kernel is next idle if a cell is running)."""

    def __init__(self, shell: Any, job: Job, inputs: values.Inputs | None, names: list[str], out_pickle: bool):
        self.shell, self.job, self.inputs, self.names, self.out_pickle = shell, job, inputs, names, out_pickle

    def release(self) -> None:
        if self.inputs is not None:
            self.inputs.remove()

    def read(self) -> tuple[dict[str, Any], list[str]]:
        with Client() as client:
            return values.read_values(client, self.job.id, self.names, allow_pickle=self.out_pickle)

    def take(self) -> None:
        """The values into the namespace; one ValuesNotReturned naming each that did not come back."""
        if not self.names:
            return
        got, problems = self.read()
        self.shell.user_ns.update(got)
        if problems:
            raise values.ValuesNotReturned(problems)

    async def take_later(self, widget: JobWidget) -> None:
        """The widget saw the job end: release the inputs; if it completed, set the values, saying
        under the widget which did not come back."""
        self.release()
        if not self.names or widget.job.status is not JobStatus.COMPLETED:
            return
        try:
            got, problems = await asyncio.get_running_loop().run_in_executor(None, self.read)
        except WorkerError as exc:
            got, problems = {}, [exc.message]
        self.shell.user_ns.update(got)
        widget.notice(
            ("values set: " + ", ".join(got) if got else "")
            + ("; " if got and problems else "")
            + ("values not returned: " + "; ".join(problems) if problems else "")
        )


def _wait_cell(job: Job, outcome: _CellValues, no_fail: bool) -> None:
    """A --wait cell: the job followed here, its values taken once it completed; a job that did not
    complete raises JobFailed (one line) unless no_fail, a lost connection is one line too."""
    try:
        _wait_or_stop(job, on_display=DisplaySink(_publish).feed)
    except WorkerError as exc:
        raise UsageError(inert(str(exc))) from None
    except JobFailed as failed:
        if not no_fail:
            raise
        print(f"\n{inert(str(failed))}", file=sys.stderr)
        return
    finally:
        outcome.release()
    outcome.take()


def _wait_or_stop(job: Job, on_display: Callable[[bytes], None] | None = None) -> None:
    """--wait: the cell is the job, so interrupting the cell stops the job; failure raises JobFailed."""
    try:
        job.wait(stream=True, on_display=on_display)
    except KeyboardInterrupt:
        job.stop()
        raise JobInterrupted(job) from None
    finally:
        _say_artifacts(job)


def _say_artifacts(job: Job) -> None:
    """--artifacts: what came back, in one line, once the job has ended."""
    note = job.artifacts_note()
    if note:
        print(f"artifacts: {note}", file=sys.stderr)


def _stream_detachable(
    job: Job, fail: bool = False, on_display: Callable[[bytes], None] | None = None
) -> JobRecord | None:
    """Follow a background job's output to its end and return its final record; an interrupt
    leaves it running (None). A job that did not complete raises JobFailed if fail (a headless
    cell), else is said."""
    try:
        final = job.wait(stream=True, on_display=on_display)
    except JobFailed as failed:
        _say_artifacts(job)
        if fail:
            raise
        print(f"\n{inert(str(failed))}", file=sys.stderr)
        return failed.job
    except KeyboardInterrupt:
        print(f"\ndetached: job {job.id[:8]} keeps running (%worker logs {job.id[:8]} -f, %worker stop {job.id[:8]})")
        return None
    print(f"\njob {job.id[:8]} completed: {inert(final.ending)}")
    _say_artifacts(job)
    return final
