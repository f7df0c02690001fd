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

from traitlets import Bool, Int, TraitError, Unicode
from traitlets.config import Application

from ..sandbox import Sandbox
from .local import LocalBackend
from .policy import Policy
from .server import Server
from .service import Executor
from .store import JobStore

DEFAULT_SOCKET = "/run/jupyter-worker/executor.sock"
DEFAULT_STATE_DIR = "/var/lib/jupyter-worker"


class ExecutorApp(Application):
    name = "jupyter-worker-executor"
    description = "The jupyter-worker executor: runs sandboxed jobs for local clients (as root)."
    classes = (Policy,)

    socket = Unicode(DEFAULT_SOCKET, help="Unix socket clients connect to").tag(config=True)
    state_dir = Unicode(DEFAULT_STATE_DIR, help="jobs database, logs and work folders").tag(config=True)
    admin_group = Unicode("", help="members see, stop and delete every job").tag(config=True)
    viewer_group = Unicode("", help="members read every job but run and stop none").tag(config=True)
    root_runs_as = Unicode("nobody", help="user that jobs submitted by root run as").tag(config=True)
    standbys = Int(2, help="sandboxes kept prepared ahead of jobs").tag(config=True)
    config_file = Unicode("", help="configuration file (Python or JSON)").tag(config=True)
    exit_with_parent = Bool(False, help="stop when the process that started this one ends").tag(config=True)

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
        try:
            policy = Policy(parent=self)
        except TraitError as exc:
            self.log.critical("configuration: %s", exc)
            self.exit(2)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        asyncio.run(self.serve(policy))

    async def serve(self, policy: Policy) -> None:
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        store = JobStore(os.path.join(self.state_dir, "jobs.db"))
        sandbox = Sandbox(runtime_dir=os.path.join(self.state_dir, "run"), standbys=self.standbys)
        sandbox.start()
        backend = LocalBackend(sandbox, policy.log_max_bytes)
        executor = Executor(policy, store, backend, self.state_dir, self.root_runs_as)
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


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    app = ExecutorApp()
    app.initialize(argv)
    app.start()
