"""The Jupyter server extension: REST and websocket routes under {base_url}api/worker/.

It talks to the executor only through jupyter_worker.client. With no executor answering and the
server running as root, it starts one as its child (state under the Jupyter data dir) and stops it
at shutdown; jobs keep running and are reattached by the next executor. Under JupyterHub, running
jobs count as the server's activity, and the admin chooses whether the user's jobs outlive it.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import pwd
import signal
import subprocess
import sys
import time

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Unicode, default

from ..client import AsyncClient, ExecutorError, ExecutorUnavailable, socket_path
from .handlers import handlers

ACTIVITY_KEY = "worker_jobs_last_activity"
UNFINISHED = ["RUNNING", "QUEUED"]
HUB_AUTHORIZER = "jupyter_worker.server.hub.WorkerHubAuthorizer"


class JupyterWorker(ExtensionApp):
    name = "jupyter_worker"
    description = "Sandboxed background jobs for Jupyter"

    socket = Unicode(help="executor socket (default: $JUPYTER_WORKER_SOCKET or /run/jupyter-worker/...)").tag(
        config=True
    )
    embedded_executor = Bool(
        True, help="start an executor as a child when none answers and the server runs as root"
    ).tag(config=True)
    embedded_state_dir = Unicode(help="state folder of an embedded executor").tag(config=True)
    default_network = Unicode("", help="network mode a UI should preselect (empty: the executor's default)").tag(
        config=True
    )
    activity_interval = Float(
        30.0, help="seconds between looks for running jobs, each of which counts as activity of this server"
    ).tag(config=True)
    jobs_on_server_stop = Enum(
        ["keep", "stop"],
        "keep",
        help="what this server's stop does to its user's running and queued jobs: keep (they run on and "
        "show again at the next start) or stop",
    ).tag(config=True)

    @default("socket")
    def _default_socket(self) -> str:
        return socket_path()

    @default("embedded_state_dir")
    def _default_state_dir(self) -> str:
        return os.path.join(jupyter_data_dir(), "jupyter-worker")

    def initialize_settings(self) -> None:
        os.environ["JUPYTER_WORKER_SOCKET"] = self.socket
        self.client = AsyncClient(self.socket)
        self.embedded: subprocess.Popen | None = None
        self.executor_problem: str | None = None
        self._checked: asyncio.Future | None = None
        self.settings.update({"jupyter_worker": self})

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    async def _start_jupyter_server_extension(self, serverapp) -> None:  # type: ignore[override]
        self._warn_if_hub_scopes_unused(serverapp)
        if self.jobs_on_server_stop == "stop" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            # JupyterHub stops a server with SIGINT, which a server with no terminal takes as a
            # KeyboardInterrupt that skips the shutdown hooks; make it the orderly stop SIGTERM is.
            signal.signal(signal.SIGINT, serverapp._signal_stop)
        await self.ensure_executor()
        self._activity = asyncio.create_task(self._track_activity())

    async def ensure_executor(self) -> None:
        """Once: find the executor, or start the embedded one; handlers wait for this too."""
        if self._checked is None:
            self._checked = asyncio.ensure_future(self._find_or_start_executor())
        await asyncio.shield(self._checked)

    async def _find_or_start_executor(self) -> None:
        try:
            await self.client.capabilities()
            return
        except ExecutorUnavailable as exc:
            problem = str(exc)
        if not self.embedded_executor or os.geteuid() != 0:
            self.executor_problem = (
                f"{problem}. This server does not run as root, so it cannot start one itself; as root run "
                "`jupyter-worker executor` (or install the systemd unit, docs/deployment.md)."
            )
            self.log.warning("jupyter-worker: %s", self.executor_problem)
            return
        await self._start_embedded()

    async def _start_embedded(self) -> None:
        command = [sys.executable, "-m", "jupyter_worker.cli", "executor", "--socket", self.socket,
                   "--state-dir", self.embedded_state_dir, "--exit-with-parent"]  # fmt: skip
        self.embedded = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                await self.client.capabilities()
                self.log.info("jupyter-worker: started an embedded executor on %s", self.socket)
                return
            except ExecutorUnavailable:
                if self.embedded.poll() is not None:
                    break
                await asyncio.sleep(0.1)
        self.executor_problem = f"the embedded executor did not start (see the server log); socket {self.socket}"
        self.log.error("jupyter-worker: %s", self.executor_problem)

    async def note_activity(self) -> None:
        """Running jobs count as activity, so JupyterHub's idle culler spares this server."""
        try:
            jobs, _ = await self.client.list(status=UNFINISHED, limit=1, owner=self.owner_filter())
        except ExecutorError:
            return
        if jobs:
            self.serverapp.web_app.settings[ACTIVITY_KEY] = utcnow()

    async def _track_activity(self) -> None:
        while True:
            await self.note_activity()
            await asyncio.sleep(self.activity_interval)

    def _warn_if_hub_scopes_unused(self, serverapp) -> None:
        authorizer = type(serverapp.authorizer)
        ours = f"{authorizer.__module__}.{authorizer.__name__}" == HUB_AUTHORIZER
        if os.environ.get("JUPYTERHUB_API_TOKEN") and not ours:
            self.log.warning("jupyter-worker: under JupyterHub without %s, anyone with access to this server may "
                             "run and stop its jobs (docs/jupyterhub.md)", HUB_AUTHORIZER)  # fmt: skip

    async def _stop_unfinished_jobs(self) -> None:
        """The admin's choice `jobs_on_server_stop = "stop"`: the user's jobs end with the server."""
        try:
            jobs, _ = await self.client.list(status=UNFINISHED, limit=1000, owner=self.owner_filter())
            for job in jobs:
                await self.client.stop(job["id"])
        except ExecutorError as exc:
            self.log.error("jupyter-worker: could not stop the jobs at shutdown: %s", exc)
            return
        self.log.info("jupyter-worker: stopped %d running or queued job(s) with the server", len(jobs))

    @property
    def owner(self) -> str:
        """The Jupyter user this server is for: the hub's user name, else this process's user."""
        return os.environ.get("JUPYTERHUB_USER") or pwd.getpwuid(os.geteuid()).pw_name

    def owner_filter(self) -> str | None:
        """When the executor shows this server every job (it runs as root), only its user's jobs."""
        return self.owner if self.client.identity.get("role") in ("admin", "viewer") else None

    async def stop_extension(self) -> None:
        task = getattr(self, "_activity", None)
        if task is not None:
            task.cancel()
        if self.jobs_on_server_stop == "stop":
            await self._stop_unfinished_jobs()
        await self.client.close()
        if self.embedded is not None and self.embedded.poll() is None:
            self.embedded.terminate()
            await asyncio.get_running_loop().run_in_executor(None, self.embedded.wait)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
