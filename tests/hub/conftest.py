"""A real JupyterHub on loopback: configurable-http-proxy, the local users' single-user servers
spawned as themselves, the idle culler, and one system executor; configured by the deployment
guide's own docs/jupyterhub_config.py with only ports, paths and test identities added, and the
culler's timeout set to the shortest the guide allows (its activity intervals are the guide's).

Two servers are started as admins get them wrong: bob's with `c.Spawner.args` replaced (the
worker's authorizer argument lost, as the guide's old comment led to), carol's with an authorizer
of the admin's own that knows nothing of the worker's scopes."""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect
from traitlets.config import Config

from tests.conftest import free_port
from tests.executor.conftest import started_daemon, wait_for

REPO = Path(__file__).resolve().parents[2]
GUIDE_CONFIG = REPO / "docs" / "jupyterhub_config.py"
PROXY = REPO / "dev" / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"
ALICE, BOB, CAROL = "jwtest-alice", "jwtest-bob", "jwtest-carol"
# The guide's numbers, as the guide's config file computes them.
GUIDE = runpy.run_path(str(GUIDE_CONFIG), init_globals={"get_config": Config})
CULL_TIMEOUT_S = GUIDE["SHORTEST_CULL_TIMEOUT_S"]
# How stale the hub's record of a busy server may be, by the guide's own account of it.
REPORT_DELAY_S = GUIDE["JOBS_ACTIVITY_S"] + 1.1 * GUIDE["SERVER_ACTIVITY_S"] + GUIDE["ACTIVITY_RESOLUTION_S"]
OWN_AUTHORIZER = "tests.hub.own_authorizer.OwnAuthorizer"

TEST_CONFIG = """
c = get_config()
load_subconfig({guide!r})
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.pid_file = {folder!r} + "/proxy.pid"
c.JupyterHub.db_url = "sqlite:///" + {folder!r} + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = {folder!r} + "/cookie_secret"
c.Authenticator.allowed_users = {users!r}
c.Spawner.environment["JUPYTER_WORKER_SOCKET"] = {socket!r}
for service in c.JupyterHub.services:
    if service["name"] == "idle-culler":
        # the shortest timeout the guide allows; checking every 2 s is the culler's harshest
        command = [part for part in service["command"] if not part.startswith("--timeout=")]
        service["command"] = [*command, "--timeout={cull}", "--cull-every=2"]
c.JupyterHub.services += [{{"name": "test-admin", "api_token": {admin!r}}},
                          {{"name": "nightly-runner", "api_token": {runner!r}}}]
c.JupyterHub.load_roles += [
    {{"name": "test-admin", "services": ["test-admin"],
      "scopes": ["admin:users", "admin:servers", "access:servers", "tokens", "list:users", "read:users"]}},
    {{"name": "nightly-runner", "services": ["nightly-runner"],
      "scopes": ["access:servers!user={alice}", "custom:jupyter-worker:run!user={alice}"]}},
    {{"name": "alice-jobs-reader", "users": [{carol!r}],
      "scopes": ["access:servers!user={alice}", "custom:jupyter-worker:read!user={alice}"]}},
]

def pre_spawn_hook(spawner):
    # the admin's per-user choice: bob's jobs end with his server, everyone else's run on; made as
    # the guide's old comment said, replacing the arguments (the worker's authorizer among them)
    if spawner.user.name == {bob!r}:
        spawner.args = ["--JupyterWorker.jobs_on_server_stop=stop"]
    # carol's server has an authorizer of the admin's own, which knows nothing of the worker's scopes
    if spawner.user.name == {carol!r}:
        spawner.args = ["--ServerApp.authorizer_class={own_authorizer}"]

c.Spawner.pre_spawn_hook = pre_spawn_hook
"""


class Hub:
    def __init__(self, executor_socket: str):
        self.folder = tempfile.mkdtemp(prefix="jupyter-worker-hub-")
        self.port, self.proxy_api_port = free_port(), free_port()
        self.admin_token, self.runner_token, self.dashboard_token, self.proxy_token = (
            secrets.token_hex(16) for _ in range(4)
        )
        config = TEST_CONFIG.format(
            guide=str(GUIDE_CONFIG),
            port=self.port,
            hub_port=free_port(),
            proxy_api_port=self.proxy_api_port,
            proxy=str(PROXY),
            proxy_token=self.proxy_token,
            folder=self.folder,
            users={ALICE, BOB, CAROL},
            socket=executor_socket,
            cull=CULL_TIMEOUT_S,
            admin=self.admin_token,
            runner=self.runner_token,
            alice=ALICE,
            bob=BOB,
            carol=CAROL,
            own_authorizer=OWN_AUTHORIZER,
        )
        config_file = os.path.join(self.folder, "jupyterhub_config.py")
        Path(config_file).write_text(config)
        env = {
            **os.environ,
            "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
            "JOBS_DASHBOARD_TOKEN": self.dashboard_token,
        }
        self.log = open(os.path.join(self.folder, "hub.log"), "wb")
        command = [sys.executable, "-m", "jupyterhub", "-f", config_file]
        self.process = subprocess.Popen(
            command, cwd=self.folder, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
        )
        self._wait_until_up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the hub exited:\n{self.log_text()}")
            try:
                if self.api("GET", "users")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the hub did not come up:\n{self.log_text()}")

    def log_text(self) -> str:
        return Path(self.folder, "hub.log").read_text(errors="replace")[-6000:]

    def request(self, method: str, path: str, token: str, body: Any = None, base: str | None = None) -> tuple[int, Any]:
        """A request through the proxy (or to `base`), as a script would make it (token header, JSON body)."""
        request = urllib.request.Request(
            f"{base or self.url}{path}",
            method=method,
            headers={"Authorization": f"token {token}"},
            data=json.dumps(body).encode() if body is not None else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.request(method, f"/hub/api/{path}", self.admin_token, body)

    def worker(self, user: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return self.request(method, f"/user/{user}/api/worker/{path}", token, body)

    def token_for(self, user: str, scopes: list[str] | None = None) -> str:
        code, reply = self.api(
            "POST", f"users/{user}/tokens", {"note": "hub test", **({"scopes": scopes} if scopes else {})}
        )
        assert code == 201, reply
        return reply["token"]

    def route_target(self, user: str) -> str:
        """Where the proxy sends /user/NAME/: the server itself, for calls that bypass the proxy."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.proxy_api_port}/api/routes", headers={"Authorization": f"token {self.proxy_token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())[f"/user/{user}"]["target"]

    def server(self, user: str) -> dict | None:
        return self.api("GET", f"users/{user}")[1]["servers"].get("")

    def start_server(self, user: str) -> None:
        """Start the user's server if it is not running, and wait until it answers."""
        if (self.server(user) or {}).get("ready"):
            return
        code, reply = self.api("POST", f"users/{user}/server")
        assert code in (201, 202, 400), reply
        self.wait(lambda: (self.server(user) or {}).get("ready"), 90, f"{user}'s server to start")

    def stop_server(self, user: str) -> None:
        code, reply = self.api("DELETE", f"users/{user}/server")
        assert code in (202, 204), reply
        self.wait(lambda: self.server(user) is None, 60, f"{user}'s server to stop")

    def wait(self, predicate, timeout: float, what: str) -> Any:
        """wait_for, with the hub's log when it times out."""
        try:
            return wait_for(predicate, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_text()}") from None

    def websocket(self, user: str, path: str, token: str, until: str) -> tuple[int, list[dict]]:
        """Open a worker websocket through the proxy and read messages until one of type `until`."""
        url = f"ws://127.0.0.1:{self.port}/user/{user}/api/worker/{path}"
        return asyncio.run(_read_websocket(url, token, until))

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._end_proxy()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _end_proxy(self) -> None:
        """The hub stops the proxy it started; should it not have, the proxy ends here, by its pid."""
        try:
            pid = int(Path(self.folder, "proxy.pid").read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass


async def _read_websocket(url: str, token: str, until: str) -> tuple[int, list[dict]]:
    try:
        connection = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    except HTTPClientError as exc:
        return exc.code, []
    messages: list[dict] = []
    while True:
        text = await asyncio.wait_for(connection.read_message(), 30)
        if text is None:
            break
        messages.append(json.loads(text))
        if messages[-1].get("type") == until:
            break
    connection.close()
    return 101, messages


def _json(data: bytes) -> Any:
    try:
        return json.loads(data or b"{}")
    except ValueError:
        return {"text": data.decode(errors="replace")}


@pytest.fixture(scope="module")
def system_executor(users):
    """The node's executor, as root, that every user's server reaches on its socket."""
    with started_daemon([]) as executor:
        yield executor


@pytest.fixture(scope="module")
def hub(system_executor):
    if not PROXY.exists():
        pytest.fail(f"configurable-http-proxy is not installed at {PROXY} (dev/test installs it)")
    running = Hub(system_executor.socket)
    try:
        yield running
    finally:
        running.close()
