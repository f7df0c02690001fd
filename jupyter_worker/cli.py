"""The `jupyter-worker` command line: the executor's verbs, the daemon itself, and the host check.

    jupyter-worker run [limits] [--wait] [--json] -- CMD ARGS   submit a job (prints it, or streams it)
        in this folder, shown read-only at its own path (--cwd DIR: another; --no-cwd: none, start in /work)
        limits: --max-memory 512M, --timeout 10m, ... (flags.py, from the table in limits.py)
    jupyter-worker list | status ID | log ID [--follow] [--raw] | stop ID | delete ID
    jupyter-worker cp ID:PATH [DEST]                                a file or folder of a job's /work, here
    jupyter-worker executor [--socket PATH] [--state-dir DIR] [--config FILE]   the daemon (root)
    jupyter-worker doctor [--json]                               what this host can enforce
    jupyter-worker sandbox [limits] -- CMD ARGS                  one command, engine only (root)

Clients find the executor by --socket or $JUPYTER_WORKER_SOCKET. IDs may be shortened to any
unique prefix. An error is one line on stderr; the exit code is its reason's (errors.ErrorReason):
2 when the request is wrong, 1 when it is refused.

Everything shown comes through formatting.inert: a name, command, owner or error another user
chose never reaches this terminal as control characters. A job's log is its owner's output and is
written as the job wrote it to its owner; to anyone else (an admin, a viewer) it is shown inert too
unless they ask for --raw.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from . import transfer
from .client import Client
from .errors import ErrorReason, WorkerError
from .executor.app import main as executor_main
from .flags import JobParser, add_job_flags, request_from_flags
from .formatting import LogWriter, artifacts_line, follow_log, inert, job_lines, text_table
from .sandbox import LaunchSpec, Sandbox, SandboxError
from .sandbox.doctor import diagnose, render
from .spec import JobRecord, JobStatus, NetworkMode

PROG = "jupyter-worker"


def _usage(prog: str, message: str) -> NoReturn:
    """A usage error, shown under the one 'jupyter-worker:' prefix with the verb named once."""
    verb = prog.removeprefix(PROG).strip()
    raise WorkerError(ErrorReason.BAD_REQUEST, f"{verb}: {message}" if verb else message)


def _parser() -> argparse.ArgumentParser:
    parser = JobParser(prog=PROG, fail=_usage, description="Sandboxed background jobs for Jupyter.")
    parser.add_argument("--socket", help="executor socket (default: $JUPYTER_WORKER_SOCKET or /run/...)")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=functools.partial(JobParser, fail=_usage))
    run = add_job_flags(verbs.add_parser("run", help="submit a job"))
    run.add_argument("--json", action="store_true", help="print the job record as JSON")
    listing = verbs.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--status", action="append", choices=[status.value for status in JobStatus])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    for verb, text in (("status", "show one job"), ("stop", "stop a job"), ("delete", "delete a finished job")):
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument("job_id", metavar="ID")
        sub.add_argument("--json", action="store_true")
    log = verbs.add_parser("log", help="print a job's output")
    log.add_argument("job_id", metavar="ID")
    log.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    log.add_argument("--raw", action="store_true", help="another user's log as written, control characters and all")
    copy = verbs.add_parser("cp", help="copy a file or folder (recursively) from a job's /work")
    copy.add_argument("source", metavar="ID:PATH", help="a job and a path in its /work (ID: for all of it)")
    copy.add_argument("dest", metavar="DEST", nargs="?", default=".", help="a file or folder here (default: .)")
    verbs.add_parser("executor", help="run the executor daemon (root); --help-all for its options")
    doctor = verbs.add_parser("doctor", help="show what this host can isolate and limit")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    sandbox = verbs.add_parser("sandbox", help="run one command in the sandbox engine (root; manual checks)")
    add_job_flags(sandbox, submitted=False)
    sandbox.add_argument("--work-dir", help="host folder shown as the job's writable /work")
    sandbox.add_argument("--json", action="store_true", help="print the outcome as JSON on stderr")
    return parser


def _show(record: JobRecord, as_json: bool) -> None:
    print(json.dumps(record.to_dict()) if as_json else "\n".join(job_lines(record)))


def _run(client: Client, args: argparse.Namespace) -> int:
    # The CLI's jobs start in /work; the magics' and the Python API's in the caller's folder.
    record = client.run(request_from_flags(args))
    if not args.wait:
        _show(record, args.json)
        return 0
    final = follow_log(client.follow(record.id), LogWriter())
    if args.json:
        print(json.dumps(final.to_dict()), file=sys.stderr)
    else:
        if final.artifacts:
            print(f"{PROG}: artifacts: {artifacts_line(final)}", file=sys.stderr)
        if final.status is not JobStatus.COMPLETED:
            print(f"{PROG}: job {final.id[:8]} {final.status.value.lower()} ({inert(final.ending)})", file=sys.stderr)
    return final.shell_code


def _log(client: Client, args: argparse.Namespace) -> int:
    # Someone else's job (an admin reading a user's log): its bytes are shown inert unless --raw.
    others = not args.raw and client.get(args.job_id).owner_uid != os.getuid()
    writer = LogWriter(inert=others)
    if args.follow:
        follow_log(client.follow(args.job_id), writer)
        return 0
    offset = 0
    while True:
        chunks, offset, _ = client.logs(args.job_id, offset)
        if not chunks:
            return 0
        for chunk in chunks:
            writer.write(chunk.stream, chunk.data)


def _cp(client: Client, args: argparse.Namespace) -> int:
    job_id, colon, path = args.source.partition(":")
    if not colon or not job_id:
        raise WorkerError(ErrorReason.BAD_REQUEST, f"cp: {inert(args.source)} is not ID:PATH (ID: copies all of /work)")
    report = transfer.download(client, job_id, path, args.dest)
    print(report.summary())
    return 0


def _client_verb(args: argparse.Namespace) -> int:
    with Client(args.socket) as client:
        if args.verb == "run":
            return _run(client, args)
        if args.verb == "log":
            return _log(client, args)
        if args.verb == "cp":
            return _cp(client, args)
        if args.verb == "list":
            records, cursor = client.list(status=args.status, limit=args.limit)
            while cursor is not None and len(records) < args.limit:  # a page is short when its records are big
                more, cursor = client.list(status=args.status, limit=args.limit - len(records), cursor=cursor)
                records += more
            if args.json:
                print(json.dumps([record.to_dict() for record in records]))
            else:
                print(text_table(records), end="")
            return 0
        if args.verb == "delete":
            client.delete(args.job_id)
            print("{}" if args.json else f"deleted {inert(args.job_id)}")
            return 0
        record = client.get(args.job_id) if args.verb == "status" else client.stop(args.job_id)
        _show(record, args.json)
        return 0


def _sandbox(args: argparse.Namespace) -> int:
    request = request_from_flags(args)
    spec = LaunchSpec(
        argv=request.command,
        env=request.env,
        limits=request.limits,
        mounts=request.mounts,
        network=request.network or NetworkMode.NONE,
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
        print(f"{PROG}: {inert(outcome.error)}", file=sys.stderr)
    return outcome.shell_code


def _doctor(args: argparse.Namespace) -> int:
    report = diagnose(args.cgroup_root)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {inert(' '.join(message.splitlines()))}", file=sys.stderr)
    return code


def report_errors(action: Callable[[], int]) -> int:
    """The CLI's one error boundary: runs a verb; a refusal is one line on stderr and exits with its
    reason's code (2: the request is wrong, 1: refused; errors.ErrorReason), never a traceback."""
    try:
        return action()
    except WorkerError as exc:
        return _fail(exc.message, exc.reason.exit_code)
    except SandboxError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


def _dispatch(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "doctor":
        return _doctor(args)
    if args.verb == "sandbox":
        return _sandbox(args)
    return _client_verb(args)


        **({"cwd": request.cwd} if request.cwd else {}),
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["executor"]:
        executor_main(argv[1:])
        return 0
    return report_errors(lambda: _dispatch(argv))


if __name__ == "__main__":
    sys.exit(main())
