"""JupyterHub in front of one system executor: each user's jobs are theirs on every route, the
hub's scopes grant reading and running, whatever the servers' arguments say, and idle culling
with the guide's numbers waits for running jobs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_worker.client import Client
from tests.executor.conftest import wait_for
from tests.hub.conftest import ALICE, BOB, CAROL, CULL_TIMEOUT_S, REPORT_DELAY_S

pytestmark = pytest.mark.hub

SLEEPER = {"command": ["sh", "-c", "id -u; sleep 600"]}


def job_routes(job_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"jobs/{job_id}"),
        ("GET", f"jobs/{job_id}/logs"),
        ("GET", f"jobs/{job_id}/files"),
        ("POST", f"jobs/{job_id}/stop"),
        ("DELETE", f"jobs/{job_id}"),
    ]


def every_route(job_id: str) -> list[tuple[str, str]]:
    return [("GET", "jobs"), ("POST", "jobs"), ("GET", "capabilities"), *job_routes(job_id)]


def body_for(method: str, path: str) -> dict | None:
    if method != "POST":
        return None
    return SLEEPER if path == "jobs" else {}


def started(hub, user: str, token: str) -> dict:
    code, job = hub.worker(user, "POST", "jobs", token, SLEEPER)
    assert code == 201, job
    hub.wait(lambda: hub.worker(user, "GET", f"jobs/{job['id']}/logs", token)[1]["chunks"], 30, "the job's output")
    return job


def cli_as(user: str, *args: str, socket: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", user, "--", sys.executable, "-m", "jupyter_worker.cli", "--socket", socket, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def tokens(hub):
    for user in (ALICE, BOB):
        hub.start_server(user)
    return {user: hub.token_for(user) for user in (ALICE, BOB, CAROL)}


@pytest.fixture(autouse=True)
def servers_up(hub, tokens):
    """Each test starts with both servers running (the culler or a test may have stopped them)."""
    for user in (ALICE, BOB):
        hub.start_server(user)


def test_each_users_token_runs_jobs_as_that_user_through_the_proxy(hub, tokens, users):
    job = started(hub, ALICE, tokens[ALICE])
    assert (job["owner"], job["owner_uid"]) == (ALICE, users[ALICE].pw_uid)
    output = hub.worker(ALICE, "GET", f"jobs/{job['id']}/logs", tokens[ALICE])[1]["chunks"][0]["text"]
    assert output == f"{users[ALICE].pw_uid}\n"
    code, page = hub.worker(ALICE, "GET", "jobs", tokens[ALICE])
    assert code == 200 and job["id"] in [j["id"] for j in page["jobs"]]
    code, messages = hub.websocket(ALICE, f"jobs/{job['id']}/stream", tokens[ALICE], until="log")
    assert code == 101 and messages[-1]["text"] == f"{users[ALICE].pw_uid}\n"
    assert hub.worker(ALICE, "POST", f"jobs/{job['id']}/stop", tokens[ALICE], {"grace_s": 0})[0] == 200


def test_no_route_lets_one_user_see_or_touch_anothers_jobs(hub, tokens, system_executor):
    job = started(hub, ALICE, tokens[ALICE])
    for method, path in every_route(job["id"]):
        code, _ = hub.worker(ALICE, method, path, tokens[BOB], body_for(method, path))
        assert code == 403, (method, path)
        assert hub.worker(BOB, method, path, tokens[ALICE], body_for(method, path))[0] == 403, (method, path)
    assert hub.websocket(ALICE, "events", tokens[BOB], until="job")[0] == 403
    assert job["id"] not in [j["id"] for j in hub.worker(BOB, "GET", "jobs", tokens[BOB])[1]["jobs"]]
    for method, path in job_routes(job["id"]):
        code, error = hub.worker(BOB, method, path, tokens[BOB], body_for(method, path))
        assert (code, error["reason"]) == (404, "not_found"), (method, path)
    assert hub.websocket(BOB, f"jobs/{job['id']}/stream", tokens[BOB], until="end")[0] == 404
    listing = cli_as(BOB, "list", socket=system_executor.socket)
    assert listing.returncode == 0 and job["id"][:8] not in listing.stdout
    for verb in ("status", "log", "stop", "delete"):
        refused = cli_as(BOB, verb, job["id"], socket=system_executor.socket)
        assert refused.returncode != 0 and "no job" in refused.stderr and "Traceback" not in refused.stderr, verb
    assert hub.worker(ALICE, "GET", f"jobs/{job['id']}", tokens[ALICE])[1]["status"] == "RUNNING"
    hub.worker(ALICE, "POST", f"jobs/{job['id']}/stop", tokens[ALICE], {"grace_s": 0})


def test_a_read_only_role_lists_and_reads_logs_but_cannot_run_stop_or_reach_anything_else(hub, tokens):
    job = started(hub, ALICE, tokens[ALICE])
    carol = tokens[CAROL]
    assert job["id"] in [j["id"] for j in hub.worker(ALICE, "GET", "jobs", carol)[1]["jobs"]]
    for path in (f"jobs/{job['id']}", f"jobs/{job['id']}/logs", f"jobs/{job['id']}/files", "capabilities"):
        assert hub.worker(ALICE, "GET", path, carol)[0] == 200, path
    code, messages = hub.websocket(ALICE, f"jobs/{job['id']}/stream", carol, until="log")
    assert code == 101 and messages[-1]["type"] == "log"
    for method, path in (("POST", "jobs"), ("POST", f"jobs/{job['id']}/stop"), ("DELETE", f"jobs/{job['id']}")):
        assert hub.worker(ALICE, method, path, carol, body_for(method, path))[0] == 403, (method, path)
    for path in ("/api/contents", "/api/kernels", "/api/sessions", "/api/terminals"):
        assert hub.request("GET", f"/user/{ALICE}{path}", carol)[0] == 403, path
    assert hub.worker(BOB, "GET", "jobs", carol)[0] == 403
    assert hub.worker(ALICE, "GET", f"jobs/{job['id']}", tokens[ALICE])[1]["status"] == "RUNNING"
    hub.worker(ALICE, "POST", f"jobs/{job['id']}/stop", tokens[ALICE], {"grace_s": 0})


def test_the_hubs_admins_reach_a_users_server_but_its_jobs_only_with_the_worker_scopes(hub):
    assert hub.request("GET", f"/user/{ALICE}/api/contents", hub.admin_token)[0] == 200
    assert hub.worker(ALICE, "GET", "jobs", hub.admin_token)[0] == 403


def test_an_owners_token_without_the_worker_scopes_reaches_the_server_but_not_its_jobs(hub):
    narrow = hub.token_for(ALICE, scopes=[f"access:servers!user={ALICE}"])
    assert hub.request("GET", f"/user/{ALICE}/api/contents", narrow)[0] == 200
    assert hub.worker(ALICE, "GET", "jobs", narrow)[0] == 403
    reader = hub.token_for(ALICE, scopes=[f"access:servers!user={ALICE}", f"custom:jupyter-worker:read!user={ALICE}"])
    assert hub.worker(ALICE, "GET", "jobs", reader)[0] == 200
    assert hub.worker(ALICE, "POST", "jobs", reader, SLEEPER)[0] == 403


def test_a_dashboard_service_reads_every_users_jobs_and_runs_none(hub, tokens):
    job = started(hub, BOB, tokens[BOB])
    for user in (ALICE, BOB):
        code, page = hub.worker(user, "GET", "jobs", hub.dashboard_token)
        assert code == 200, user
        assert (job["id"] in [j["id"] for j in page["jobs"]]) == (user == BOB)
    assert hub.worker(BOB, "GET", f"jobs/{job['id']}/logs", hub.dashboard_token)[0] == 200
    assert hub.worker(BOB, "POST", "jobs", hub.dashboard_token, SLEEPER)[0] == 403
    assert hub.worker(BOB, "POST", f"jobs/{job['id']}/stop", hub.dashboard_token, {})[0] == 403
    hub.worker(BOB, "POST", f"jobs/{job['id']}/stop", tokens[BOB], {"grace_s": 0})


def test_a_service_with_the_run_scope_for_one_user_runs_jobs_as_that_user_only(hub, users):
    code, job = hub.worker(ALICE, "POST", "jobs", hub.runner_token, {"command": ["id", "-u"]})
    assert code == 201 and (job["owner"], job["owner_uid"]) == (ALICE, users[ALICE].pw_uid)
    assert hub.worker(BOB, "POST", "jobs", hub.runner_token, {"command": ["id", "-u"]})[0] == 403
    final = hub.wait(
        lambda: (
            (j := hub.worker(ALICE, "GET", f"jobs/{job['id']}", hub.runner_token)[1])["status"] == "COMPLETED" and j
        ),
        30,
        "the service's job",
    )
    assert final["exit_code"] == 0


def test_the_idle_culler_spares_a_server_while_its_jobs_run_and_culls_it_after(hub, tokens, system_executor):
    """With the guide's activity intervals and the shortest culler timeout it allows (conftest)."""
    job = started(hub, ALICE, tokens[ALICE])
    hub.wait(lambda: hub.server(BOB) is None, 4 * CULL_TIMEOUT_S, "the idle server to be culled")
    assert (hub.server(ALICE) or {}).get("ready"), "the server with a running job was culled"
    with Client(system_executor.socket) as root:
        assert root.get(job["id"]).status == "RUNNING"
        root.stop(job["id"], grace_s=0)
    ended = time.monotonic()
    hub.wait(lambda: hub.server(ALICE) is None, 4 * CULL_TIMEOUT_S, "the server to be culled once its job ended")
    # idle for the timeout, counted from the last report of its job, at most REPORT_DELAY_S before its end
    assert time.monotonic() - ended >= CULL_TIMEOUT_S - REPORT_DELAY_S - 3


def test_stopping_a_server_keeps_or_stops_its_users_jobs_as_the_admin_chose(hub, tokens, system_executor):
    kept = started(hub, ALICE, tokens[ALICE])
    ended = started(hub, BOB, tokens[BOB])
    hub.stop_server(ALICE)
    hub.stop_server(BOB)
    with Client(system_executor.socket) as root:
        assert root.get(kept["id"]).status == "RUNNING"
        final = wait_for(
            lambda: root.get(ended["id"]).status == "STOPPED" and root.get(ended["id"]),
            what="bob's job to stop with his server",
        )
    assert final.stopped_by == f"{BOB}'s server ending"
    hub.start_server(ALICE)
    assert hub.worker(ALICE, "GET", f"jobs/{kept['id']}", tokens[ALICE])[1]["status"] == "RUNNING"
    hub.worker(ALICE, "POST", f"jobs/{kept['id']}/stop", tokens[ALICE], {"grace_s": 0})


def test_a_server_whose_spawner_args_lost_the_authorizer_lets_no_narrow_token_nor_the_hubs_admin_run_jobs(hub, tokens):
    """bob's server was started with c.Spawner.args replaced: it installs the worker's authorizer itself."""
    read_only = hub.token_for(BOB, scopes=[f"access:servers!user={BOB}", f"custom:jupyter-worker:read!user={BOB}"])
    servers_only = hub.token_for(BOB, scopes=[f"access:servers!user={BOB}"])
    before = {j["id"] for j in hub.worker(BOB, "GET", "jobs", tokens[BOB])[1]["jobs"]}
    for who, token in (("read-only", read_only), ("access:servers only", servers_only), ("admin", hub.admin_token)):
        assert hub.worker(BOB, "POST", "jobs", token, SLEEPER)[0] == 403, who
    assert hub.worker(BOB, "GET", "jobs", read_only)[0] == 200
    assert hub.worker(BOB, "GET", "jobs", servers_only)[0] == 403
    assert {j["id"] for j in hub.worker(BOB, "GET", "jobs", tokens[BOB])[1]["jobs"]} == before
    job = started(hub, BOB, tokens[BOB])
    hub.worker(BOB, "POST", f"jobs/{job['id']}/stop", tokens[BOB], {"grace_s": 0})
    log = Path(hub.folder, "hub.log").read_text(errors="replace")
    assert "installed jupyter_worker.server.hub.WorkerHubAuthorizer in place of" in log


def test_a_server_with_an_authorizer_of_the_admins_own_closes_its_worker_routes_and_says_what_to_set(hub, tokens):
    """carol's server has an authorizer that knows nothing of the worker's scopes: not even she runs jobs there."""
    hub.start_server(CAROL)
    try:
        code, refusal = hub.worker(CAROL, "POST", "jobs", tokens[CAROL], SLEEPER)
        assert (code, refusal["reason"]) == (403, "forbidden")
        assert "c.ServerApp.authorizer_class = 'jupyter_worker.server.hub.WorkerHubAuthorizer'" in refusal["message"]
        assert hub.worker(CAROL, "GET", "jobs", tokens[CAROL])[0] == 403
        assert hub.websocket(CAROL, "events", tokens[CAROL], until="job")[0] == 403
        assert hub.request("GET", f"/user/{CAROL}/api/contents", tokens[CAROL])[0] == 200
    finally:
        hub.stop_server(CAROL)
