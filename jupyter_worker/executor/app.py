"""`jupyter-worker executor`: the privileged daemon, configured with traitlets.

Configuration comes from a file (`--config FILE`, Python or JSON) and the command line
(`--socket`, `--state-dir`, `--Policy.max_concurrent_jobs=4`, ...); see docs/configuration.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import stat

from traitlets import Bool, Int, TraitError, Unicode
from traitlets.config import Application

from ..limits import LIMITS
from ..sandbox import Sandbox
from . import service_unit
from .local import LocalBackend
from .policy import Policy, group_exists
from .server import Server
from .service import Executor
from .slurm.backend import SlurmBackend
from .slurm.config import SlurmBackendConfig
from .store import JobStore
from .supervision import Backend

DEFAULT_SOCKET = "/run/jupyter-worker/executor.sock"
DEFAULT_STATE_DIR = "/var/lib/jupyter-worker"


class ExecutorApp(Application):
    name = "jupyter-worker-executor"
    description = "The jupyter-worker executor: runs sandboxed jobs for local clients (as root)."
    classes = (Policy, SlurmBackendConfig)

    socket = Unicode(DEFAULT_SOCKET, help="Unix socket clients connect to").tag(config=True)
    state_dir = Unicode(DEFAULT_STATE_DIR, help="jobs database, logs and work folders").tag(config=True)
    admin_group = Unicode("", help="members see, stop and delete every job").tag(config=True)
    viewer_group = Unicode("", help="members read every job but run and stop none").tag(config=True)
    root_runs_as = Unicode("nobody", help="user that jobs submitted by root run as").tag(config=True)
    standbys = Int(2, help="sandboxes kept prepared ahead of jobs").tag(config=True)
    config_file = Unicode("", help="configuration file (Python or JSON)").tag(config=True)
    exit_with_parent = Bool(False, help="stop when the process that started this one ends").tag(config=True)
    install_service = Bool(
        False, help="install this executor as the systemd service jupyter-worker.service, start it, and exit"
    ).tag(config=True)

    aliases = {  # noqa: RUF012 - traitlets reads this class attribute
        "socket": "ExecutorApp.socket",
        "state-dir": "ExecutorApp.state_dir",
        "config": "ExecutorApp.config_file",
        "admin-group": "ExecutorApp.admin_group",
        "viewer-group": "ExecutorApp.viewer_group",
        "root-runs-as": "ExecutorApp.root_runs_as",
        "log-level": "Application.log_level",
    }
    flags = {  # noqa: RUF012 - traitlets reads this class attribute
        "exit-with-parent": ({"ExecutorApp": {"exit_with_parent": True}}, "stop when the parent process ends"),
        "install-service": (
            {"ExecutorApp": {"install_service": True}},
            "install and start the systemd service with these settings (a Slurm node's setup: docs/slurm.md)",
        ),
    }

    def initialize(self, argv: list[str] | None = None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.parse_command_line(argv)

    def start(self) -> None:
        if os.geteuid() != 0:
            self.log.critical("the executor must run as root")
            self.exit(2)
        if self.install_service:
            self._install_service()
            return
        try:
            policy = Policy(parent=self)
        except TraitError as exc:
            self.log.critical("configuration: %s", exc)
            self.exit(2)
        unknown = policy.unknown_names() + self._unknown_groups()
        if unknown:
            self.log.critical("configuration: %s", "; ".join(unknown))
            self.exit(2)
        warn_defaults_above_maxima(policy, self.log)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        asyncio.run(self.serve(policy))

    def _install_service(self) -> None:
        """The unit of docs/deployment.md running this environment's executor with the socket and
        state folder given here (when not the defaults), enabled and started."""
        options = []
        if self.socket != DEFAULT_SOCKET:
            options += ["--socket", self.socket]
        if self.state_dir != DEFAULT_STATE_DIR:
            options += ["--state-dir", self.state_dir]
        config_file = os.path.abspath(self.config_file) if self.config_file else ""
        try:
            print(service_unit.install(self.socket, config_file, options))
        except (OSError, RuntimeError) as exc:
            self.log.critical("could not install the service: %s", exc)
            self.exit(1)

    def _unknown_groups(self) -> list[str]:
        """A role group that does not exist would grant nothing, quietly: a typo refused at start."""
        names = {setting: getattr(self, setting) for setting in ("admin_group", "viewer_group")}
        return [
            f"ExecutorApp.{setting} names {name!r}, no group here"
            for setting, name in names.items()
            if name and not group_exists(name)
        ]

    async def serve(self, policy: Policy) -> None:
        # The state folder holds every job's command and environment: root's alone, whatever the
        # umask. Every file and folder in it is made with an explicit private mode (not by setting
        # the umask, which the spawner would inherit and the job's root needs 0755 folders).
        make_private_state(self.state_dir, self.log)
        store = JobStore(os.path.join(self.state_dir, "jobs.db"))
        sandbox = Sandbox(runtime_dir=os.path.join(self.state_dir, "run"), standbys=self.standbys)
        sandbox.start()
        jobs_dir = os.path.join(self.state_dir, "jobs")  # job folders are made ahead there (executor/local.py)
        backends: dict[str, Backend] = {"local": LocalBackend(sandbox, policy.log_max_bytes, jobs_dir)}
        slurm = SlurmBackendConfig(parent=self)
        if slurm.enabled:  # jobs that ask for it go to the cluster (docs/slurm.md)
            backends["slurm"] = SlurmBackend(slurm, policy.log_max_bytes, policy.disk_reserve_bytes)
        executor = Executor(policy, store, backends, self.state_dir, self.root_runs_as)
        server = Server(executor, self.socket, self.admin_group or None, self.viewer_group or None)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        if self.exit_with_parent:
            loop.add_reader(os.pidfd_open(os.getppid()), stopping.set)
        try:
            await executor.start()
            await server.start()
            executor.holds.recover()  # the grace period runs from when holders can connect again
            self.log.info(
                "executor listening on %s (state in %s, cgroup %s)",
                self.socket,
                self.state_dir,
                sandbox.info.get("cgroup_mode"),
            )
            await stopping.wait()
        finally:
            await server.close()
            await executor.close()
            sandbox.close()
            store.close()
            self.log.info("executor stopped; running jobs go on and are reattached at the next start")


def warn_defaults_above_maxima(policy: Policy, log: logging.Logger) -> None:
    """A default above its global maximum is named in a warning at start. It is not changed: the
    merge (Policy.limits_for) lowers it, job by job, to the maximum of the user asking, so no job
    gets more than its maximum, and a user whose own maximum is higher still gets the default."""
    for row in LIMITS:
        if not (row.default_setting and row.max_setting):
            continue
        default, maximum = getattr(policy, row.default_setting), getattr(policy, row.max_setting)
        if maximum is None or default is None or default <= maximum:
            continue
        log.warning(
            "Policy.%s (%s) is above Policy.%s (%s): a job asking for none gets its user's maximum",
            row.default_setting,
            row.show(default),
            row.max_setting,
            row.show(maximum),
        )


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
# What the executor keeps in its state folder: the job table and the spawner's folder beside the
# jobs (each with its log, result and control socket). A job's work/ is the job's own (0700, its uid).
_STATE_FILES = ("jobs.db", "jobs.db-wal", "jobs.db-shm", "jobs.db-journal")
_JOB_FILES = ("log", "result", "control")


def make_private_state(state_dir: str, log: logging.Logger) -> None:
    """The state folder, made or fixed so that only root reads or crosses it: the folder, jobs/ and
    every job's folder 0700 and root's, the database and each job's log, result and control socket
    0600. What an older version or a careless admin left looser is fixed, with a warning."""
    os.makedirs(state_dir, mode=PRIVATE_DIR, exist_ok=True)
    state_dir = os.path.realpath(state_dir)  # the admin's path may be a link; nothing beneath it is followed
    loose: list[str] = []
    _make_private(state_dir, PRIVATE_DIR, loose)
    for name in ("jobs", "run"):
        path = os.path.join(state_dir, name)
        if not os.path.lexists(path):
            os.mkdir(path, PRIVATE_DIR)
        _make_private(path, PRIVATE_DIR, loose)
    for name in _STATE_FILES:
        _make_private(os.path.join(state_dir, name), PRIVATE_FILE, loose)
    jobs = os.path.join(state_dir, "jobs")
    for job_id in os.listdir(jobs):
        folder = os.path.join(jobs, job_id)
        _make_private(folder, PRIVATE_DIR, loose)
        for name in _JOB_FILES:
            _make_private(os.path.join(folder, name), PRIVATE_FILE, loose)
    loose = list(dict.fromkeys(loose))  # a path both owned by another and too open, named once
    if loose:
        shown = ", ".join(loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5 else "")
        log.warning("the state folder was readable by others; made private to root: %s", shown)


def _make_private(path: str, mode: int, loose: list[str]) -> None:
    """path owned by root with at most mode's bits; noted in loose when it was not. A path that is
    missing is left so; a symlink is never followed (nothing but root writes in these folders)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise SystemExit(f"the executor's state folder: {path} is a symlink; refusing to follow it")
    if info.st_uid != 0 or info.st_gid != 0:
        os.chown(path, 0, 0, follow_symlinks=False)
        loose.append(path)
    if stat.S_IMODE(info.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)
        loose.append(path)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    app = ExecutorApp()
    app.initialize(argv)
    app.start()
