"""Authorization by Jupyter's authorizer (a read-only one here), and the embedded executor."""

from __future__ import annotations

import json
import os

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError


class ReadOnlyWorker(Authorizer):
    """Grants the worker resource for reading only, as a JupyterHub read-only scope would."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        return resource != "worker" or action == "read"


@pytest.fixture
def jp_server_config(request, executor_daemon, tmp_path):
    saved = os.environ.get("JUPYTER_WORKER_SOCKET")
    if request.node.get_closest_marker("embedded"):
        worker = {"socket": str(tmp_path / "embedded.sock"), "embedded_state_dir": str(tmp_path / "state")}
        server = {"jpserver_extensions": {"jupyter_worker": True}, "allow_unauthenticated_access": False}
    else:
        worker = {"socket": executor_daemon.socket, "embedded_executor": False}
        server = {"jpserver_extensions": {"jupyter_worker": True}, "allow_unauthenticated_access": False,
                  "authorizer_class": ReadOnlyWorker}  # fmt: skip
    yield {"ServerApp": server, "JupyterWorker": worker}
    if saved is None:
        os.environ.pop("JUPYTER_WORKER_SOCKET", None)
    else:
        os.environ["JUPYTER_WORKER_SOCKET"] = saved


async def status_of(call) -> int:
    try:
        return (await call).code
    except HTTPClientError as exc:
        return exc.code


async def test_a_read_only_authorizer_lists_reads_and_watches_but_cannot_create_or_stop(
    jp_fetch, jp_ws_fetch, executor_daemon
):
    with executor_daemon.client() as client:
        job = client.run({"command": ["sleep", "300"]})
    try:
        assert await status_of(jp_fetch("api", "worker", "jobs")) == 200
        assert await status_of(jp_fetch("api", "worker", "jobs", job["id"])) == 200
        assert await status_of(jp_fetch("api", "worker", "jobs", job["id"], "logs")) == 200
        body = json.dumps({"command": ["true"]})
        assert await status_of(jp_fetch("api", "worker", "jobs", method="POST", body=body)) == 403
        assert await status_of(jp_fetch("api", "worker", "jobs", job["id"], "stop", method="POST", body="{}")) == 403
        assert await status_of(jp_fetch("api", "worker", "jobs", job["id"], method="DELETE")) == 403
        watching = await jp_ws_fetch("api", "worker", "jobs", job["id"], "stream")
        assert json.loads(await watching.read_message())["type"] in ("status", "log")
        watching.close()
    finally:
        with executor_daemon.client() as client:
            client.stop(job["id"], grace_s=0)


@pytest.mark.embedded
async def test_the_server_starts_an_executor_when_none_answers_and_stops_it_at_shutdown(jp_fetch, jp_serverapp):
    extension = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_worker"]))
    capabilities = json.loads((await jp_fetch("api", "worker", "capabilities")).body)
    assert capabilities["executor"] == {"socket": extension.socket, "available": True, "problem": None,
                                        "embedded": True}  # fmt: skip
    assert os.environ["JUPYTER_WORKER_SOCKET"] == extension.socket
    response = await jp_fetch("api", "worker", "jobs", method="POST", body=json.dumps({"command": ["true"]}))
    assert response.code == 201
    process = extension.embedded
    await extension.stop_extension()
    assert process.returncode is not None
    assert not os.path.exists(extension.socket)
    assert os.path.exists(os.path.join(extension.embedded_state_dir, "jobs.db"))
