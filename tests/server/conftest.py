"""A Jupyter server with the extension, in-process (pytest-jupyter), against a real executor."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from tornado.httpclient import HTTPClientError

from jupyter_worker.server.handlers import MAX_WAIT_S, OPENAPI
from tests.conftest import free_port
from tests.executor.conftest import started_daemon


@pytest.fixture(scope="module")
def executor_daemon():
    with started_daemon(["--Policy.max_memory_limit=2048"]) as daemon:
        yield daemon


@pytest.fixture
def executor_socket(executor_daemon) -> str:
    """Where the server under test finds its executor; a test class may point it elsewhere."""
    return executor_daemon.socket


@pytest.fixture
def jp_server_config(executor_socket):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_worker": True}, "allow_unauthenticated_access": False},
        "JupyterWorker": {"socket": executor_socket, "embedded_executor": False},
    }


@pytest.fixture(scope="session")
def openapi():
    with open(OPENAPI) as f:
        return yaml.safe_load(f)


@pytest.fixture
def conforms(openapi):
    """conforms(response_body, "Job") checks a real response against the OpenAPI schema."""

    def check(body, schema: str):
        data = json.loads(body) if isinstance(body, (bytes, str)) else body
        resolver_doc = {"components": openapi["components"], **openapi["components"]["schemas"][schema]}
        OAS30Validator(resolver_doc).validate(data)
        return data

    return check


class UserServer:
    """`jupyter server` as a local user, with the extension pointed at the system executor."""

    def __init__(self, user: str, executor_socket: str, *options: str):
        entry = pwd.getpwnam(user)
        self.home = tempfile.mkdtemp(prefix=f"jupyter-worker-{user}-")
        os.chown(self.home, entry.pw_uid, entry.pw_gid)
        self.port, self.token = free_port(), f"token-of-{user}"
        env = {"PATH": os.environ["PATH"], "HOME": self.home, "LANG": "C.UTF-8"}
        command = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}"]
        command += [f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.home}"]
        command += [f"--JupyterWorker.socket={executor_socket}", "--JupyterWorker.embedded_executor=False", *options]
        self.process = subprocess.Popen(
            command,
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=[],
            env=env,
            cwd=self.home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.call("GET", "capabilities")
                return
            except (OSError, urllib.error.HTTPError):
                if self.process.poll() is not None:
                    raise AssertionError(self.process.stderr.read().decode()) from None
                time.sleep(0.2)
        raise AssertionError("the server did not come up")

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/worker/{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 and path == "capabilities":
                raise
            return exc.code, json.loads(exc.read() or b"{}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)


async def submit(jp_fetch, **job) -> dict:
    response = await jp_fetch("api", "worker", "jobs", method="POST", body=json.dumps(job))
    assert response.code == 201
    return json.loads(response.body)


async def finished(jp_fetch, job_id: str) -> dict:
    for _ in range(400):
        job = json.loads((await jp_fetch("api", "worker", "jobs", job_id)).body)
        if job["status"] not in ("QUEUED", "RUNNING"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish")


async def refusal(call) -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as caught:
        await call
    return caught.value.code, json.loads(caught.value.response.body)


async def held_waits(serverapp, job_id: str, token: str, count: int) -> list[asyncio.StreamWriter]:
    """count GET ?wait_s=MAX_WAIT_S sent with the token on connections of their own, left open
    (the caller drops them by closing the writers)."""
    path = f"{serverapp.base_url}api/worker/jobs/{job_id}?wait_s={MAX_WAIT_S}"
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {token}\r\n\r\n"
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", serverapp.port)
        writer.write(head.encode())
        writers.append(writer)
    return writers
