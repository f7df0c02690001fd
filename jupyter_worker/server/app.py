"""The Jupyter server extension: REST and websocket routes under {base_url}api/worker/.

It talks to the executor only through jupyter_worker.client. With no executor answering and the
server running as root, it starts one as its child (state under the Jupyter data dir) and stops it
at shutdown; jobs keep running and are reattached by the next executor. Under JupyterHub, running
jobs count as the server's activity, and the admin chooses whether the jobs started from the
server (its API, panel, kernels and terminals) outlive it or are held: stopped when it ends.
A server under a hub never serves the worker routes without the hub's worker scopes deciding who
may use them: it installs the worker's authorizer itself, or closes those routes (server/hub.py).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import os
import pwd
import subprocess
import sys
import time
import uuid

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Unicode, default

from ..client import HOLDER_ENV, AsyncClient, ExecutorUnavailable, socket_path
from ..errors import ErrorReason, WorkerError
from .handlers import AUTH_RESOURCE, handlers
from .shares import Shares
from .waits import JobWaits

ACTIVITY_KEY = "worker_jobs_last_activity"
UNFINISHED = ["RUNNING", "QUEUED"]
HOLD_RETRY_S = 1.0
HUB_ENV = "JUPYTERHUB_API_TOKEN"  # set by JupyterHub's spawners for the servers they start


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
        help="what the end of this server does to the running and queued jobs started from it (its API, "
        "panel, kernels, terminals): keep (they run on and show again at the next start) or stop (however the "
        "server ends, crashes and SIGKILL included)",
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
        self.waits = JobWaits(self.socket)  # GET jobs/{id}?wait_s=: one executor watch for them all
        self.streams = Shares("open websockets")  # each an executor connection: fair shares of them
        self.embedded: subprocess.Popen | None = None
        self.executor_problem: str | None = None
        self._checked: asyncio.Future | None = None
        self._hold_tried = asyncio.Event()
        self._holding: asyncio.Task | None = None
        self.holder = f"server-{uuid.uuid4().hex}" if self.jobs_on_server_stop == "stop" else None
        if self.holder is not None:
            os.environ[HOLDER_ENV] = self.holder
        self.settings.update({"jupyter_worker": self})
        if os.environ.get(HUB_ENV):
            self._secure_under_hub()
            # the web app's settings are updated from these once this method returns
            self.settings["authorizer"] = self.serverapp.authorizer

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    async def _start_jupyter_server_extension(self, serverapp) -> None:  # type: ignore[override]
        await self.ensure_executor()
        self._activity = asyncio.create_task(self._track_activity())

    async def ensure_executor(self) -> None:
        """Once: find the executor, or start the embedded one; handlers wait for this too."""
        if self._checked is None:
            self._checked = asyncio.ensure_future(self._find_or_start_executor())
        await asyncio.shield(self._checked)

    async def _find_or_start_executor(self) -> None:
        await self._find_executor()
        if self.holder is not None:
            self._holding = asyncio.create_task(self._hold_jobs())
            await self._hold_tried.wait()

    async def _find_executor(self) -> None:
        try:
            await self.client.capabilities()
            return
        except ExecutorUnavailable as exc:
            problem = str(exc)
        except WorkerError as exc:  # an executor, or its socket, refusing this server: not ours to replace
            self.executor_problem = exc.message
            self.log.warning("jupyter-worker: %s", self.executor_problem)
            return
        if not self.embedded_executor or os.geteuid() != 0:
            self.executor_problem = (
                f"{problem}. This server does not run as root, so it cannot start one itself; as root run "
                "`jupyter-worker executor` (or install the systemd unit, docs/deployment.md)."
            )
            self.log.warning("jupyter-worker: %s", self.executor_problem)
            return
        await self._start_embedded()

    async def _start_embedded(self) -> None:
        command = [sys.executable, "-m", "jupyter_worker.cli", "executor", "--exit-with-parent"]
        command += ["--socket", self.socket, "--state-dir", self.embedded_state_dir]
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

    async def _hold_jobs(self) -> None:
        """For as long as this server lives, the executor holds its jobs to it: they end when this
        process does, however it ends, because the kernel then closes the connection."""
        complained = False
        while True:
            try:
                hold = await self.client.hold(self.holder)
            except (WorkerError, OSError) as exc:
                if not complained:
                    self.log.warning(
                        "jupyter-worker: cannot hold this server's jobs yet (%s); until then the "
                        "executor refuses jobs from it; retrying",
                        exc,
                    )
                complained = True
                self._hold_tried.set()
                await asyncio.sleep(HOLD_RETRY_S)
                continue
            complained = False
            self._hold_tried.set()
            try:
                await hold.lost()
            finally:
                await hold.release()
            self.log.warning("jupyter-worker: the executor went away; holding this server's jobs again")
            await asyncio.sleep(HOLD_RETRY_S)

    async def note_activity(self) -> None:
        """Running jobs count as activity, so JupyterHub's idle culler spares this server."""
        try:
            jobs, _ = await self.client.list(status=UNFINISHED, limit=1, owner=self.owner_filter())
        except WorkerError:
            return
        if jobs:
            self.serverapp.web_app.settings[ACTIVITY_KEY] = utcnow()

    async def _track_activity(self) -> None:
        while True:
            await self.note_activity()
            await asyncio.sleep(self.activity_interval)

    def _secure_under_hub(self) -> None:
        """Under JupyterHub the hub's worker scopes decide who may read and run this server's jobs,
        whatever the spawner's arguments say: the worker's authorizer is installed here if the server
        lacks it, or, where it cannot be, the worker routes are closed (403 forbidden, with the fix)."""
        try:
            hub = importlib.import_module("jupyter_worker.server.hub")  # imports JupyterHub: only under a hub
        except ImportError as exc:
            problem: str | None = f"this server has JupyterHub's environment but JupyterHub cannot be imported ({exc})"
        else:
            problem = hub.secure_worker_routes(self.serverapp)
        if problem is not None:
            closed = ClosedWorkerRoutes(
                self.serverapp.authorizer, f"jupyter-worker: the worker routes are closed: {problem}"
            )
            self.serverapp.authorizer = closed
            self.serverapp.web_app.settings["authorizer"] = closed
            self.log.error("%s", closed.problem)

    @property
    def owner(self) -> str:
        """The Jupyter user this server is for: the hub's user name, else this process's user."""
        return os.environ.get("JUPYTERHUB_USER") or pwd.getpwuid(os.geteuid()).pw_name

    def owner_filter(self) -> str | None:
        """When the executor shows this server every job (it runs as root), only its user's jobs."""
        return self.owner if self.client.identity.get("role") in ("admin", "viewer") else None

    async def stop_extension(self) -> None:
        for task in (getattr(self, "_activity", None), self._holding):
            if task is not None:
                task.cancel()
        if self._holding is not None:
            await asyncio.gather(self._holding, return_exceptions=True)
            os.environ.pop(HOLDER_ENV, None)
            self.log.info("jupyter-worker: released this server's hold; the executor stops its jobs")
        self.waits.close()
        await self.client.close()
        if self.embedded is not None and self.embedded.poll() is None:
            self.embedded.terminate()
            await asyncio.get_running_loop().run_in_executor(None, self.embedded.wait)


class ClosedWorkerRoutes(Authorizer):
    """A server under a hub that cannot have the worker's authorizer: its other routes go on as the
    authorizer it had decides; the worker routes answer 403 `forbidden` with what the admin must set."""

    def __init__(self, kept: Authorizer, problem: str):
        super().__init__(parent=kept.parent, identity_provider=kept.identity_provider)
        self.kept = kept
        self.problem = problem

    def is_authorized(self, handler, user, action: str, resource: str):  # type: ignore[override]
        if resource == AUTH_RESOURCE:
            raise WorkerError(ErrorReason.FORBIDDEN, self.problem)
        return self.kept.is_authorized(handler, user, action, resource)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
