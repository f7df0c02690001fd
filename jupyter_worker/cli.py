"""The `jupyter-worker` command line.

For now: `doctor` (what this host can enforce) and `sandbox` (run one command in the sandbox
engine directly, as root, for manual checks). The executor verbs (run, list, status, log, stop,
delete, executor) arrive with the executor daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .sandbox import LaunchSpec, Sandbox, SandboxError
from .sandbox.doctor import diagnose, render
from .spec import Limits, Mount, SpecError, parse_duration, parse_env_assignment


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-memory", type=int, metavar="MB", help="memory limit in MiB (swap excluded)")
    parser.add_argument("--max-cpu", type=int, metavar="PCT", help="CPU limit, percent of one core (200 = two)")
    parser.add_argument("--max-pids", type=int, metavar="N", help="most processes and threads at once")
    parser.add_argument("--max-iobps", type=int, metavar="BPS", help="read and write bytes per second")
    parser.add_argument("--timeout", metavar="DURATION", help="wall-clock limit, e.g. 30s, 10m, 1h")
    parser.add_argument("--network", choices=["none", "host"], default="none")
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--mount", action="append", default=[], metavar="SRC:DST[:rw]")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jupyter-worker", description="Sandboxed background jobs for Jupyter.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    doctor = verbs.add_parser("doctor", help="show what this host can isolate and limit")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    sandbox = verbs.add_parser("sandbox", help="run one command in the sandbox engine (root; manual checks)")
    _add_limit_flags(sandbox)
    sandbox.add_argument("--work-dir", help="host folder shown as the job's writable /work")
    sandbox.add_argument("--json", action="store_true", help="print the outcome as JSON on stderr")
    sandbox.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    return parser


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(
        memory_mb=args.max_memory,
        cpu_percent=args.max_cpu,
        pids=args.max_pids,
        io_bps=args.max_iobps,
        timeout_s=parse_duration(args.timeout, "--timeout") if args.timeout else None,
    )


def _sandbox(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SpecError("no command given (put it after --)")
    spec = LaunchSpec(
        argv=command,
        env=dict(parse_env_assignment(e) for e in args.env),
        limits=_limits(args),
        mounts=[Mount.parse(m, cwd=os.getcwd()) for m in args.mount],
        network=args.network,
        work_dir=os.path.abspath(args.work_dir) if args.work_dir else None,
    )
    with Sandbox() as sandbox:
        job = sandbox.launch(spec, 0, 1, 2)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "doctor":
            report = diagnose(args.cgroup_root)
            print(json.dumps(report, indent=2) if args.json else render(report))
            return 0
        return _sandbox(args)
    except (SpecError, SandboxError) as exc:
        print(f"jupyter-worker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
