"""Fair access to GET jobs/{id}?wait_s=N (server/waits.py): a server's waits are bounded, and no one
requester may hold them all. Under JupyterHub others reach a user's server too (a reader with
custom:jupyter-worker:read, a service with :run); here alice's server (a real Jupyter server on a
real executor, her job in it) tells its requesters apart by JupyterHub's own user objects, made from
the token each sends, as JupyterHub's identity provider makes them."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from jupyter_server.auth.identity import IdentityProvider, User

from jupyter_worker.errors import ErrorReason
from jupyter_worker.server import waits as waits_module
from jupyter_worker.server.handlers import MAX_WAIT_S
from tests.executor.conftest import run_as, started_daemon

ALICE = "jwtest-alice"
# token -> the hub's model of who sends it: the owner, a reader, and a service
HUB_USERS = {
    "alice-token": {"kind": "user", "name": ALICE},
    "carol-token": {"kind": "user", "name": "jwtest-carol"},
    "runner-token": {"kind": "service", "name": "nightly-runner"},
    "dave-token": {"kind": "user", "name": "jwtest-dave"},
}


class HubUsers(IdentityProvider):
    """A user with JupyterHub's `hub_user` model (jupyterhub.singleuser.extension.JupyterHubUser),
    picked by the request's token."""

    async def get_user(self, handler):  # type: ignore[override]
        token = handler.request.headers.get("Authorization", "").removeprefix("token ")
        hub_user = HUB_USERS.get(token)
        if hub_user is None:
            return None
        user = User(username=hub_user["name"])
        user.hub_user = hub_user  # type: ignore[attr-defined]
        return user


@pytest.fixture(scope="module")
def daemon(users):
    with started_daemon([]) as daemon:
        yield daemon


@pytest.fixture
def jp_server_config(daemon, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", ALICE)  # the server is alice's, as under a hub
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_worker": True},
            "identity_provider_class": HubUsers,
        },
        "JupyterWorker": {"socket": daemon.socket, "embedded_executor": False},
    }


async def held_waits(serverapp, job_id: str, token: str, count: int) -> list[asyncio.StreamWriter]:
    """count waits of MAX_WAIT_S sent with the token on connections of their own, left open."""
    path = f"{serverapp.base_url}api/worker/jobs/{job_id}?wait_s={MAX_WAIT_S}"
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {token}\r\n\r\n"
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", serverapp.port)
        writer.write(head.encode())
        writers.append(writer)
    return writers


async def ask(jp_fetch, job_id: str, token: str, wait_s: str | None) -> tuple[int, dict]:
    params = {"wait_s": wait_s} if wait_s is not None else {}
    headers = {"Authorization": f"token {token}"}
    response = await jp_fetch("api", "worker", "jobs", job_id, params=params, headers=headers, raise_error=False)
    return response.code, json.loads(response.body)


async def settled(waits, count: int) -> None:
    deadline = time.monotonic() + 20
    while waits.count < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert waits.count == count, waits.held


async def test_one_requester_holding_waits_on_a_users_server_locks_neither_the_owner_nor_others_out(
    jp_fetch, jp_serverapp, daemon, monkeypatch
):
    monkeypatch.setattr(waits_module, "MAX_WAITS", 6)
    monkeypatch.setattr(waits_module, "MAX_WAITS_PER_REQUESTER", 2)
    waits = jp_serverapp.web_app.settings["jupyter_worker"].waits
    job = run_as(daemon, ALICE, {"command": ["sleep", "300"]})
    writers = []
    try:
        # carol tries to hold every wait: she gets her share, and is refused beyond it
        writers += await held_waits(jp_serverapp, job.id, "carol-token", 5)
        await settled(waits, 2)
        code, error = await ask(jp_fetch, job.id, "carol-token", "1")
        assert (code, error["reason"]) == (503, ErrorReason.BUSY.value) and "you have 2" in error["message"]
        code, current = await ask(jp_fetch, job.id, "carol-token", None)  # a plain GET still answers her
        assert code == 200 and current["status"] == "RUNNING"
        # another requester still gets theirs
        writers += await held_waits(jp_serverapp, job.id, "runner-token", 2)
        await settled(waits, 4)
        # the others together now hold all they may: a third one is refused, the owner is not
        code, error = await ask(jp_fetch, job.id, "dave-token", "1")
        assert (code, error["reason"]) == (503, ErrorReason.BUSY.value) and "owner" in error["message"]
        began = time.monotonic()
        code, current = await ask(jp_fetch, job.id, "alice-token", "1")
        assert code == 200 and current["status"] == "RUNNING" and time.monotonic() - began >= 1
        assert waits.held == {"user:jwtest-carol": 2, "service:nightly-runner": 2}
    finally:
        for writer in writers:
            writer.close()
        with daemon.client() as client:
            client.stop(job.id, grace_s=0)
    deadline = time.monotonic() + 20
    while waits.count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert waits.count == 0 and waits.held == {}
