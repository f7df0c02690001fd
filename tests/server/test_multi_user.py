"""Two single-user Jupyter servers, running as two real users, against one system executor."""

from __future__ import annotations

import contextlib
import shutil
import time

import pytest

from jupyter_worker.client import Client
from tests.conftest import USERS
from tests.executor.conftest import as_user, started_daemon, wait_for
from tests.server.conftest import UserServer


@pytest.fixture(scope="module")
def servers(users):
    """The servers of alice, bob and carol (in the executor's viewer group) on one executor."""
    with started_daemon([]) as executor, contextlib.ExitStack() as stack:
        yield [stack.enter_context(contextlib.closing(UserServer(user, executor.socket))) for user in USERS]


def test_each_users_server_shows_only_that_users_jobs(servers, users):
    alice, bob, _ = servers
    code, job = alice.call("POST", "jobs", {"command": ["sh", "-c", "id -u; sleep 300"]})
    assert code == 201 and job["owner"] == "jwtest-alice" and job["owner_uid"] == users["jwtest-alice"].pw_uid
    assert job["id"] in [j["id"] for j in alice.call("GET", "jobs")[1]["jobs"]]
    assert job["id"] not in [j["id"] for j in bob.call("GET", "jobs")[1]["jobs"]]
    for method, path in (
        ("GET", f"jobs/{job['id']}"),
        ("GET", f"jobs/{job['id']}/logs"),
        ("GET", f"jobs/{job['id']}/metrics"),
        ("GET", f"jobs/{job['id']}/files"),
        ("GET", f"jobs/{job['id']}/files/download?path=x"),
        ("POST", f"jobs/{job['id']}/stop"),
        ("DELETE", f"jobs/{job['id']}"),
    ):
        code, error = bob.call(method, path, {} if method == "POST" else None)
        assert (code, error["reason"]) == (404, "not_found"), (method, path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not alice.call("GET", f"jobs/{job['id']}/logs")[1]["chunks"]:
        time.sleep(0.1)
    output = alice.call("GET", f"jobs/{job['id']}/logs")[1]["chunks"][0]["text"]
    assert output == f"{users['jwtest-alice'].pw_uid}\n"
    assert alice.call("POST", f"jobs/{job['id']}/stop", {"grace_s": 0})[0] == 200


def test_a_viewers_server_lists_jobs_but_running_one_is_forbidden(servers):
    carol = servers[2]
    assert carol.call("GET", "jobs")[0] == 200
    code, error = carol.call("POST", "jobs", {"command": ["true"]})
    assert (code, error["reason"]) == (403, "forbidden") and "viewers" in error["message"]


def test_a_server_that_stops_its_jobs_with_it_does_so_even_when_killed_and_spares_its_users_other_jobs(users):
    with started_daemon([]) as executor:
        server = UserServer("jwtest-alice", executor.socket, "--JupyterWorker.jobs_on_server_stop=stop")
        code, held = server.call("POST", "jobs", {"command": ["sleep", "300"]})
        assert code == 201
        from_a_shell = as_user("jwtest-alice", lambda: Client(executor.socket).run({"command": ["sleep", "300"]}))
        server.process.kill()
        server.process.wait()
        shutil.rmtree(server.home, ignore_errors=True)
        with executor.client() as client:
            ended = wait_for(
                lambda: client.get(held["id"]).status == "STOPPED" and client.get(held["id"]),
                what="the killed server's job to stop",
            )
            assert ended.ending == "stopped by jwtest-alice's server ending"
            assert client.get(from_a_shell.id).status == "RUNNING"
