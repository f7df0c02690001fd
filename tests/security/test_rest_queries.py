"""Robust input at REST: query parameters. Every route checks its query once, before reading any
(handlers._Query): a parameter the route does not take, or one given twice that it reads once, is a
400 bad_request naming it, never silently ignored or read as its last value (a typo `?wait=60` would
answer at once, `?frames=text&frames=binary` would pick one behind the client's back); numbers are
plain ASCII digits; a value is never stripped. Tried by a real user (alice) on her own Jupyter server,
running as her, against a real executor."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from jupyter_worker.errors import ErrorReason
from jupyter_worker.spec import JobStatus
from tests.executor.conftest import wait_for
from tests.security.conftest import SERVER_ERROR, Rest, logged_user_server

ALICE = "jwtest-alice"
WRITES = "mkdir d; echo spaced > ' a '; echo plain > a; echo inner > d/f"


@pytest.fixture(scope="module")
def alices(logged_daemon, users):
    """alice's server, and a finished job of hers whose /work holds ' a ', 'a' and d/f."""
    daemon, executor_log = logged_daemon
    with logged_user_server(ALICE, daemon.socket) as (server, server_log):
        rest = Rest(server)
        code, job = rest.call("POST", "jobs", json.dumps({"command": ["sh", "-c", WRITES]}).encode())
        assert code == 201, job
        wait_for(lambda: rest.call("GET", f"jobs/{job['id']}")[1]["status"] == JobStatus.COMPLETED.value, what="end")
        yield daemon, executor_log, server, server_log, rest, job["id"]


def refused(rest: Rest, path: str, words: str) -> None:
    code, body = rest.call("GET", path)
    assert (code, body["reason"]) == (400, ErrorReason.BAD_REQUEST.value), (path, code, body)
    assert words in body["message"], (path, body)


def test_a_query_parameter_a_route_does_not_take_is_refused_on_every_route_not_ignored(alices):
    _, executor_log, _, server_log, rest, job_id = alices
    for path in (
        "jobs?stauts=RUNNING",
        f"jobs/{job_id}?wait=60",
        f"jobs/{job_id}/logs?ofset=5",
        f"jobs/{job_id}/metrics?x=1",
        f"jobs/{job_id}/files?pth=d",
        f"jobs/{job_id}/files/download?file=a",
        f"jobs/{job_id}/stream?frame=binary",
        "events?since=0",
        "capabilities?whole=1",
        "jobs?%1b%5b2J=1",
    ):
        refused(rest, path, "is not a parameter here")
    for path in (f"jobs/{job_id}?1796088023277", "capabilities?1796088023277"):  # JupyterLab's cache-buster
        code, _ = rest.call("GET", path)
        assert code == 200, path
    refused(rest, "jobs?1796088023277=1", "is not a parameter here")  # a number with a value is no cache-buster
    _, body = rest.call("GET", "jobs?%1b%5b2J=1")
    assert "\x1b" not in body["message"] and "\\x1b" in body["message"]  # the name is shown inert
    for log in (executor_log.text(), server_log.text()):
        assert "Traceback" not in log and not SERVER_ERROR.search(log), log


def test_a_query_parameter_given_twice_where_one_is_read_is_refused_and_status_may_repeat(alices):
    _, _, server, _, rest, job_id = alices
    for path in (
        f"jobs/{job_id}?wait_s=0&wait_s=300",
        f"jobs/{job_id}/stream?frames=text&frames=binary",
        f"jobs/{job_id}/stream?offset=0&offset=5",
        f"jobs/{job_id}/files/download?path=a&path=d/f",
        "jobs?order=oldest&order=newest",
    ):
        refused(rest, path, "given 2 times, taken once")
    code, page = rest.call("GET", "jobs?status=COMPLETED&status=RUNNING")
    assert code == 200 and job_id in [job["id"] for job in page["jobs"]]
    code, job = rest.call("GET", f"jobs/{job_id}?wait_s=0&token={server.token}")  # Jupyter's own login
    assert code == 200 and job["id"] == job_id


def test_a_number_in_a_query_is_plain_ascii_digits_not_a_sign_space_underscore_or_other_digits(alices):
    _, _, _, _, rest, job_id = alices
    for value in ("\u0665", " 2", "2 ", "+2", "-0", "1_0", "0x10", "1e308", "nan", "", "9" * 20):
        for name, route in (("wait_s", f"jobs/{job_id}"), ("offset", f"jobs/{job_id}/stream"), ("limit", "jobs")):
            refused(rest, f"{route}?{name}={urllib.parse.quote(value)}", f"{name}: ")
    code, job = rest.call("GET", f"jobs/{job_id}?wait_s=007")
    assert code == 200 and job["id"] == job_id


def test_a_file_name_with_spaces_at_its_ends_downloads_that_file_not_another(alices):
    _, _, _, _, rest, job_id = alices
    code, data = rest.call("GET", f"jobs/{job_id}/files/download?path={urllib.parse.quote(' a ')}")
    assert (code, data) == (200, "spaced\n")


def test_a_route_or_job_id_the_api_has_not_is_a_json_404_not_jupyters_html_page(alices):
    _, executor_log, server, server_log, rest, job_id = alices
    for method, path, words in (
        ("GET", "nope", "no such route"),
        ("GET", f"jobs/{job_id}/nope", "no such route"),
        ("POST", "jobs/zzz/stop", "no job 'zzz'"),
        ("GET", "jobs/" + "a" * 40, "no job 'aaaa"),
        ("DELETE", "jobs/%1b%5b2J", "no job '\\x1b[2J'"),
    ):
        code, body = rest.call(method, path)
        assert code == 404 and isinstance(body, dict), (path, code, body)
        assert body["reason"] == ErrorReason.NOT_FOUND.value and words in body["message"], (path, body)
    server.token, token = "not-the-token", server.token
    try:
        code, body = rest.call("GET", "nope")  # without a login: refused as every worker route is
        assert code == 403, body
    finally:
        server.token = token
    for log in (executor_log.text(), server_log.text()):
        assert "Traceback" not in log and not SERVER_ERROR.search(log), log
