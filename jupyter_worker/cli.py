"""The `jupyter-worker` command line: the executor's verbs, the daemon itself, and the host check.

    jupyter-worker run [limits] [--wait] [--json] -- CMD ARGS   submit a job (prints it, or streams it)
        in this folder, shown read-only at its own path (--cwd DIR: another; --no-cwd: none, start in /work)
        limits: --max-memory 512M, --timeout 10m, ... (flags.py, from the table in limits.py)
    jupyter-worker list | status ID | log ID [--follow] [--raw] | stop ID | delete ID
        stop waits a moment for the job's end and says it; a job that had ended is said so (exit 0)
    jupyter-worker cp ID:PATH [DEST]                                a file or folder of a job's /work, here
    jupyter-worker executor [--socket PATH] [--state-dir DIR] [--config FILE]   the daemon (root)
    jupyter-worker doctor [--json]           can I use it here: a verdict, the executor (and my role),
        the server extension, the kernels' socket and kernelspec, the network modes; then the host
    jupyter-worker kernelspec install [--user|--sys-prefix|--prefix P]   a kernel other environments
        (papermill, nbclient) can run: this Python by its path, the magics loaded
    jupyter-worker sandbox [limits] -- CMD ARGS                  one command, engine only (root)

Clients find the executor by --socket or $JUPYTER_WORKER_SOCKET. IDs may be shortened to any
unique prefix. An error is one line on stderr; the exit code is its reason's (errors.ErrorReason):
2 when the request is wrong, 1 when it is refused; an interrupt exits 130 (a --wait job is
stopped first), a closed pipe (| head) 141, quietly.

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
import time
from collections.abc import Callable
from typing import NoReturn

from . import kernelspec, transfer
from .client import Client
from .errors import ErrorReason, WorkerError
from .flags import JobParser, add_job_flags, request_from_flags
from .formatting import LogWriter, artifacts_line, follow_log, inert, job_lines, text_table
from .sandbox import LaunchSpec, Sandbox, SandboxError
from .spec import JobRecord, JobStatus, NetworkMode

PROG = "jupyter-worker"
STOP_WAIT_S = 15.0  # how long `stop` waits to say how the job ended (a job's grace is usually less)


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
    verb_help = (("status", "show one job"), ("stop", "stop a job, say its end"), ("delete", "delete an ended job"))
    for verb, text in verb_help:
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
    doctor = verbs.add_parser("doctor", help="can I use jupyter-worker here; then what this host can isolate and limit")
    doctor.add_argument("--json", action="store_true", help="the whole report as JSON")
    doctor.add_argument("--socket", default=argparse.SUPPRESS, help="the executor socket to try")
    doctor.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    spec = verbs.add_parser("kernelspec", help="install the jupyter-worker kernel for other environments")
    spec.add_argument("action", choices=["install"])
    where = spec.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for you only (the default unless root)")
    where.add_argument("--sys-prefix", action="store_true", help="for this environment only")
    where.add_argument("--prefix", metavar="PREFIX", help="under PREFIX/share/jupyter/kernels")
    spec.add_argument("--name", default=kernelspec.NAME, help=f"the kernel's name (default {kernelspec.NAME})")
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
    try:
        final = follow_log(client.follow(record.id), LogWriter())
    except KeyboardInterrupt:  # the job was followed in the foreground: an interrupt ends it, as a shell's would
        client.stop(record.id)
        print(f"\n{PROG}: stopped job {record.id[:8]}", file=sys.stderr)
        return 130
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
        if args.verb == "stop":
            return _stop(client, args)
        _show(client.get(args.job_id), args.json)
        return 0


def _stop(client: Client, args: argparse.Namespace) -> int:
    """Stop a job and say how it ended, waiting up to STOP_WAIT_S for it (its grace period). A job
    that had already ended is said so, exit 0: what was asked for (the job not running) holds, so a
    script's cleanup may stop a job twice."""
    before = client.get(args.job_id)
    short = before.id[:8]
    if before.finished:
        if not args.json:
            print(f"job {short} had already ended: {before.status.value.lower()} ({inert(before.ending)})")
        else:
            print(json.dumps(before.to_dict()))
        return 0
    record = client.stop(before.id)
    if not args.json:
        print(f"stopping {short}...", flush=True)
    deadline = time.monotonic() + STOP_WAIT_S
    while not record.finished and time.monotonic() < deadline:
        time.sleep(0.2)
        record = client.get(record.id)
    if args.json:
        print(json.dumps(record.to_dict()))
    elif record.finished:
        print(f"job {short} {record.status.value.lower()} ({inert(record.ending)})")
    else:
        print(f"job {short} is still stopping (killed at the end of its grace period): {PROG} status {short}")
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
        **({"cwd": request.cwd} if request.cwd else {}),
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
    """The report; exit 0 when jobs can be run from here, 1 when not (the verdict says why)."""
    from .doctor import diagnose_all, render  # noqa: PLC0415 - pyroute2 and Jupyter: only this verb needs them

    report = diagnose_all(args.socket, args.cgroup_root)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ready"] else 1


def _kernelspec(args: argparse.Namespace) -> int:
    user = args.user or (os.geteuid() != 0 and not args.sys_prefix and not args.prefix)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    folder = kernelspec.install(user=user, prefix=prefix, name=args.name)
    print(f"installed kernel {inert(args.name)} ({kernelspec.DISPLAY_NAME}) in {inert(folder)}: runs {sys.executable}")
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
        # The reader went away (| head): the rest goes nowhere, and the flush at exit must not fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except OSError as exc:  # a socket in a folder one may not enter, a timeout: one line, no frames
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", 1)


def _dispatch(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "doctor":
        return _doctor(args)
    if args.verb == "sandbox":
        return _sandbox(args)
    if args.verb == "kernelspec":
        return _kernelspec(args)
    return _client_verb(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["executor"]:
        from .executor.app import main as executor_main  # noqa: PLC0415 - the daemon's stack, for it alone

        executor_main(argv[1:])
        return 0
    return report_errors(lambda: _dispatch(argv))


if __name__ == "__main__":
    sys.exit(main())
