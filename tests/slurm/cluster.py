"""A real Slurm cluster on this one machine, for tests and the bench (../shared/reference/slurm_test_cluster.md).

munged on a private socket, slurmctld in the host's network, and three slurmd n1..n3, each in a
network + UTS namespace of its own (hostname n1..n3, an address on a private bridge), with a
jupyter-worker executor per node started in that node's namespaces (the node side of the Slurm
backend). Everything is unique per instance (folder, bridge, /28, ports, munge socket), so several
clusters can run at once; the tear-down leaves nothing behind.

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env)
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jupyter_worker.client import Client, ExecutorUnavailable
from jupyter_worker.executor.policy import group_exists
from tests.conftest import ADMINS, VIEWERS, free_port
from tests.executor.conftest import stop_everything

NODES = ("n1", "n2", "n3")
# documentation range (RFC 5737), never a private one; each cluster takes a free /28 of it
POOL = ipaddress.ip_network("203.0.113.128/25")
BRIDGE_PREFIX = "jwsl"
PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
DAEMONS = ("munged", "slurmctld", "slurmd")
ACTIVE_STATES = "PD,R,CG,S,CF,RQ,RS,RH,SO,ST,SI,RF,RD"
NODE_MEMORY_MB = 2000
# the checkout: the node executors import jupyter_worker from it, as the test daemons do
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ClusterError(RuntimeError):
    """The cluster could not be built (the message says what and shows the daemon's log)."""


def missing_programs() -> list[str]:
    """The Slurm and munge programs this machine lacks (the tests skip naming them)."""
    wanted = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "nsenter")
    return [name for name in wanted if shutil.which(name, path=PATH) is None]


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    kwargs.setdefault("timeout", 30)
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)  # noqa: PLW1510 - set above


def _wait(predicate: Callable[[], Any], timeout: float, what: str, why: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what}{why()}")
        time.sleep(0.02)


def _ns(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "\n  " + "\n  ".join(f.read().splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Node:
    """One compute node: the process holding its namespaces, its slurmd and its executor."""

    name: str
    address: str
    folder: str
    holder: subprocess.Popen | None = None
    slurmd: subprocess.Popen | None = None
    executor: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return os.path.join(self.folder, "executor.sock")

    @property
    def enter(self) -> list[str]:
        """The command prefix that runs a program in this node's network and UTS namespaces."""
        assert self.holder is not None
        pid = self.holder.pid
        return ["nsenter", f"--net=/proc/{pid}/ns/net", f"--uts=/proc/{pid}/ns/uts", "--"]

    def client(self, timeout: float | None = 60) -> Client:
        return Client(self.socket, timeout=timeout)


@dataclass
class SlurmCluster:
    """A Slurm cluster of three nodes with a jupyter-worker executor on each; a context manager."""

    nodes_names: tuple[str, ...] = NODES
    timings: dict[str, float] = field(default_factory=dict)
    folder: str = ""
    bridge: str = ""
    network: ipaddress.IPv4Network | None = None
    controller_port: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    _munged: subprocess.Popen | None = None
    _slurmctld: subprocess.Popen | None = None

    # -- what tests use -------------------------------------------------------------------------

    @property
    def conf(self) -> str:
        return os.path.join(self.folder, "etc", "slurm.conf")

    @property
    def munge_socket(self) -> str:
        return os.path.join(self.folder, "munge", "munge.socket")

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm's commands (a small one: sbatch exports it into the job)."""
        return {"PATH": PATH, "SLURM_CONF": self.conf, "LANG": "C.UTF-8"}

    @property
    def node_socket(self) -> str:
        """The node executors' socket, with %n for the node's name (SlurmBackend.node_socket)."""
        return os.path.join(self.folder, "nodes", "%n", "executor.sock")

    @property
    def bridge_address(self) -> str:
        assert self.network is not None
        return str(self.network.network_address + 1)

    def head_config(self, **settings: Any) -> list[str]:
        """Flags for a head executor with the Slurm backend on this cluster (more SlurmBackend
        settings as keywords: head_config(poll_s=0.2))."""
        chosen = {"enabled": True, "slurm_conf": self.conf, "node_socket": self.node_socket, **settings}
        return [f"--SlurmBackend.{name}={value}" for name, value in chosen.items()]

    def slurm(self, *argv: str, user: str | None = None, check: bool = True, timeout: float = 30) -> str:
        """Run a Slurm command (as root, or as user) against this cluster; its stdout."""
        identity: dict[str, Any] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            groups = os.getgrouplist(user, entry.pw_gid)
            identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups, "cwd": "/"}
        done = subprocess.run(
            list(argv), capture_output=True, text=True, env=self.env, timeout=timeout, check=False, **identity
        )
        if check and done.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} (as {user or 'root'}) failed: {done.stderr.strip()}")
        return done.stdout

    def sbatch(self, *argv: str, user: str) -> str:
        """Submit as user (sbatch's own flags, e.g. "--wrap", "true"); the Slurm job id."""
        return self.slurm("sbatch", "--parsable", "--output=/dev/null", "--chdir=/tmp", *argv, user=user).strip()

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (JobState, NodeList, Comment, ExitCode...)."""
        text = self.slurm("scontrol", "show", "job", "-o", job_id).strip()
        fields: dict[str, str] = {}
        for word in text.split():
            name, _, value = word.partition("=")
            fields[name] = value
        return fields

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the controller knows (squeue --json: finished ones too, for MinJobAge)."""
        return json.loads(self.slurm("squeue", "--json"))["jobs"]

    def wait_state(self, job_id: str, *states: str, timeout: float = 30) -> dict[str, str]:
        """Wait until the job is in one of states; its fields."""
        return _wait(
            lambda: (fields := self.job(job_id)).get("JobState") in states and fields,
            timeout,
            f"Slurm job {job_id} to be {'/'.join(states)}",
            lambda: f" (it is {self.job(job_id).get('JobState')})",
        )

    def fill(self, user: str, nodes: int | None = None) -> list[str]:
        """Take whole nodes (all by default) with long sleeps as user, so the next job waits; the
        Slurm job ids, once all run. Cancel them with cancel()."""
        count = len(self.nodes) if nodes is None else nodes
        ids: list[str] = []
        try:
            for _ in range(count):
                ids.append(self.sbatch("--exclusive", "--nodes=1", "--wrap", "sleep 3600", user=user))
            for job_id in ids:
                self.wait_state(job_id, "RUNNING", timeout=60)
        except BaseException:
            self.cancel(*ids)  # never leave a full cluster behind for the next test
            raise
        return ids

    def cancel(self, *job_ids: str, wait: bool = True) -> None:
        """scancel as root; then wait until they are no longer active."""
        if not job_ids:
            return
        self.slurm("scancel", *job_ids, check=False)
        if wait:
            _wait(lambda: not self._active(job_ids), 30, f"jobs {', '.join(job_ids)} to end")

    def cancel_all(self, grace_s: float = 0) -> list[str]:
        """Cancel every job still pending or running after grace_s (time to end by themselves,
        e.g. a relay the head is releasing) and wait for them to end; the ids cancelled."""
        deadline = time.monotonic() + grace_s
        while (active := tuple(self._active())) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.cancel(*active)
        return list(active)

    def stop_node_executor(self, name: str) -> None:
        """Stop the node's executor (and every job on it): the node has no jupyter-worker now."""
        node = self.nodes[name]
        if node.executor is None:
            return
        with contextlib.suppress(ExecutorUnavailable, OSError):
            stop_everything(node.client(timeout=10))
        _terminate(node.executor)
        node.executor = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(node.socket)

    def start_node_executor(self, name: str) -> None:
        """(Re)start the node's executor in the node's namespaces; returns once it answers."""
        node = self.nodes[name]
        if node.executor is not None and node.executor.poll() is None:
            return
        command = [
            *node.enter,
            sys.executable,
            "-m",
            "jupyter_worker.cli",
            "executor",
            "--socket",
            node.socket,
            "--state-dir",
            os.path.join(node.folder, "state"),
        ]
        # as tests/executor/conftest.py's Daemon: the role groups where the users fixture made them
        for flag, group in (("--admin-group", ADMINS), ("--viewer-group", VIEWERS)):
            if group_exists(group):
                command += [flag, group]
        log = open(os.path.join(self.folder, "log", f"executor-{name}.log"), "ab")
        with log:
            node.executor = subprocess.Popen(command, stdout=log, stderr=log, cwd=PROJECT, env=_executor_env())

        def answers() -> bool:
            if node.executor is not None and node.executor.poll() is not None:
                raise ClusterError(f"the executor of {name} exited{_tail(log.name)}")
            try:
                with node.client(timeout=5) as client:
                    client.capabilities()
                return True
            except ExecutorUnavailable:
                return False

        _wait(answers, 30, f"the executor of {name}", lambda: _tail(log.name))

    def restart_slurmctld(self) -> None:
        """Stop slurmctld (SIGTERM: it saves its state) and start it again; returns when it is up
        and every node is back (jobs keep running on the nodes meanwhile)."""
        if self._slurmctld is not None:
            _terminate(self._slurmctld)
            self._slurmctld = None
        self._start_slurmctld()
        self._wait_nodes(("idle", "mix", "alloc", "comp"))

    def processes_in_nodes(self) -> list[int]:
        """Pids of everything in the nodes' network namespaces but their holders."""
        wanted = {_ns(n.holder.pid, "net"): n.holder.pid for n in self.nodes.values() if n.holder}
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if _ns(int(pid), "net") in wanted and int(pid) not in wanted.values():
                    found.append(int(pid))
        return found

    # -- building ---------------------------------------------------------------------------------

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        began = time.monotonic()
        self.folder = tempfile.mkdtemp(prefix="jupyter-worker-slurm-")
        os.chmod(self.folder, 0o755)  # users read etc/slurm.conf and reach the munge socket
        self._make_folders()
        self._make_network()
        self.timings["network_s"] = time.monotonic() - began
        mark = time.monotonic()
        self._start_munged()
        self.timings["munge_s"] = time.monotonic() - mark
        mark = time.monotonic()
        self._write_conf()
        self._start_slurmctld()
        for node in self.nodes.values():
            self._start_slurmd(node)
        self._wait_nodes(("idle",))
        self.timings["slurm_s"] = time.monotonic() - mark
        mark = time.monotonic()
        for name in self.nodes:
            self.start_node_executor(name)
        self.timings["executors_s"] = time.monotonic() - mark
        self.timings["up_s"] = time.monotonic() - began

    def _make_folders(self) -> None:
        slurm = pwd.getpwnam("slurm")
        munge = pwd.getpwnam("munge")
        for name, owner, mode in (
            ("etc", None, 0o755),
            ("state", slurm, 0o700),
            ("log", slurm, 0o755),
            ("run", slurm, 0o755),
            ("spool", None, 0o755),
            ("nodes", None, 0o755),
            ("munge", munge, 0o755),
        ):
            path = os.path.join(self.folder, name)
            os.mkdir(path, mode)
            os.chmod(path, mode)
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        for name in self.nodes_names:
            os.mkdir(os.path.join(self.folder, "spool", name), 0o755)
            os.mkdir(os.path.join(self.folder, "nodes", name), 0o755)
            os.chmod(os.path.join(self.folder, "nodes", name), 0o755)

    def _make_network(self) -> None:
        """A bridge with a free /28 of POOL, chosen and made under a machine-wide lock (other
        clusters may be choosing at the same moment), and a namespace pair per node."""
        with _network_lock():
            self.network = _free_subnet()
            while True:
                name = BRIDGE_PREFIX + secrets.token_hex(2)
                if not os.path.exists(f"/sys/class/net/{name}"):
                    break
            _run(["ip", "link", "add", name, "type", "bridge"])
            self.bridge = name
            _run(["ip", "addr", "add", f"{self.bridge_address}/{self.network.prefixlen}", "dev", name])
            _run(["ip", "link", "set", name, "up"])
        for index, node_name in enumerate(self.nodes_names, start=2):
            address = str(self.network.network_address + index)
            node = Node(node_name, address, os.path.join(self.folder, "nodes", node_name))
            self.nodes[node_name] = node
            # the holder: a sleep in fresh network + UTS namespaces with the node's hostname; the
            # namespaces (and the veth in it) vanish when the last process in them ends
            node.holder = subprocess.Popen(
                ["unshare", "--net", "--uts", "--", "sh", "-c", f"hostname {node_name} && exec sleep infinity"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
            )
            holder = node.holder
            _wait(lambda h=holder: _comm(h.pid) == "sleep" or h.poll() is not None, 10, f"{node_name}'s namespaces")
            if holder.poll() is not None:
                raise ClusterError(f"could not make {node_name}'s namespaces (unshare exited {holder.returncode})")
            outside = f"{name}{node_name}"
            _run(["ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", str(holder.pid)])
            _run(["ip", "link", "set", outside, "master", name, "up"])
            inside = (
                f"ip addr add {address}/{self.network.prefixlen} dev eth0 && ip link set eth0 up && ip link set lo up"
            )
            _run([*node.enter, "sh", "-c", inside])

    def _start_munged(self) -> None:
        folder = os.path.join(self.folder, "munge")
        munge = pwd.getpwnam("munge")
        key = os.path.join(folder, "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "wb") as f:
            f.write(secrets.token_bytes(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        log = os.path.join(folder, "munged.log")
        self._munged = subprocess.Popen(
            [
                "munged",
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={folder}/munged.pid",
                f"--log-file={log}",
                f"--seed-file={folder}/munged.seed",
                "--num-threads=4",
            ],
            user=munge.pw_uid,
            group=munge.pw_gid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )

        def works() -> bool:
            if self._munged is not None and self._munged.poll() is not None:
                raise ClusterError(f"munged exited{_tail(log)}")
            if not os.path.exists(self.munge_socket):
                return False
            credential = _run(["munge", "-n", f"--socket={self.munge_socket}"], check=False)
            decoded = _run(["unmunge", f"--socket={self.munge_socket}"], input=credential.stdout, check=False)
            return decoded.returncode == 0

        _wait(works, 10, "munged", lambda: _tail(log))

    def _write_conf(self) -> None:
        assert self.network is not None
        d = self.folder
        controller = socket.gethostname().split(".")[0]
        lines = [
            f"ClusterName=jw{os.path.basename(d)[-6:].lower().replace('_', 'x')}",
            f"SlurmctldHost={controller}({self.bridge_address})",
            f"SlurmctldPort={self.controller_port}",
            "SlurmdPort=6818",  # each slurmd has a network of its own
            "SlurmUser=slurm",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool/%n",
            f"SlurmctldPidFile={d}/run/slurmctld.pid",
            f"SlurmdPidFile={d}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={d}/log/slurmctld.log",
            f"SlurmdLogFile={d}/log/slurmd-%n.log",
            "MailProg=/bin/true",
            "MpiDefault=none",
            # never Slurm's cgroup plugins: the host's cgroups are the node executors' business
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=100",
            # the nodes share this machine's CPUs and memory: the configured figures count
            "SlurmdParameters=config_overrides",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={d}/log/jobcomp.txt",
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "MinJobAge=300",
            "KillWait=5",
            "Waittime=0",
        ]
        for node in self.nodes.values():
            lines.append(
                f"NodeName={node.name} NodeAddr={node.address} Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 "
                f"RealMemory={NODE_MEMORY_MB} State=UNKNOWN"
            )
        lines.append(f"PartitionName=debug Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP")
        # a partition per node (only-n1...): a test places a job on the node it means
        lines += [f"PartitionName=only-{name} Nodes={name} MaxTime=INFINITE State=UP" for name in self.nodes]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.conf, 0o644)

    def _start_slurmctld(self) -> None:
        log = os.path.join(self.folder, "log", "slurmctld.log")
        for _ in range(5):  # the port is free when chosen; another process may take it meanwhile
            if not self.controller_port:
                self.controller_port = free_port()
                self._write_conf()
            self._slurmctld = subprocess.Popen(
                ["slurmctld", "-D", "-f", self.conf],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
            )
            try:
                _wait(self._controller_up, 30, "slurmctld", lambda: _tail(log))
                return
            except ClusterError:
                if "Address already in use" not in _tail(log, 5):
                    raise
                _terminate(self._slurmctld)
                self.controller_port = 0
        raise ClusterError(f"slurmctld found no free port{_tail(log)}")

    def _controller_up(self) -> bool:
        if self._slurmctld is not None and self._slurmctld.poll() is not None:
            raise ClusterError(f"slurmctld exited{_tail(os.path.join(self.folder, 'log', 'slurmctld.log'))}")
        return "is UP" in self.slurm("scontrol", "ping", check=False)

    def _start_slurmd(self, node: Node) -> None:
        node.slurmd = subprocess.Popen(
            [*node.enter, "slurmd", "-D", "-f", self.conf, "-N", node.name],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )

    def _wait_nodes(self, states: tuple[str, ...]) -> None:
        def ready() -> bool:
            for node in self.nodes.values():
                if node.slurmd is not None and node.slurmd.poll() is not None:
                    log = os.path.join(self.folder, "log", f"slurmd-{node.name}.log")
                    raise ClusterError(f"slurmd of {node.name} exited{_tail(log)}")
            shown = self.slurm("sinfo", "-h", "-N", "-o", "%N %t", check=False).split()
            seen = dict(zip(shown[::2], shown[1::2], strict=False))
            return all(seen.get(name, "").rstrip("*~#!%$@^-") in states for name in self.nodes)

        _wait(ready, 30, f"every node to be {'/'.join(states)}", lambda: "\n" + self.slurm("sinfo", check=False))

    def _active(self, job_ids: tuple[str, ...] = ()) -> list[str]:
        argv = ["squeue", "-h", "-t", ACTIVE_STATES, "-o", "%A"]
        if job_ids:
            argv.append("--jobs=" + ",".join(job_ids))
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=30, check=False)
        return done.stdout.split()

    # -- tearing down -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Everything away, in order, each step even if an earlier one failed: jobs, node executors
        (their jobs first), slurmd, slurmctld, munged, stray processes in the nodes, namespaces,
        the bridge, the folder."""
        began = time.monotonic()
        steps = [
            self._cancel_all,
            *(lambda n=name: self.stop_node_executor(n) for name in self.nodes),
            *(lambda n=node: _terminate(n.slurmd) for node in self.nodes.values()),
            lambda: _terminate(self._slurmctld),
            lambda: _terminate(self._munged),
            self._kill_strays,
            *(lambda n=node: _terminate(n.holder) for node in self.nodes.values()),
            self._remove_bridge,
            lambda: shutil.rmtree(self.folder) if self.folder else None,
        ]
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep going: the rest must still be removed
                errors.append(f"{exc}")
        self.timings["down_s"] = time.monotonic() - began
        if errors:
            raise ClusterError("tear-down: " + "; ".join(errors))

    def _cancel_all(self) -> None:
        if self._slurmctld is None or self._slurmctld.poll() is not None:
            return
        self.cancel_all()

    def _kill_strays(self) -> None:
        """A job step's slurmstepd or a job a node executor started and lost: none may outlive us."""
        strays = self.processes_in_nodes()
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait(lambda: not self.processes_in_nodes(), 10, "the nodes' processes to end")
        if strays:
            raise ClusterError(f"processes were left in the nodes and killed: {strays}")

    def _remove_bridge(self) -> None:
        if self.bridge and os.path.exists(f"/sys/class/net/{self.bridge}"):
            _run(["ip", "link", "del", self.bridge])
        for node in self.nodes.values():  # gone with their namespaces; wait for the kernel
            _wait(lambda n=node: not os.path.exists(f"/sys/class/net/{self.bridge}{n.name}"), 10, "veths to go")


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _executor_env() -> dict[str, str]:
    """The node executor's environment: the test process's, without its Slurm or worker settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JUPYTER_WORKER_"))}


def _terminate(process: subprocess.Popen | None, timeout: float = 20) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise ClusterError(f"{process.args[0]} (pid {process.pid}) ignored SIGTERM and was killed") from None


@contextlib.contextmanager
def _network_lock() -> Iterator[None]:
    """Clusters of other runs on this machine choose their /28 one at a time (a lock on /tmp
    itself: no lock file is left behind)."""
    fd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _free_subnet() -> ipaddress.IPv4Network:
    """The first /28 of POOL that no address or route of this host's network overlaps."""
    taken: list[ipaddress.IPv4Network] = []
    for line in _run(["ip", "-o", "-4", "addr"]).stdout.splitlines():
        words = line.split()
        if "inet" in words:
            taken.append(ipaddress.ip_interface(words[words.index("inet") + 1]).network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
        words = line.split()
        target = words[1] if words and words[0] in ("local", "broadcast", "unicast") and len(words) > 1 else None
        target = target or (words[0] if words else "default")
        with contextlib.suppress(ValueError):
            if target != "default":
                taken.append(ipaddress.ip_network(target, strict=False))
    for candidate in POOL.subnets(new_prefix=28):
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise ClusterError(f"no free /28 in {POOL} (all taken by other clusters?)")
