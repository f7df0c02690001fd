"""Held jobs end with their holder, however it ends; claims outlive a restart of the executor."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from jupyter_worker import protocol
from jupyter_worker.client import Client
from jupyter_worker.errors import WorkerError
from jupyter_worker.spec import JobRecord
from tests.executor.conftest import as_user, wait_for

ALICE, CAROL_THE_VIEWER = "jwtest-alice", "jwtest-carol"
SLEEP = ["sleep", "300"]
HOLD_SCRIPT = """
import asyncio, sys
from jupyter_worker.client import AsyncClient

async def main():
    hold = await AsyncClient(sys.argv[1]).hold(sys.argv[2])
    print("held", flush=True)
    await hold.lost()

asyncio.run(main())
"""


def hold(path: str, holder: str) -> socket.socket:
    """A held connection made of raw frames, as any client could send them."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    for request in ({"op": "hello", "id": 1, "version": protocol.VERSION}, {"op": "hold", "id": 2, "holder": holder}):
        sock.sendall(protocol.encode(request))
        header = sock.recv(4, socket.MSG_WAITALL)
        response = protocol.decode(sock.recv(protocol.frame_length(header), socket.MSG_WAITALL))
        assert response["ok"], response
    return sock


def status_of(daemon, job_id: str) -> JobRecord:
    with daemon.client() as client:
        return client.get(job_id)


def stopped(daemon, job_id: str) -> JobRecord | None:
    job = status_of(daemon, job_id)
    return job if job.status == "STOPPED" else None


@pytest.mark.executor_flags("--Policy.max_concurrent_jobs=3", "--Policy.max_jobs_per_user=0")
def test_a_holders_running_and_queued_jobs_are_stopped_when_it_is_killed_and_no_other_job_is(daemon):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, daemon.socket, "server-a"], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"held\n"
    other = hold(daemon.socket, "server-b")
    with daemon.client() as client:
        held = client.run({"command": SLEEP, "holder": "server-a"})
        unheld = client.run({"command": SLEEP})
        held_elsewhere = client.run({"command": SLEEP, "holder": "server-b"})
        queued_behind = client.run({"command": SLEEP, "holder": "server-a"})
    assert queued_behind.status == "QUEUED"
    wait_for(lambda: status_of(daemon, held.id).status == "RUNNING", what="the held job to run")
    holder.kill()
    holder.wait()
    for job in (held, queued_behind):
        ended = wait_for(lambda job=job: stopped(daemon, job.id), what="the held job to stop")
        assert ended.ending == "stopped by root's server ending"
    assert status_of(daemon, unheld.id).status == "RUNNING"
    assert status_of(daemon, held_elsewhere.id).status == "RUNNING"
    other.close()
    wait_for(lambda: stopped(daemon, held_elsewhere.id), what="the other holder's job to stop")
    assert status_of(daemon, unheld.id).status == "RUNNING"


def test_a_job_may_name_only_a_connected_holder_of_its_own_user(daemon):
    roots = hold(daemon.socket, "server-of-root")
    try:
        with daemon.client() as client:
            with pytest.raises(WorkerError, match="holder 'nobody-holds-this' is not connected") as refused:
                client.run({"command": SLEEP, "holder": "nobody-holds-this"})
            assert refused.value.reason == "conflict"

        def alice_names_roots_holder():
            with Client(daemon.socket) as client:
                try:
                    client.run({"command": SLEEP, "holder": "server-of-root"})
                except WorkerError as exc:
                    return exc.reason, str(exc)

        assert as_user(ALICE, alice_names_roots_holder) == (
            "conflict",
            "holder 'server-of-root' is not connected: the Jupyter server this job would end with has stopped",
        )
        with daemon.client() as client:
            assert client.list()[0] == []
            with pytest.raises(WorkerError, match="holder: up to 200"):
                client.run({"command": SLEEP, "holder": "two words"})
    finally:
        roots.close()


def test_viewers_may_not_hold_and_a_holder_needs_a_proper_name(daemon):
    def viewer_holds():
        hold(daemon.socket, "server-v")

    with pytest.raises(AssertionError, match="forbidden"):
        as_user(CAROL_THE_VIEWER, viewer_holds)
    with pytest.raises(AssertionError, match="invalid"):
        hold(daemon.socket, "")


@pytest.mark.executor_flags("--Policy.hold_grace_s=8")
def test_after_a_restart_a_holder_that_comes_back_within_the_grace_period_keeps_its_jobs(daemon):
    returning, gone = hold(daemon.socket, "returning"), hold(daemon.socket, "gone")
    with daemon.client() as client:
        kept = client.run({"command": SLEEP, "holder": "returning"})
        ended = client.run({"command": SLEEP, "holder": "gone"})
    wait_for(lambda: status_of(daemon, ended.id).status == "RUNNING", what="the jobs to run")
    daemon.stop()
    returning.close()
    gone.close()
    daemon.start()
    assert status_of(daemon, kept.id).status == "RUNNING"
    assert status_of(daemon, ended.id).status == "RUNNING"
    back = hold(daemon.socket, "returning")
    wait_for(lambda: stopped(daemon, ended.id), what="the grace period to end the job of the holder that is gone")
    assert status_of(daemon, kept.id).status == "RUNNING"
    back.close()
    wait_for(lambda: stopped(daemon, kept.id), what="the returned holder's job to stop with it")
