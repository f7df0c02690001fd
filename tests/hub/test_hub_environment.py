"""A Jupyter server with JupyterHub's environment but not JupyterHub's login (started by hand from
a hub server's terminal, say, or a hub setup that lost the single-user extension): the hub's
worker scopes cannot be checked there, so the worker routes stay closed, and say why."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from tests.executor.conftest import started_daemon


@pytest.fixture(scope="module")
def executor_daemon(users):
    with started_daemon([]) as daemon:
        yield daemon


@pytest.fixture
def jp_server_config(monkeypatch, executor_daemon):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "a-token-the-hub-gave")
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_worker": True}},
        "JupyterWorker": {"socket": executor_daemon.socket, "embedded_executor": False},
    }


async def test_the_worker_routes_of_a_server_with_the_hubs_environment_but_not_its_login_are_closed(
    jp_fetch, executor_daemon
):
    for method, body in (("GET", None), ("POST", json.dumps({"command": ["true"]}))):
        with pytest.raises(HTTPClientError) as refused:
            await jp_fetch("api", "worker", "jobs", method=method, body=body)
        reply = json.loads(refused.value.response.body)
        assert (refused.value.code, reply["reason"]) == (403, "forbidden")
        assert "JupyterHub's environment" in reply["message"] and "jupyterhub-singleuser" in reply["message"]
    assert (await jp_fetch("api", "contents", method="GET")).code == 200
    with executor_daemon.client() as root:
        assert not root.list()[0], "a job ran"
