"""Fair access to what a server holds open: REST waits (GET jobs/{id}?wait_s=N, server/waits.py) and
websockets (each an executor connection of the server's user) are bounded, and no one requester may
hold them all nor take the owner's share (server/shares.py). Under JupyterHub others reach a user's
server too (a reader with custom:jupyter-worker:read, a service with :run); here alice's server (a
real Jupyter server on a real executor, her job in it) tells its requesters apart by JupyterHub's
own user objects, made from the token each sends, as JupyterHub's identity provider makes them.
Last, alice's own server running as her: websockets by the dozen leave her CLI its executor
connections."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from jupyter_worker.client import Client
from jupyter_worker.errors import ErrorReason
from jupyter_worker.server import handlers
from jupyter_worker.server import waits as waits_module
from tests.executor.conftest import as_user, run_as, started_daemon
from tests.security.conftest import logged_user_server
from tests.server.conftest import held_waits

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


async def websockets(connect, token: str, count: int) -> tuple[list[WebSocketClientConnection], list]:
    """count websockets to the events route opened with the token (connect: jp_ws_fetch, or
    websocket_connect to a URL): those opened, and the refusals (code, JSON body) of the rest."""
    opened, refused = [], []
    for _ in range(count):
        try:
            opened.append(await connect({"Authorization": f"token {token}"}))
        except HTTPClientError as exc:
            assert exc.response is not None
            refused.append((exc.code, json.loads(exc.response.body)))
    return opened, refused


async def test_a_reader_opening_websockets_by_the_dozen_gets_its_share_and_leaves_the_owner_hers(
    jp_serverapp, jp_ws_fetch, monkeypatch
):
    monkeypatch.setattr(handlers, "MAX_STREAMS", 6)
    monkeypatch.setattr(handlers, "MAX_STREAMS_PER_REQUESTER", 2)
    streams = jp_serverapp.web_app.settings["jupyter_worker"].streams

    def events(headers):
        return jp_ws_fetch("api", "worker", "events", headers=headers)

    held = []
    try:
        carols, refused = await websockets(events, "carol-token", 5)
        held += carols
        assert len(carols) == 2 and len(refused) == 3
        assert all(code == 503 and body["reason"] == ErrorReason.BUSY.value for code, body in refused), refused
        assert "you have 2" in refused[0][1]["message"]
        runners, _ = await websockets(events, "runner-token", 2)
        held += runners
        daves, refused = await websockets(events, "dave-token", 1)
        assert daves == [] and "owner" in refused[0][1]["message"], refused
        alices, refused = await websockets(events, "alice-token", 2)
        held += alices
        assert len(alices) == 2 and refused == []
        assert streams.held == {"user:jwtest-carol": 2, "service:nightly-runner": 2, None: 2}
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 20
    while streams.count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert streams.count == 0 and streams.held == {}  # each closed websocket gave its share back
    again, refused = await websockets(events, "carol-token", 2)
    assert len(again) == 2 and refused == []
    for connection in again:
        connection.close()


def test_websockets_by_the_dozen_on_a_users_server_leave_her_cli_its_executor_connections(daemon):
    """alice's own server, as her: 80 events websockets would hold 80 executor connections of hers,
    past Policy.max_connections_per_user (64), and her CLI was then refused as busy."""
    with logged_user_server(ALICE, daemon.socket) as (server, _):

        async def flood() -> None:
            url = f"ws://127.0.0.1:{server.port}/api/worker/events"
            opened, refused = await websockets(
                lambda headers: websocket_connect(HTTPRequest(url, headers=headers)), server.token, 80
            )
            try:
                assert len(opened) == handlers.MAX_STREAMS_PER_REQUESTER and len(refused) == 80 - len(opened)
                await asyncio.sleep(1)  # each opened websocket's executor watch is up
                jobs = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: as_user(ALICE, lambda: Client(daemon.socket).list(limit=1)[0])
                )
                assert isinstance(jobs, list)
            finally:
                for connection in opened:
                    connection.close()

        asyncio.run(flood())
