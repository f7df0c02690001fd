"""The test cluster itself: jobs land on nodes and complete, the node executors answer in the nodes'
namespaces, and a job can publish words in its own Comment (the relay's channel to the head)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import time

import pytest

from jupyter_worker.client import Client, ExecutorUnavailable
from jupyter_worker.jobs import Job
from tests.conftest import made_folder
from tests.executor.conftest import as_user
from tests.slurm.cluster import SlurmCluster, _ns

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


def test_a_batch_job_publishes_a_port_in_its_comment_and_the_head_reaches_it_on_the_node(slurm_cluster):
    """The relay's pattern: listen on the node, `scontrol update ... Comment=` as the job's own
    user, and the head (this host) connects to NodeAddr:port through the bridge."""
    listener = (
        "import os, socket, subprocess\n"
        "s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen()\n"
        "comment = f'Comment=jw1:port={s.getsockname()[1]},job=abc'\n"
        "subprocess.run(['scontrol', 'update', 'JobId=' + os.environ['SLURM_JOB_ID'], comment], check=True)\n"
        "c, _ = s.accept(); c.sendall(('hello from ' + socket.gethostname()).encode()); c.close()\n"
    )
    job_id = slurm_cluster.sbatch("--wrap", f"python3 -c {shlex.quote(listener)}", user="jwtest-alice")
    try:
        fields = _wait_comment(slurm_cluster, job_id)
        assert fields["JobState"] == "RUNNING"
        port = re.fullmatch(r"jw1:port=(\d+),job=abc", fields["Comment"]).group(1)
        node = slurm_cluster.nodes[fields["NodeList"]]
        with socket.create_connection((node.address, int(port)), timeout=10) as connection:
            assert connection.recv(100) == f"hello from {node.name}".encode()
        assert slurm_cluster.wait_state(job_id, "COMPLETED", "FAILED")["JobState"] == "COMPLETED"
    finally:
        slurm_cluster.cancel(job_id)


def test_a_full_cluster_keeps_the_next_job_pending_with_a_reason(slurm_cluster):
    taken = slurm_cluster.fill("jwtest-bob")
    try:
        assert len({slurm_cluster.job(j)["NodeList"] for j in taken}) == 3
        waiting = slurm_cluster.sbatch("--wrap", "true", user="jwtest-alice")
        fields = slurm_cluster.wait_state(waiting, "PENDING")
        assert fields["Reason"] in ("Resources", "Priority", "None"), fields
        slurm_cluster.cancel(taken[0])
        assert slurm_cluster.wait_state(waiting, "COMPLETED")["NodeList"] == slurm_cluster.job(taken[0])["NodeList"]
    finally:
        slurm_cluster.cancel(*taken)


def test_a_running_job_survives_a_restart_of_slurmctld(slurm_cluster):
    job_id = slurm_cluster.sbatch("--wrap", "sleep 3", user="jwtest-alice")
    try:
        slurm_cluster.wait_state(job_id, "RUNNING")
        slurm_cluster.restart_slurmctld()
        assert slurm_cluster.job(job_id)["JobState"] in ("RUNNING", "COMPLETING", "COMPLETED")
        assert slurm_cluster.wait_state(job_id, "COMPLETED", "FAILED", timeout=60)["JobState"] == "COMPLETED"
    finally:
        slurm_cluster.cancel(job_id)


def test_a_node_executor_stops_and_starts_again(slurm_cluster):
    node = slurm_cluster.nodes["n3"]
    slurm_cluster.stop_node_executor("n3")
    try:
        assert not os.path.exists(node.socket)
        with pytest.raises(ExecutorUnavailable):
            Client(node.socket).capabilities()
    finally:
        slurm_cluster.start_node_executor("n3")
    assert Client(node.socket).capabilities()


def test_a_second_cluster_runs_beside_the_first_and_leaves_nothing_when_torn_down(slurm_cluster, users):
    with SlurmCluster() as other:
        assert other.network != slurm_cluster.network
        assert other.bridge != slurm_cluster.bridge
        assert other.controller_port != slurm_cluster.controller_port
        job_id = other.sbatch("--wrap", "sleep 300", user="jwtest-alice")
        other.wait_state(job_id, "RUNNING")
        holders = [n.holder.pid for n in other.nodes.values()]
        daemons = [other._munged.pid, other._slurmctld.pid]
        daemons += [p.pid for n in other.nodes.values() for p in (n.slurmd, n.executor)]
    # the running job was cancelled and everything else is gone
    assert not os.path.exists(other.folder)
    assert not os.path.exists(f"/sys/class/net/{other.bridge}")
    assert not [pid for pid in holders + daemons if os.path.exists(f"/proc/{pid}")]
    assert not [name for name in os.listdir("/sys/class/net") if name.startswith(other.bridge)]
    assert other.timings["down_s"] < 15
    # and the first cluster still works
    done = slurm_cluster.sbatch("--wrap", "true", user="jwtest-alice")
    assert slurm_cluster.wait_state(done, "COMPLETED", "FAILED")["JobState"] == "COMPLETED"


def _wait_comment(cluster, job_id: str) -> dict[str, str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        fields = cluster.job(job_id)
        if fields.get("Comment", "(null)") != "(null)":
            return fields
        time.sleep(0.05)
    raise AssertionError(f"no comment on job {job_id}: {fields}")
