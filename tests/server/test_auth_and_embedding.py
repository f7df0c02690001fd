"""Authorization by Jupyter's authorizer (a read-only one here), and the embedded executor."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from jupyter_worker.client import HOLDER_ENV
from tests.executor.conftest import Daemon, wait_for


class ReadOnlyWorker(Authorizer):
    """Grants the worker resource for reading only, as a JupyterHub read-only scope would."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        return resource != "worker" or action == "read"


@pytest.fixture
def state_folder():
    """Short, as job folders hold Unix sockets (at most 107 bytes of path); kept apart from pytest's."""
    folder = tempfile.mkdtemp(prefix="jw-")
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def jp_server_config(request, executor_daemon, state_folder):
    if request.node.get_closest_marker("embedded"):
        worker = {"socket": f"{state_folder}/embedded.sock", "embedded_state_dir": f"{state_folder}/state"}
        if request.node.get_closest_marker("jobs_end_with_server"):
            worker["jobs_on_server_stop"] = "stop"
        server = {"jpserver_extensions": {"jupyter_worker": True}, "allow_unauthenticated_access": False}
    else:
        worker = {"socket": executor_daemon.socket, "embedded_executor": False}
        server = {
            "jpserver_extensions": {"jupyter_worker": True},
            "allow_unauthenticated_access": False,
            "authorizer_class": ReadOnlyWorker,
        }
    return {"ServerApp": server, "JupyterWorker": worker}


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
        assert await status_of(jp_fetch("api", "worker", "jobs", job.id)) == 200
        assert await status_of(jp_fetch("api", "worker", "jobs", job.id, "logs")) == 200
        body = json.dumps({"command": ["true"]})
        assert await status_of(jp_fetch("api", "worker", "jobs", method="POST", body=body)) == 403
        assert await status_of(jp_fetch("api", "worker", "jobs", job.id, "stop", method="POST", body="{}")) == 403
        assert await status_of(jp_fetch("api", "worker", "jobs", job.id, method="DELETE")) == 403
        watching = await jp_ws_fetch("api", "worker", "jobs", job.id, "stream")
        assert json.loads(await watching.read_message())["type"] in ("status", "log")
        watching.close()
    finally:
        with executor_daemon.client() as client:
            client.stop(job.id, grace_s=0)


@pytest.mark.embedded
async def test_the_server_starts_an_executor_when_none_answers_and_stops_it_at_shutdown(jp_fetch, jp_serverapp):
    extension = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_worker"]))
    capabilities = json.loads((await jp_fetch("api", "worker", "capabilities")).body)
    assert capabilities["executor"] == {
        "socket": extension.socket,
        "available": True,
        "problem": None,
        "embedded": True,
    }
    assert os.environ["JUPYTER_WORKER_SOCKET"] == extension.socket
    response = await jp_fetch("api", "worker", "jobs", method="POST", body=json.dumps({"command": ["true"]}))
    assert response.code == 201
    process = extension.embedded
    await extension.stop_extension()
    assert process.returncode is not None
    assert not os.path.exists(extension.socket)
    assert os.path.exists(os.path.join(extension.embedded_state_dir, "jobs.db"))


@pytest.mark.embedded
@pytest.mark.jobs_end_with_server
async def test_a_server_whose_jobs_end_with_it_has_them_stopped_before_its_embedded_executor_exits(
    jp_fetch, jp_serverapp, state_folder
):
    extension = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_worker"]))
    assert os.environ[HOLDER_ENV] == extension.holder
    body = json.dumps({"command": ["sleep", "300"]})
    job = json.loads((await jp_fetch("api", "worker", "jobs", method="POST", body=body)).body)
    await extension.stop_extension()
    assert HOLDER_ENV not in os.environ
    after = Daemon(state_folder)  # the next executor on the same state, to see how the job ended
    after.start()
    try:
        with after.client() as client:
            ended = wait_for(
                lambda: client.get(job["id"]).status == "STOPPED" and client.get(job["id"]),
                what="the held job to have been stopped",
            )
        assert ended.stopped_by == f"{extension.owner}'s server ending"
    finally:
        after.stop()
