"""The flags of a job, and the one way a job request is built.

The CLI's `run` and `sandbox` verbs and the magics' `%%worker` and `%worker run` take the same
flags, all added by `add_job_flags`: one per limit (from the table in limits.py), then --network,
--env, --mount and, for jobs sent to the executor, --name and --wait. `request_from_flags` (for
those) and `job_request` (for the Python API's keywords) make a typed `spec.JobRequest`, every value
parsed once there. Each caller says how a usage error is shown through `JobParser`'s `fail`: the CLI
prints one line and exits 2, the magics raise IPython's UsageError.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from . import limits as limit_table
from .errors import SpecError
from .limits import Limits
from .spec import (
    PLACEMENT_KEYS,
    Artifacts,
    BackendName,
    JobRequest,
    Mount,
    NetworkMode,
    Placement,
    parse_env_assignment,
    python_prefixes,
    shown,
)

Fail = Callable[[str, str], NoReturn]  # (the parser's prog, what is wrong)


class JobParser(argparse.ArgumentParser):
    """argparse whose usage errors go to `fail` as one message, never to stderr and exit."""

    def __init__(self, *args: Any, fail: Fail, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fail = fail

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.fail(self.prog, message)


def add_job_flags(
    parser: argparse.ArgumentParser, *, submitted: bool = True, command: bool = True
) -> argparse.ArgumentParser:
    """The flags of a job on parser. submitted: the job goes to the executor (--name, --wait); the
    CLI's sandbox verb runs it in place. command: it comes after -- (a cell is its own command)."""
    limit_table.add_flags(parser)
    parser.add_argument("--network", choices=[mode.value for mode in NetworkMode])
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="set a variable in the job")
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="SRC:DST[:rw]",
        help="show a host folder in the job (read-only unless :rw)",
    )
    place = parser.add_mutually_exclusive_group()
    place.add_argument(
        "--cwd",
        metavar="DIR",
        help="run in DIR, shown read-only at its own path (default: this folder; .:.:rw mounts it writable)",
    )
    place.add_argument("--no-cwd", action="store_true", help="show no host folder: run in the job's own /work")
    if submitted:
        parser.add_argument("--name", help="a name to show beside the id")
        parser.add_argument("--wait", action="store_true", help="follow the job to its end, printing its output")
        parser.add_argument(
            "--artifacts",
            metavar="DIR[:GLOB[,GLOB]]",
            help="when the job ends, copy /work's files (or those matching) into DIR, as you; a name "
            "taken keeps yours, the copy gets -ID8 before its extension",
        )
        cluster = parser.add_argument_group("where it runs (docs/slurm.md)")
        cluster.add_argument(
            "--backend",
            choices=[name.value for name in BackendName],
            help="local: this host (default); slurm: a node of the Slurm cluster, in the same sandbox",
        )
        for key in PLACEMENT_KEYS:
            cluster.add_argument(f"--{key}", metavar="NAME", help=f"Slurm's --{key} (with --backend slurm)")
    if command:
        parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    return parser


def job_request(
    command: list[str],
    *,
    limits: Limits | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    mounts: Iterable[str | Mount] = (),
    network: str | None = None,
    name: str | None = None,
    cwd: str | None = None,
    in_folder: bool = True,
    artifacts: str | Artifacts | Mapping[str, Any] | None = None,
    backend: str | None = None,
    placement: Mapping[str, str | None] | None = None,
) -> JobRequest:
    """A typed request. Limits are parsed once (units, bounds; unknown names refused); a mount
    SRC:DST[:rw] is taken relative to cwd (default: this process's folder).

    in_folder: the job runs in that folder, shown read-only at its own path unless a mount of it
    is given ('.:.:rw' makes it writable), so relative paths work; /work stays the job's own.
    Otherwise (--no-cwd) it starts in /work and shows no host folder but its mounts.
    backend: local or slurm; placement: the cluster's partition, account, qos (each optional)."""
    here = os.path.realpath(cwd) if cwd else os.getcwd()
    parsed = [m if isinstance(m, Mount) else Mount.parse(m, cwd=here) for m in mounts]
    place: dict[str, Any] = {}
    if in_folder:
        if all(m.destination != here for m in parsed):
            parsed.insert(0, Mount(here, here))
        place["cwd"] = here
    wanted = Artifacts.from_value(dict(artifacts) if isinstance(artifacts, Mapping) else artifacts, cwd=here)
    if wanted is not None:  # made now, as this user, so '--artifacts out' works in a fresh folder
        try:
            os.makedirs(wanted.destination, exist_ok=True)
        except OSError as exc:
            raise SpecError(f"artifacts: {shown(wanted.destination)}: {exc.strerror or exc}") from None
    return JobRequest(
        command=list(command),
        name=name,
        limits=limits if isinstance(limits, Limits) else Limits.parse(limits or {}),
        env=dict(env or {}),
        mounts=parsed,
        network=network,
        python_prefixes=python_prefixes(),
        artifacts=wanted,
        backend=backend or BackendName.LOCAL,
        placement=Placement.from_value({k: v for k, v in (placement or {}).items() if v is not None}),
        **place,
    )


def request_from_flags(args: argparse.Namespace, command: list[str] | None = None) -> JobRequest:
    """The request the flags of add_job_flags ask for; the command is the one given (a cell's) or
    the one after --. The job runs in --cwd (relative to this process's folder), in this folder,
    or with --no-cwd in its own /work."""
    if command is None:
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            raise SpecError("no command given (put it after --)")
    return job_request(
        command,
        limits=limit_table.flag_values(args),
        env=dict(parse_env_assignment(e) for e in args.env),
        mounts=args.mount,
        network=args.network,
        name=getattr(args, "name", None),
        cwd=args.cwd,
        in_folder=not args.no_cwd,
        artifacts=getattr(args, "artifacts", None),
        backend=getattr(args, "backend", None),
        placement={key: getattr(args, key, None) for key in PLACEMENT_KEYS},
    )
