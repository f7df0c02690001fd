"""The relay (jupyter_worker.slurmstep), run as a user against a real executor, as Slurm would run it
on a node: it submits the job there as that user under a hold, publishes its port in the Slurm job's
Comment, pipes an authenticated head to the node executor, exits when released, and ends the job
when it is killed. Slurm itself is not running here: SLURM_JOB_ID/SLURMD_NODENAME are set as slurmd
sets them, and JUPYTER_WORKER_SLURM_BIN points at a stand-in `scontrol` that records its arguments
(the Comments) in a file. tests/slurm runs the relay under a real Slurm."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_worker import protocol, relaylink
from jupyter_worker.client import Client
from jupyter_worker.slurmstep import EXIT_ERROR, EXIT_SIGNALLED, MAX_CONNECTIONS
from tests.executor.conftest import Daemon, wait_for

ALICE = "jwtest-alice"
SLURM_JOB_ID = "4242"
NODE = "n7"
SECRET = relaylink.new_secret()
KEY = relaylink.secret_key(SECRET)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.cache
def relay_command() -> list[str]:
    """As Slurm runs it: `PYTHON -I -m jupyter_worker.slurmstep`, where this checkout is the package
    installed; else (-I puts neither the working folder nor $PYTHONPATH on the path) the same module
    of this checkout, run as __main__ with the checkout put on the path first."""
    probe = [sys.executable, "-I", "-c", "import jupyter_worker; print(jupyter_worker.__file__)"]
    found = subprocess.run(probe, cwd="/", capture_output=True, text=True, check=False).stdout.strip()
    if found == os.path.join(REPO, "jupyter_worker", "__init__.py"):
        return [sys.executable, "-I", "-m", "jupyter_worker.slurmstep"]
    run_module = "runpy.run_module('jupyter_worker.slurmstep', run_name='__main__', alter_sys=True)"
    return [sys.executable, "-I", "-c", f"import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); {run_module}", REPO]


SCONTROL = '#!/bin/sh\nprintf "%s\\n" "$*" >> "$(dirname "$0")/calls"\n'


class Relay:
    """A relay process run as alice, and the Comments it set through the stand-in scontrol."""

    def __init__(self, bin_dir: str, step_request: dict[str, Any]):
        self.calls = os.path.join(bin_dir, "calls")
        env = {
            "PATH": "/usr/bin:/bin",
            "SLURM_JOB_ID": SLURM_JOB_ID,
            "SLURMD_NODENAME": NODE,
            "JUPYTER_WORKER_SLURM_BIN": bin_dir,
        }
        user = pwd.getpwnam(ALICE)
        # Slurm would send its output to /dev/null; kept here, for a failing test's message
        self.stderr = os.path.join(bin_dir, "stderr")
        with open(self.stderr, "wb") as stderr:
            self.process = self._start(env, user, stderr)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(step_request).encode())
        self.process.stdin.close()

    @staticmethod
    def _start(env: dict[str, str], user: pwd.struct_passwd, stderr: Any) -> subprocess.Popen:
        return subprocess.Popen(
            relay_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd="/",
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=os.getgrouplist(ALICE, user.pw_gid),
        )

    def output(self) -> str:
        with open(self.stderr, errors="replace") as stderr:
            return stderr.read()

    def comments(self) -> list[str]:
        """The Comment of each `scontrol update` so far (each checked to name this Slurm job)."""
        try:
            with open(self.calls) as calls:
                lines = calls.read().splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            assert line.startswith(f"update JobId={SLURM_JOB_ID} Comment="), line
        return [line.split(" Comment=", 1)[1] for line in lines]

    def published(self) -> tuple[int, str]:
        """The port and node job id of the relay's `jw1:port=<port>,job=<id>` Comment."""
        try:
            comment = wait_for(self.comments, what="the relay's Comment")[0]
        except AssertionError:
            raise AssertionError(f"no Comment; the relay said: {self.output()}") from None
        assert comment.startswith("jw1:port="), comment
        port, job = comment.removeprefix("jw1:port=").split(",job=")
        return int(port), job

    def exit_status(self, timeout: float = 20) -> int:
        return self.process.wait(timeout=timeout)

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def relays(users) -> Iterator[Any]:
    """start(job, socket=...) runs a relay as alice with its own stand-in scontrol; all end after."""
    started: list[Relay] = []
    folders: list[str] = []

    def start(job: dict[str, Any], socket: str, **request: Any) -> Relay:
        bin_dir = tempfile.mkdtemp(prefix="jupyter-worker-slurmbin-")
        folders.append(bin_dir)
        script = os.path.join(bin_dir, "scontrol")
        with open(script, "w") as out:
            out.write(SCONTROL)
        os.chmod(script, 0o755)
        user = pwd.getpwnam(ALICE)
        os.chown(bin_dir, user.pw_uid, user.pw_gid)  # the stand-in writes its calls file as alice
        os.chmod(bin_dir, 0o755)
        step = {"version": 1, "job": job, "socket": socket, "secret": SECRET, "linger_s": 600, **request}
        started.append(Relay(bin_dir, step))
        return started[-1]

    yield start
    for relay in started:
        relay.end()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def node_socket(daemon: Daemon) -> str:
    """The daemon's socket written as a node_socket template (%n: the node's name)."""
    folder = os.path.join(daemon.folder, f"node-{NODE}")
    if not os.path.exists(folder):
        os.mkdir(folder, 0o755)
        os.symlink(daemon.socket, os.path.join(folder, "executor.sock"))
    return os.path.join(daemon.folder, "node-%n", "executor.sock")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: dict) -> dict:
    writer.write(protocol.encode(request))
    await writer.drain()
    return await _frame(reader)


async def _frame(reader: asyncio.StreamReader) -> dict:
    header = await asyncio.wait_for(reader.readexactly(protocol.LENGTH.size), 30)
    return protocol.decode(await reader.readexactly(protocol.frame_length(header)))


def follow_through(port: int, key: bytes, job_id: str) -> tuple[dict, bytes, dict]:
    """As the head does: through the relay, hello, then follow the node job to its end; returns
    the hello's answer, the log's bytes and the end event."""

    async def talk() -> tuple[dict, bytes, dict]:
        reader, writer = await relaylink.open_relay("127.0.0.1", port, key, "pipe")
        try:
            hello = await _exchange(reader, writer, {"op": "hello", "id": 1, "version": protocol.VERSION})
            follow = await _exchange(reader, writer, {"op": "follow", "id": 2, "job_id": job_id, "offset": 0})
            assert follow["ok"], follow
            log = b""
            while (event := await _frame(reader)).get("event") != "end":
                if event.get("event") == "log":
                    log += base64.b64decode(event["data"])
            return hello, log, event
        finally:
            writer.close()

    return asyncio.run(talk())


def try_release(port: int, key: bytes) -> str:
    """What a release gets: "released", "wait", or the RelayError's words."""

    async def ask() -> str:
        try:
            _, writer = await relaylink.open_relay("127.0.0.1", port, key, "release")
        except relaylink.RelayWait:
            return "wait"
        except relaylink.RelayError as exc:
            return str(exc)
        writer.close()
        return "released"

    return asyncio.run(ask())


def release(port: int, key: bytes) -> None:
    """Release the relay, as the head does once it has seen the end (the relay may take a poll to see it)."""
    assert wait_for(lambda: (said := try_release(port, key)) != "wait" and said, what="a release") == "released"


def test_the_head_follows_the_users_node_job_through_the_relay_and_release_ends_it(daemon, relays):
    job = {"command": ["sh", "-c", "echo hello from the node; id -un; sleep 1; echo done"]}
    relay = relays(job, node_socket(daemon))
    port, job_id = relay.published()

    hello, log, end = follow_through(port, KEY, job_id)
    assert hello["ok"] and hello["user"] == ALICE  # the node executor sees the relay's uid: the user's
    assert log == f"hello from the node\n{ALICE}\ndone\n".encode()
    assert end["job"]["status"] == "COMPLETED"
    with Client(daemon.socket) as client:
        record = client.get(job_id)
    assert record.owner == ALICE and record.status == "COMPLETED"

    assert relay.process.poll() is None  # it waits for the head's release (linger_s)
    release(port, KEY)
    assert relay.exit_status() == 0
    assert len(relay.comments()) == 1


def test_killing_the_relay_stops_the_node_job_through_its_hold(daemon, relays):
    relay = relays({"command": ["sleep", "300"]}, node_socket(daemon))
    port, job_id = relay.published()
    with Client(daemon.socket) as client:
        assert client.get(job_id).status == "RUNNING"
        assert try_release(port, KEY) == "wait"  # not while the job runs
        started = time.monotonic()
        relay.process.send_signal(signal.SIGTERM)
        assert relay.exit_status(timeout=5) == EXIT_SIGNALLED
        assert time.monotonic() - started < 3  # at once
        record = wait_for(lambda: (r := client.get(job_id)).finished and r, what="the node job to stop")
    assert record.status == "STOPPED"


def test_a_head_without_the_secret_gets_nothing_from_the_relay(daemon, relays):
    relay = relays({"command": ["sleep", "300"]}, node_socket(daemon))
    port, job_id = relay.published()
    wrong = relaylink.secret_key(relaylink.new_secret())
    for verb in ("pipe", "release"):
        with pytest.raises(relaylink.RelayError, match="refused us"):
            asyncio.run(relaylink.open_relay("127.0.0.1", port, wrong, verb))

    async def frames_straight_away() -> bytes:
        """An executor frame sent without the handshake: the relay closes, no frame comes back."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(protocol.encode({"op": "hello", "id": 1, "version": protocol.VERSION}))
        await writer.drain()
        said = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return said

    said = asyncio.run(frames_straight_away())
    assert said.startswith(b"JW-RELAY 1 ") and said.count(b"\n") == 1  # its greeting, then nothing
    assert relay.process.poll() is None
    with Client(daemon.socket) as client:
        assert client.get(job_id).status == "RUNNING"


def test_no_executor_at_the_node_socket_is_told_in_the_comment_and_exit_3(relays):
    relay = relays({"command": ["true"]}, "/nonexistent-jw/%n/executor.sock")
    assert relay.exit_status() == EXIT_ERROR
    assert relay.comments() == [
        f"jw1:error=no jupyter-worker executor on node {NODE} "
        f"(/nonexistent-jw/{NODE}/executor.sock: No such file or directory)"
    ]


def test_a_job_the_node_executor_refuses_is_told_in_the_comment_and_exit_3(daemon, relays):
    relay = relays({"command": ["true"], "limits": {"memory_mb": "100000G"}}, node_socket(daemon))
    assert relay.exit_status() == EXIT_ERROR
    (comment,) = relay.comments()
    assert comment.startswith("jw1:error=memory") and "100000" not in comment[:10], comment


def test_a_bad_step_request_is_told_in_the_comment_and_exit_3(relays):
    relay = relays({"command": ["true"], "holder": "someone-else"}, "/run/x.sock")
    assert relay.exit_status() == EXIT_ERROR
    assert relay.comments() == ["jw1:error=bad step request: job: holder is not for the node"]


def test_a_relay_the_head_never_releases_exits_0_after_lingering(daemon, relays):
    relay = relays({"command": ["true"]}, node_socket(daemon), linger_s=1)
    _, job_id = relay.published()
    assert relay.exit_status() == 0
    with Client(daemon.socket) as client:
        assert client.get(job_id).status == "COMPLETED"


def test_the_relay_holds_at_most_16_handshakes_at_once_the_oldest_giving_way(daemon, relays):
    relay = relays({"command": ["sleep", "300"]}, node_socket(daemon))
    port, _ = relay.published()

    async def crowd() -> tuple[bytes, bytes]:
        held = []
        for _ in range(MAX_CONNECTIONS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await reader.readline()).startswith(b"JW-RELAY 1 ")
            held.append((reader, writer))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        greeted = await asyncio.wait_for(reader.readline(), 3)  # a newcomer is greeted...
        turned_away = await asyncio.wait_for(held[0][0].read(), 3)  # ...and the oldest closed
        writer.close()
        for _, writer in held:
            writer.close()
        return turned_away, greeted

    turned_away, greeted = asyncio.run(crowd())
    assert turned_away == b""
    assert greeted.startswith(b"JW-RELAY 1 ")


@pytest.mark.executor_flags("--Policy.hold_grace_s=4")
def test_the_relay_holds_again_after_the_node_executor_restarts(daemon, relays):
    relay = relays({"command": ["sleep", "300"]}, node_socket(daemon))
    port, job_id = relay.published()
    daemon.stop()
    daemon.start()
    time.sleep(6)  # past the grace period: a relay that had not held again would have lost the job
    with Client(daemon.socket) as client:
        assert client.get(job_id).status == "RUNNING"
        hello = asyncio.run(_hello_only(port))
        assert hello["user"] == ALICE  # and it still pipes to the restarted executor
        relay.process.send_signal(signal.SIGTERM)
        assert relay.exit_status(timeout=5) == EXIT_SIGNALLED
        record = wait_for(lambda: (r := client.get(job_id)).finished and r, what="the node job to stop")
    assert record.status == "STOPPED"


async def _hello_only(port: int) -> dict:
    reader, writer = await relaylink.open_relay("127.0.0.1", port, KEY, "pipe")
    try:
        return await _exchange(reader, writer, {"op": "hello", "id": 1, "version": protocol.VERSION})
    finally:
        writer.close()
