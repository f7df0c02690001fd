"""Fair access under a real JupyterHub: carol holds custom:jupyter-worker:read for alice's server (the
hub's test roles, docs/jupyterhub_config.py's deployment), so she may open its worker websockets; each
is an executor connection of alice's. Carol opening 70 through the proxy used up alice's 64
(Policy.max_connections_per_user): alice's own CLI was refused busy at the executor. Now carol gets
her share of the server's websockets (server/shares.py) and the rest are refused before the upgrade."""

from __future__ import annotations

import asyncio

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_worker.client import Client
from jupyter_worker.server.handlers import MAX_STREAMS_PER_REQUESTER
from tests.executor.conftest import as_user
from tests.hub.conftest import ALICE, CAROL, hub, system_executor  # noqa: F401 - the hub's fixtures

pytestmark = pytest.mark.hub  # a real JupyterHub: the host lane's (the VM lane leaves hub tests out)

FLOOD = 70


async def opened_by(url: str, token: str, count: int) -> tuple[list, list[int]]:
    opened, refused = [], []
    for _ in range(count):
        try:
            opened.append(await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"})))
        except HTTPClientError as exc:
            refused.append(exc.code)
    return opened, refused


def test_a_reader_flooding_alices_server_with_websockets_through_the_hub_leaves_alice_her_cli_and_her_own(
    hub,  # noqa: F811
    system_executor,  # noqa: F811
):
    hub.start_server(ALICE)
    alice, carol = hub.token_for(ALICE), hub.token_for(CAROL)
    url = f"ws://127.0.0.1:{hub.port}/user/{ALICE}/api/worker/events"

    async def flood() -> None:
        carols, refused = await opened_by(url, carol, FLOOD)
        mine: list = []
        try:
            assert len(carols) == MAX_STREAMS_PER_REQUESTER and refused == [503] * (FLOOD - len(carols))
            mine, refused = await opened_by(url, alice, 2)
            assert len(mine) == 2 and refused == []
            await asyncio.sleep(1)  # every opened websocket's executor watch is up
            jobs = await asyncio.get_running_loop().run_in_executor(
                None, lambda: as_user(ALICE, lambda: Client(system_executor.socket).list(limit=1)[0])
            )
            assert isinstance(jobs, list)
        finally:
            for connection in carols + mine:
                connection.close()

    asyncio.run(flood())
