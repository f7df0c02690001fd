"""%%worker and %worker: run a cell or a command as a sandboxed job from a notebook.

    %load_ext jupyter_worker
    %%worker --max-memory 512 --timeout 10m --wait
    import numpy; print(numpy.ones(3))

The cell body is Python run by the kernel's own interpreter (--bash: a shell script). The
notebook's folder is shown read-only at its own path and is the job's working directory;
--mount .:.:rw makes it writable. Without --wait the cell returns at once with the job's id.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from .client import Client, ExecutorError
from .jobs import Job, JobFailed, describe_ending, job_request
from .spec import SpecError, parse_env_assignment, requested_limits
from .widgets import JobWidget


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _limit_parser(prog: str) -> _Parser:
    parser = _Parser(prog=prog, add_help=False)
    parser.add_argument("--max-memory", type=int, metavar="MB")
    parser.add_argument("--max-cpu", type=int, metavar="PCT")
    parser.add_argument("--max-pids", type=int, metavar="N")
    parser.add_argument("--max-iobps", type=int, metavar="BPS")
    parser.add_argument("--timeout", metavar="DURATION")
    parser.add_argument("--network", choices=["none", "host"])
    parser.add_argument("--mount", action="append", default=[], metavar="SRC:DST[:rw]")
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--name")
    parser.add_argument("--wait", action="store_true")
    return parser


def _request(args: argparse.Namespace, command: list[str]) -> dict:
    timeout = args.timeout or None
    limits = requested_limits(
        memory_mb=args.max_memory,
        cpu_percent=args.max_cpu,
        pids=args.max_pids,
        io_bps=args.max_iobps,
        timeout=timeout,
        timeout_label="--timeout",
    )
    env = dict(parse_env_assignment(e) for e in args.env)
    return job_request(command, limits, env=env, mounts=args.mount, network=args.network, name=args.name)


@magics_class
class WorkerMagics(Magics):
    def _submit(self, args: argparse.Namespace, command: list[str]) -> Job | None:
        try:
            with Client() as client:
                job = Job(client.run(_request(args, command)))
        except (SpecError, ExecutorError) as exc:
            raise UsageError(str(exc)) from None
        if args.wait:
            job.wait(stream=True)
            return None
        if self._shows_widgets():
            self.last_widget = JobWidget(job.record)
            display(self.last_widget.box)
        else:
            print(f"job {job.id[:8]} submitted: %worker logs {job.id[:8]} -f to follow its output")
        return job

    def _shows_widgets(self) -> bool:
        """Only a kernel talking to a front end renders widgets; a terminal IPython gets text."""
        return type(self.shell).__name__ == "ZMQInteractiveShell"

    @cell_magic
    def worker(self, line: str, cell: str) -> None:
        """%%worker [limits] [--wait] [--bash] [--name N]: run this cell as a sandboxed job.

        The cell's output is the job's widget (or its streamed output with --wait); the job's
        handle is `_worker_job` in the notebook's namespace."""
        parser = _limit_parser("%%worker")
        parser.add_argument("--bash", action="store_true")
        args = parser.parse_args(shlex.split(self.shell.var_expand(line)))
        command = ["bash", "-c", cell] if args.bash else [sys.executable, "-c", cell]
        self.shell.user_ns["_worker_job"] = self._submit(args, command)

    @line_magic("worker")
    def worker_line(self, line: str) -> Job | list | None:
        """%worker run [limits] -- CMD ARGS | list | status ID | logs ID [-f] | stop ID"""
        words = shlex.split(self.shell.var_expand(line))
        if not words or words[0] not in ("run", "list", "status", "logs", "stop"):
            raise UsageError("%worker run [limits] -- CMD ARGS | list | status ID | logs ID [-f] | stop ID")
        verb, rest = words[0], words[1:]
        if verb == "run":
            split = rest.index("--") if "--" in rest else len(rest)
            args = _limit_parser("%worker run").parse_args(rest[:split])
            if not rest[split + 1 :]:
                raise UsageError("%worker run: no command given (put it after --)")
            return self._submit(args, rest[split + 1 :])
        try:
            return self._query(verb, rest)
        except ExecutorError as exc:
            raise UsageError(str(exc)) from None

    def _query(self, verb: str, rest: list[str]) -> None:
        with Client() as client:
            if verb == "list":
                jobs, _ = client.list(limit=50)
                print(f"{'ID':<9} {'STATUS':<10} {'NAME':<16} {'COMMAND':<32} ENDED")
                for job in jobs:
                    command = " ".join(" ".join(job["command"]).split())[:32]
                    print(f"{job['id'][:8]:<9} {job['status']:<10} {job['name'][:16]:<16} {command:<32} "
                          f"{describe_ending(job) if job['finished_at'] else ''}")  # fmt: skip
                return
            if not rest:
                raise UsageError(f"%worker {verb} ID")
            if verb == "status":
                job = client.get(rest[0])
                print(f"{job['id']} {job['status']} ({describe_ending(job)})")
            elif verb == "stop":
                client.stop(rest[0])
                print(f"stopping {rest[0]}")
            elif "-f" in rest[1:]:
                with contextlib.suppress(JobFailed):
                    Job(client.get(rest[0])).wait(stream=True)
            else:
                print(Job(client.get(rest[0])).logs(), end="")
