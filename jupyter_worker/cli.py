"""The `jupyter-worker` command line: the executor's verbs, the daemon itself, and the host check.

    jupyter-worker run [limits] [--wait] [--json] -- CMD ARGS   submit a job (prints it, or streams it)
    jupyter-worker list | status ID | log ID [--follow] | stop ID | delete ID
    jupyter-worker executor [--socket PATH] [--state-dir DIR] [--config FILE]   the daemon (root)
    jupyter-worker doctor [--json]                               what this host can enforce
    jupyter-worker sandbox [limits] -- CMD ARGS                  one command, engine only (root)

Clients find the executor by --socket or $JUPYTER_WORKER_SOCKET. IDs may be shortened to any
unique prefix. Errors are one line on stderr; the exit code is 2 for bad input, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any

from .client import Client, ExecutorError
from .executor.app import main as executor_main
from .jobs import add_limit_flags, flag_limits, text_table
from .sandbox import LaunchSpec, Sandbox, SandboxError
from .sandbox.doctor import diagnose, render
from .spec import (
    Limits,
    Mount,
    Outcome,
    Reason,
    SpecError,
    describe_ending,
    parse_env_assignment,
    python_prefixes,
)

_BAD_INPUT = {"bad_request", "invalid", "ambiguous", "version"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error of this command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SpecError(f"{self.prog}: {message}")


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    add_limit_flags(parser)
    parser.add_argument("--network", choices=["none", "host", "isolated"])
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--mount", action="append", default=[], metavar="SRC:DST[:rw]")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jupyter-worker", description="Sandboxed background jobs for Jupyter.")
    parser.add_argument("--socket", help="executor socket (default: $JUPYTER_WORKER_SOCKET or /run/...)")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    run = verbs.add_parser("run", help="submit a job")
    _add_limit_flags(run)
    run.add_argument("--name", help="a name to show beside the id")
    run.add_argument("--wait", action="store_true", help="stream the log and exit with the job's code")
    run.add_argument("--json", action="store_true", help="print the job record as JSON")
    listing = verbs.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--status", action="append", choices=["QUEUED", "RUNNING", "COMPLETED", "FAILED", "STOPPED"])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    for verb, text in (("status", "show one job"), ("stop", "stop a job"), ("delete", "delete a finished job")):
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument("job_id", metavar="ID")
        sub.add_argument("--json", action="store_true")
    log = verbs.add_parser("log", help="print a job's output")
    log.add_argument("job_id", metavar="ID")
    log.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    verbs.add_parser("executor", help="run the executor daemon (root); --help-all for its options")
    doctor = verbs.add_parser("doctor", help="show what this host can isolate and limit")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    sandbox = verbs.add_parser("sandbox", help="run one command in the sandbox engine (root; manual checks)")
    _add_limit_flags(sandbox)
    sandbox.add_argument("--work-dir", help="host folder shown as the job's writable /work")
    sandbox.add_argument("--json", action="store_true", help="print the outcome as JSON on stderr")
    return parser


def _command(args: argparse.Namespace) -> list[str]:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SpecError("no command given (put it after --)")
    return command


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    limits = flag_limits(args)
    Limits.from_dict(limits)
    return limits


def _job_request(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": _command(args),
        "name": args.name,
        "limits": _limits(args),
        "env": dict(parse_env_assignment(e) for e in args.env),
        "mounts": [Mount.parse(m, cwd=os.getcwd()).to_dict() for m in args.mount],
        "network": args.network,
        "python_prefixes": python_prefixes(),
    }


def _time(stamp: float | None) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


def _ending(job: dict[str, Any]) -> str:
    return "" if job["status"] in ("QUEUED", "RUNNING") else f" ({describe_ending(job)})"


def _print_job(job: dict[str, Any]) -> None:
    print(f"ID:        {job['id']}")
    print(f"Name:      {job['name']}")
    print(f"Owner:     {job['owner']}")
    print(f"Command:   {' '.join(job['command'])}")
    print(f"Status:    {job['status']}{_ending(job)}")
    print(f"StartTime: {_time(job.get('started_at'))}")
    print(f"Limits:    {', '.join(f'{k}={v}' for k, v in job['limits'].items() if v is not None)}")
    if job.get("stopped_by"):
        print(f"StoppedBy: {job['stopped_by']}")
    metrics = job.get("metrics") or {}
    if metrics:
        print(
            f"Usage:     cpu {metrics.get('cpu_seconds', 0):.2f}s, memory peak "
            f"{metrics.get('memory_peak_bytes', 0) / 2**20:.1f} MiB, wall {metrics.get('wall_seconds', 0):.2f}s"
        )


def _shell_code(job: dict[str, Any]) -> int:
    return Outcome(Reason(job["reason"]), job.get("exit_code"), job.get("signal")).shell_code


def _stream_log(client: Client, job_id: str) -> dict[str, Any]:
    """Write the job's output to our stdout and stderr as it comes; returns the final record."""
    for event in client.follow(job_id):
        if event["event"] == "log":
            stream = sys.stderr if event["stream"] in ("stderr", "notice") else sys.stdout
            stream.buffer.write(event["data"])
            stream.flush()
        elif event["event"] == "end":
            return event["job"]
    raise ExecutorError("disconnected", "the log ended before the job did")


def _run(client: Client, args: argparse.Namespace) -> int:
    job = client.run(_job_request(args))
    if not args.wait:
        print(json.dumps(job)) if args.json else _print_job(job)
        return 0
    final = _stream_log(client, job["id"])
    if args.json:
        print(json.dumps(final), file=sys.stderr)
    elif final["status"] != "COMPLETED":
        print(f"jupyter-worker: job {final['id'][:8]} {final['status'].lower()}{_ending(final)}", file=sys.stderr)
    return _shell_code(final)


def _log(client: Client, args: argparse.Namespace) -> int:
    if args.follow:
        _stream_log(client, args.job_id)
        return 0
    offset = 0
    while True:
        chunks, offset, _ = client.logs(args.job_id, offset)
        if not chunks:
            return 0
        for chunk in chunks:
            stream = sys.stderr if chunk.stream in ("stderr", "notice") else sys.stdout
            stream.buffer.write(chunk.data)
            stream.flush()


def _client_verb(args: argparse.Namespace) -> int:
    with Client(args.socket) as client:
        if args.verb == "run":
            return _run(client, args)
        if args.verb == "log":
            return _log(client, args)
        if args.verb == "list":
            jobs, _ = client.list(status=args.status, limit=args.limit)
            print(json.dumps(jobs)) if args.json else print(text_table(jobs), end="")
            return 0
        if args.verb == "delete":
            client.delete(args.job_id)
            print(f"deleted {args.job_id}") if not args.json else print("{}")
            return 0
        job = client.get(args.job_id) if args.verb == "status" else client.stop(args.job_id)
        print(json.dumps(job)) if args.json else _print_job(job)
        return 0


def _sandbox(args: argparse.Namespace) -> int:
    spec = LaunchSpec(
        argv=_command(args),
        env=dict(parse_env_assignment(e) for e in args.env),
        limits=Limits.from_dict(_limits(args)),
        mounts=[Mount.parse(m, cwd=os.getcwd()) for m in args.mount],
        network=args.network or "none",
        work_dir=os.path.abspath(args.work_dir) if args.work_dir else None,
    )
    with Sandbox() as sandbox, sandbox.launch(spec, 0, 1, 2) as job:
        try:
            outcome = job.wait()
        except KeyboardInterrupt:
            job.stop()
            outcome = job.wait()
    assert outcome is not None
    if args.json:
        print(json.dumps(outcome.to_dict()), file=sys.stderr)
    elif outcome.error:
        print(f"jupyter-worker: {outcome.error}", file=sys.stderr)
    return outcome.shell_code


def _doctor(args: argparse.Namespace) -> int:
    report = diagnose(args.cgroup_root)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["executor"]:
        executor_main(argv[1:])
        return 0
    try:
        args = _parser().parse_args(argv)
        if args.verb == "doctor":
            return _doctor(args)
        if args.verb == "sandbox":
            return _sandbox(args)
        return _client_verb(args)
    except SpecError as exc:
        print(f"jupyter-worker: {exc}", file=sys.stderr)
        return 2
    except SandboxError as exc:
        print(f"jupyter-worker: {exc}", file=sys.stderr)
        return 1
    except ExecutorError as exc:
        print(f"jupyter-worker: {exc}", file=sys.stderr)
        return 2 if exc.reason in _BAD_INPUT else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
