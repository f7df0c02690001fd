"""The test cluster itself: jobs land on nodes and complete, the node executors answer in the nodes'
namespaces, and a job can publish words in its own Comment (the relay's channel to the head)."""

from __future__ import annotations

import os
import re

import pytest

from jupyter_worker.client import Client
from jupyter_worker.jobs import Job
from tests.conftest import made_folder
from tests.executor.conftest import as_user
from tests.slurm.cluster import _ns

pytestmark = pytest.mark.slurm


def test_a_batch_job_of_a_user_lands_on_a_node_and_completes(slurm_cluster):
    with made_folder("/tmp", owner="jwtest-alice") as folder:
        script = 'echo "$SLURMD_NODENAME $(hostname) $(id -un)"'
        job_id = slurm_cluster.sbatch(f"--output={folder}/out", "--wrap", script, user="jwtest-alice")
        fields = slurm_cluster.wait_state(job_id, "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")
        assert fields["JobState"] == "COMPLETED", fields
        with open(os.path.join(folder, "out")) as f:
            node, hostname, user = f.read().split()
    assert node in slurm_cluster.nodes
    assert fields["NodeList"] == node
    assert hostname == node  # each slurmd runs in a UTS namespace of its own
    assert user == "jwtest-alice"


def test_the_node_executors_answer_a_user_on_their_sockets(slurm_cluster):
    for name, node in slurm_cluster.nodes.items():
        assert node.socket == slurm_cluster.node_socket.replace("%n", name)
        policy = as_user("jwtest-alice", lambda s=node.socket: Client(s).capabilities())
        assert policy


def test_each_node_executor_runs_in_its_nodes_network_and_uts_namespaces(slurm_cluster):
    for node in slurm_cluster.nodes.values():
        for kind in ("net", "uts"):
            assert _ns(node.executor.pid, kind) == _ns(node.slurmd.pid, kind) == _ns(node.holder.pid, kind)
            assert _ns(node.executor.pid, kind) != _ns(os.getpid(), kind)


def test_a_job_on_a_node_executor_runs_in_the_nodes_network(slurm_cluster):
    node = slurm_cluster.nodes["n2"]

    def run() -> tuple[str, str]:
        with Client(node.socket) as client:
            request = {"command": ["sh", "-c", "ip -o -4 addr; hostname"], "network": "host"}
            handle = Job(client.run(request), node.socket)
        handle.wait()
        return handle.record.status, handle.logs()

    status, output = run()  # as root (the host network is an admin's grant; root may use it)
    assert status == "COMPLETED", output
    assert re.search(rf"eth0\s+inet {re.escape(node.address)}/28", output), output


def test_a_batch_job_sets_its_own_comment(slurm_cluster):
    """The relay publishes its port with scontrol update ... Comment= as the job's own user."""
    script = 'scontrol update JobId=$SLURM_JOB_ID Comment="jw1:port=4242,job=abc" && sleep 30'
    job_id = slurm_cluster.sbatch("--wrap", script, user="jwtest-alice")
    try:
        slurm_cluster.wait_state(job_id, "RUNNING")
        fields = _wait_comment(slurm_cluster, job_id)
        assert fields["Comment"] == "jw1:port=4242,job=abc"
        assert fields["JobState"] == "RUNNING"
    finally:
        slurm_cluster.cancel(job_id)


def _wait_comment(cluster, job_id: str) -> dict[str, str]:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        fields = cluster.job(job_id)
        if fields.get("Comment", "(null)") != "(null)":
            return fields
        time.sleep(0.05)
    raise AssertionError(f"no comment on job {job_id}: {fields}")
