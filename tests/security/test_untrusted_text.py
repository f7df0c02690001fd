"""Untrusted text is inert everywhere: alice names and commands her jobs with terminal escapes
(window title, clear screen, a one-byte CSI), a newline that would forge a row, bidi overrides,
zero-width characters, `$...$` LaTeX and HTML; root, an admin, then looks with the CLI, the magics
and REST, and nothing she wrote acts on what root sees. Her huge records cannot break root's
listing either (issue 15, item 5)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import urllib.request
from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from jupyter_worker import protocol
from jupyter_worker.client import Client
from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.executor.store import JobStore
from jupyter_worker.spec import MAX_ARGS, MAX_COMMAND_BYTES, MAX_ERROR_CHARS, MAX_NAME_CHARS, JobRecord
from tests.executor.conftest import Daemon, as_user, started_daemon, wait_for
from tests.security.conftest import logged_user_server

ALICE = "jwtest-alice"
CLI = [sys.executable, "-m", "jupyter_worker.cli"]
# What alice puts in front of root: set the window title, clear the screen, CSI as one C1 byte,
# DEL, a newline and a forged table row, a right-to-left override, zero-width characters, LaTeX, HTML.
HOSTILE = (
    "\x1b]0;owned\x07\x1b[2J\x9b31m\x7f\nFORGED  COMPLETED  root  \u202eevil\u200b\u2066"
    " $x^2$ <script>alert(1)</script><img src=x onerror=alert(1)>"
)
PROGRAM = "/nonexistent/\x1b]0;owned\x07\u202e$x$<img src=x onerror=alert(1)>"
PRINTS = "printf '\\033]0;owned\\007\\033[2J\\302\\2332J\\342\\200\\256ok\\n'"


def hidden(text: str) -> list[str]:
    """The characters in text that a terminal obeys or a reader cannot see (newlines aside)."""
    return [c for c in text.replace("\n", "") if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]


def cli(*args: str, daemon: Daemon, user: str | None = None) -> subprocess.CompletedProcess:
    as_user_ = ["runuser", "-u", user, "--"] if user else []
    command = [*as_user_, *CLI, "--socket", daemon.socket, *args]
    return subprocess.run(command, check=False, capture_output=True, timeout=120)


def submit_as_alice(daemon: Daemon, job: dict) -> JobRecord:
    return as_user(ALICE, lambda: Client(daemon.socket).run(job))


@pytest.fixture(scope="module")
def hostile(users) -> Iterator[tuple[Daemon, dict[str, JobRecord]]]:
    """alice's jobs, ended: one whose command is hostile, one that prints escapes, one whose program
    (so its default name, and the error it fails with) is hostile."""
    with started_daemon([]) as daemon:
        jobs = {
            "command": submit_as_alice(daemon, {"command": ["sh", "-c", "exit 3", HOSTILE]}),
            "prints": submit_as_alice(daemon, {"command": ["sh", "-c", PRINTS], "name": "printer"}),
            "program": submit_as_alice(daemon, {"command": [PROGRAM, HOSTILE]}),
        }
        with daemon.client() as client:
            for job in jobs.values():
                wait_for(lambda job=job: client.get(job.id).finished, what="alice's job to end")
            yield daemon, {key: client.get(job.id) for key, job in jobs.items()}


@pytest.mark.parametrize(
    "job",
    [
        {"command": ["true"], "name": "x\x1b]0;owned\x07"},
        {"command": ["true"], "name": "\u202eevil"},
        {"command": ["true"], "name": "$x^2$"},
        {"command": ["true"], "name": "<script>alert(1)</script>"},
        {"command": ["true"], "name": "n" * (MAX_NAME_CHARS + 1)},
        {"command": ["true"], "env": {"KEY\x1b[2J": "1"}},
        {"command": ["true"] * (MAX_ARGS + 1)},
        {"command": ["true", "x" * MAX_COMMAND_BYTES]},
        {"command": ["true"], "env": {f"V{i}": "x" * 1024 for i in range(200)}},
        {"command": ["true"], "mounts": ["/tmp:/data"] * 33},
    ],
    ids=["escape", "bidi", "latex", "html", "long", "env-key", "argc", "argv-bytes", "env-bytes", "mounts"],
)
def test_a_hostile_name_env_key_or_oversized_request_is_refused_as_invalid_without_echoing_it(hostile, job):
    daemon, _ = hostile
    with pytest.raises(WorkerError) as refused:
        submit_as_alice(daemon, job)
    assert refused.value.reason is ErrorReason.INVALID
    assert len(refused.value.message) < 300 and not hidden(refused.value.message)


def test_a_default_name_from_a_hostile_program_follows_the_name_rule(hostile):
    _, jobs = hostile
    name = jobs["program"].name
    assert name and not hidden(name) and not set(name) & set("$<>=/\x1b")


def test_an_admins_cli_list_shows_alices_hostile_jobs_inert_one_line_each(hostile):
    daemon, jobs = hostile
    listing = cli("list", daemon=daemon)
    assert listing.returncode == 0, listing.stderr
    text = listing.stdout.decode()
    assert b"\x1b" not in listing.stdout and not hidden(text)
    lines = text.splitlines()
    assert len(lines) == 1 + len(jobs) and all(re.match(r"[0-9a-f]{8}  [A-Z]+ ", line) for line in lines[1:])


@pytest.mark.parametrize("key", ["command", "prints", "program"])
def test_an_admins_cli_status_of_a_hostile_job_shows_no_control_character(hostile, key):
    daemon, jobs = hostile
    status = cli("status", jobs[key].id, daemon=daemon)
    assert status.returncode == 0, status.stderr
    text = status.stdout.decode()
    assert b"\x1b" not in status.stdout and not hidden(text)
    assert [line.split(":")[0] for line in text.splitlines()][:5] == ["ID", "Name", "Owner", "Command", "Status"]


def test_an_admin_reads_alices_log_inert_unless_raw_and_alice_reads_her_own_as_written(hostile):
    daemon, jobs = hostile
    job_id = jobs["prints"].id
    seen_by_root = cli("log", job_id, daemon=daemon)
    assert seen_by_root.returncode == 0 and seen_by_root.stdout.decode().endswith("ok\n")
    assert b"\x1b" not in seen_by_root.stdout and not hidden(seen_by_root.stdout.decode())
    assert b"\\x1b]0;owned\\x07" in seen_by_root.stdout and b"\\u202e" in seen_by_root.stdout
    assert b"\x1b]0;owned\x07" in cli("log", "--raw", job_id, daemon=daemon).stdout
    assert b"\x1b]0;owned\x07" in cli("log", job_id, daemon=daemon, user=ALICE).stdout


@pytest.fixture
def shell(hostile, monkeypatch):
    """An IPython shell in this process with the extension loaded, on the hostile executor."""
    daemon, _ = hostile
    monkeypatch.setenv("JUPYTER_WORKER_SOCKET", daemon.socket)
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("jupyter_worker")
    yield ip
    InteractiveShell.clear_instance()


def rich_outputs(shell, line: str) -> list[dict[str, str]]:
    with capture_output() as captured:
        shell.run_line_magic("worker", line)
    assert captured.outputs, captured.stdout
    return [output.data for output in captured.outputs]


@pytest.mark.parametrize("verb", ["list", "status"])
def test_the_magics_show_alices_text_escaped_in_html_and_inert_in_plain_text(hostile, shell, verb):
    _, jobs = hostile
    lines = ["list"] if verb == "list" else [f"status {job.id}" for job in jobs.values()]
    for line in lines:
        for data in rich_outputs(shell, line):
            page, plain = data["text/html"], data["text/plain"]
            assert "<script" not in page and "<img" not in page and "$" not in page, page
            assert 'class="tex2jax_ignore mathjax_ignore"' in page and not hidden(page)
            assert "\x1b" not in plain and not hidden(plain)


@pytest.mark.parametrize("follow", [False, True], ids=["logs", "logs-f"])
def test_alices_log_read_with_the_magics_by_root_fails_to_reach_roots_terminal_raw(hostile, shell, follow):
    _, jobs = hostile
    with capture_output() as captured:
        shell.run_line_magic("worker", f"logs {jobs['prints'].id}" + (" -f" if follow else ""))
    shown = captured.stdout + captured.stderr
    assert "\\x1b]0;owned\\x07" in shown and "ok" in shown, shown
    assert "\x1b" not in shown and not hidden(shown), shown


def test_the_rest_listing_carries_alices_text_as_json_and_a_refusal_never_echoes_a_huge_input(hostile):
    daemon, jobs = hostile
    with logged_user_server(ALICE, daemon.socket) as (server, _):
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/worker/jobs", headers={"Authorization": f"token {server.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            assert response.headers["Content-Type"].startswith("application/json")
        assert not any(byte < 0x20 or byte >= 0x7F for byte in body)  # every such character \u-escaped
        listed = {job["id"]: job for job in json.loads(body)["jobs"]}
        assert listed[jobs["command"].id]["command"][-1] == HOSTILE  # the data itself, intact
        status, refusal = server.call("POST", "jobs", {"command": ["true"], "mounts": ["x" * (200 << 10)]})
        assert status == 400 and refusal["reason"] == "invalid" and len(refusal["message"]) < 300
        status, refusal = server.call("POST", "jobs", {"command": ["true"], "name": HOSTILE})
        assert status == 400 and refusal["reason"] == "invalid" and not hidden(refusal["message"])
        status, refusal = server.call("GET", f"jobs?limit={'9x' * 4000}")
        assert status == 400 and len(refusal["message"]) < 300
        # A last answer logged at debug level: the refusals' log lines are written by now (a SIGTERM
        # that lands in the middle of one leaves jupyter_server hanging instead of stopping).
        assert server.call("GET", "jobs")[0] == 200


def largest_record(number: int, owner: pwd.struct_passwd) -> JobRecord:
    now = time.time()
    return JobRecord.from_dict(
        {
            "id": f"{number:08x}-0000-4000-8000-000000000000",
            "name": "n" * MAX_NAME_CHARS,
            "owner": owner.pw_name,
            "owner_uid": owner.pw_uid,
            # the largest command allowed; every tenth of bytes JSON writes six times over
            "command": ["\x01" * (MAX_COMMAND_BYTES - 2)] if number % 10 == 0 else ["y" * (MAX_COMMAND_BYTES - 2)],
            "status": "FAILED",
            "reason": "start_error",
            "error": "e" * MAX_ERROR_CHARS,
            "limits": {},
            "network": "none",
            "created_at": now,
            "started_at": now,
            "finished_at": now,
        }
    )


def test_a_thousand_of_alices_largest_records_list_for_the_admin_in_pages_that_fit_a_frame(users):
    """The records are written to the store before the executor starts (a thousand sandboxes would
    take minutes); the executor, its paging and the client are the real ones."""
    state = tempfile.mkdtemp(prefix="jupyter-worker-state-")
    try:
        store = JobStore(os.path.join(state, "jobs.db"))
        alice = pwd.getpwnam(ALICE)
        for number in range(1000):
            store.add(largest_record(number, alice), {})
        store.close()
        with started_daemon([], state_dir=state) as daemon, daemon.client() as client:
            seen, cursor, pages = [], None, 0
            while True:
                records, cursor = client.list(limit=1000, cursor=cursor)
                page = protocol.encode(protocol.ok(1, jobs=[r.to_dict() for r in records], cursor=cursor))
                assert len(page) <= protocol.MAX_FRAME
                seen += [r.id for r in records]
                pages += 1
                if cursor is None:
                    break
            assert len(set(seen)) == 1000 and pages > 1
            listing = cli("list", "--limit", "1000", daemon=daemon)
            assert listing.returncode == 0, listing.stderr
            assert len(listing.stdout.splitlines()) == 1001 and not hidden(listing.stdout.decode())
    finally:
        shutil.rmtree(state, ignore_errors=True)
