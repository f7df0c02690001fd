"""Attacks on the Slurm backend by the cluster's users (jupyter_worker/executor/slurm/,
jupyter_worker/slurmstep.py, jupyter_worker/relaylink.py): a job's user controls what its node
job leaves in /work, its Slurm job's Comment and so which listener the head takes for its relay;
every other cluster user can reach a relay's port (it is in the Comment). Each test tries one attack
and finds it defended; a real cluster where Slurm is in play (tests/slurm/cluster.py), loopback where
the logic is the relay's own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_worker import protocol, relaylink, slurmstep
from jupyter_worker.executor.folders import JobFolder
from jupyter_worker.executor.slurm import backend as backend_module
from jupyter_worker.executor.slurm.backend import SlurmBackend, _Job
from jupyter_worker.executor.slurm.config import SlurmBackendConfig
from jupyter_worker.executor.supervision import Launch
from jupyter_worker.sandbox import LaunchSpec
from jupyter_worker.spec import JobRequest
from tests.conftest import is_root
from tests.executor.conftest import Daemon, started_daemon, wait_for
from tests.slurm.cluster import SlurmCluster, missing_programs
from tests.slurm.test_backend_smoke import call, ended


@pytest.fixture(scope="module")
def cluster(users) -> Iterator[SlurmCluster]:
    """This module's own cluster (down before the suite's residue check), skipped where it cannot run."""
    if not is_root() or missing_programs():
        pytest.skip("the Slurm test cluster needs root, Slurm and munge (tests/slurm/conftest.py)")
    with SlurmCluster() as made:
        yield made


@pytest.fixture(scope="module")
def head(cluster) -> Iterator[Daemon]:
    with started_daemon(cluster.head_config(poll_s=0.2, linger_s=60)) as daemon:
        yield daemon


@pytest.fixture(autouse=True)
def slurm_jobs_cancelled(request):
    yield
    if "cluster" in request.fixturenames:
        request.getfixturevalue("cluster").cancel_all(grace_s=5)


@pytest.mark.slurm
def test_a_work_folder_nested_past_pythons_recursion_limit_does_not_lose_the_job_or_keep_its_relay(cluster, head):
    # 600 folders deep is a path of 1200 bytes: the node makes it, the head walked it recursively
    script = 'p=$(printf "d/%.0s" $(seq 600)); mkdir -p "$p" && echo deep > "${p}f.txt" && echo z > z.txt && echo made'
    job = call(head, "run", {"command": ["sh", "-c", script], "backend": "slurm"})
    final = ended(head, job.id)
    assert (final["status"], final["reason"], final["exit_code"]) == ("COMPLETED", "exit", 0), final
    log = b"".join(c.data for c in call(head, "logs", job.id)[0])
    assert b"made" in log and b"could not be brought back" not in log, log
    assert {"d", "z.txt"} <= {e["name"] for e in call(head, "files", job.id)["entries"]}
    fields = cluster.wait_state(final["placement"]["slurm_job_id"], "COMPLETED", "FAILED", "CANCELLED")
    assert fields["JobState"] == "COMPLETED"  # the relay was released, not left to linger


def test_another_users_idle_connections_to_a_relays_port_do_not_lock_the_head_out():
    # the port is in the Slurm job's Comment, which every cluster user reads: an attacker without
    # the secret opens the relay's connection slots and sends nothing, again as each times out
    secret = bytes(range(32))
    step = slurmstep.StepRequest(JobRequest(command=["true"]), "/nonexistent.sock", secret, 0.0)
    relay = slurmstep.Relay(step, None, None, "slurm-1", None)  # type: ignore[arg-type]

    async def attack() -> str:
        server = await asyncio.start_server(relay.connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4 * slurmstep.MAX_CONNECTIONS)]
        await asyncio.sleep(0.2)
        try:
            await relaylink.open_relay("127.0.0.1", port, secret, "pipe", timeout=3)
            return "piped"
        except relaylink.RelayError as exc:
            return str(exc)  # "cannot reach the node's ...": the relay took the head's connection
        finally:
            for _, writer in idle:
                writer.close()
            server.close()

    assert "cannot reach the node's jupyter-worker executor" in asyncio.run(attack())


@pytest.mark.slurm
def test_a_node_executor_that_never_answers_does_not_make_a_stop_hang_forever(cluster, head):
    # the relay is alive and takes the head's connection, but what is behind it never answers (a
    # hung node executor; a listener of the job's user's own, which knows the secret): a Stop that
    # waits on it for ever is a Stop that nobody can make happen, an administrator's included
    job = call(head, "run", {"command": ["sh", "-c", "echo up; sleep 300"], "backend": "slurm"})
    wait_for(lambda: b"up" in b"".join(c.data for c in call(head, "logs", job.id)[0]), 30, "the job's output")
    record = call(head, "get", job.id).to_dict()
    executor = cluster.nodes[record["node"]].executor
    executor.send_signal(signal.SIGSTOP)
    try:
        call(head, "stop", job.id, grace_s=0)
        final = ended(head, job.id, timeout=90)
    finally:
        executor.send_signal(signal.SIGCONT)
    assert (final["status"], final["reason"]) == ("STOPPED", "stopped"), final


class _Events:
    """What the head's backend reports, kept."""

    def __init__(self):
        self.seen: list[tuple[str, Any]] = []

    def metrics(self, job_id, usage):
        self.seen.append(("metrics", usage))

    def exited(self, job_id, outcome):
        self.seen.append(("exited", outcome))

    def lost(self, job_id, why):
        self.seen.append(("lost", why))

    def waiting(self, job_id, why, details):
        self.seen.append(("waiting", why))

    def running(self, job_id, node, details):
        self.seen.append(("running", node))


FORGED = "\n2026-01-01 INFO root: policy changed by admin\x1b[2J" + "A" * (1 << 20)


async def _users_own_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes) -> None:
    """A listener of the job's user's own (they read the secret from their batch script and name
    it in the Comment): it passes the handshake, then refuses every request with a forged text."""
    accepted = await relaylink.accept(reader, writer, secret)
    assert accepted is not None
    writer.write(accepted.reply(secret, "ok"))
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            request = protocol.decode(await reader.readexactly(protocol.frame_length(await reader.readexactly(4))))
            refusal = {"ok": False, "id": request.get("id"), "error": {"reason": "bad_request", "message": FORGED}}
            if request.get("op") == "hello":
                refusal = {"ok": True, "id": request["id"], "version": protocol.VERSION}
            writer.write(protocol.encode(refusal))
            await writer.drain()
    writer.close()


def test_a_users_own_relay_cannot_write_lines_of_its_making_into_the_heads_log(tmp_path, caplog):
    secret_hex = relaylink.new_secret()
    secret = relaylink.secret_key(secret_hex)
    folder = JobFolder(str(tmp_path / "job"))
    launch = Launch("job-1", LaunchSpec(argv=["true"], uid=65534, gid=65534), folder, {})
    backend = SlurmBackend(SlurmBackendConfig(), log_cap=1 << 20)

    async def follow() -> None:
        server = await asyncio.start_server(lambda r, w: _users_own_relay(r, w, secret), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        os.makedirs(folder.work)
        state = {"secret": secret_hex, "slurm_job_id": "7", "node": "n1", "port": port, "node_job": "x"}
        job = _Job(backend, launch, _Events(), {**state, "released": False})
        backend._addresses["n1"] = "127.0.0.1"
        await backend._follow(job)  # refused: the head gives up for now, and says why in its log
        await backend._stop(job, 0)  # a stop refused too, and then scancel (not there: logged)
        server.close()

    with caplog.at_level(logging.INFO, logger=backend_module.__name__):
        asyncio.run(follow())
    said = [record.getMessage() for record in caplog.records]
    assert any("cannot follow its relay" in line for line in said), said
    for line in said:
        assert "\n" not in line and "\x1b" not in line and len(line) < 2000, line[:200]
