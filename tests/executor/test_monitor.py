"""The monitor (one process following every running job of a spawner) can be killed with nothing lost.

A kill -9 of the monitor, alone or with the executor, loses no job, no byte of output and no
outcome: the spawner keeps a copy of every job's descriptors and gives them to a new monitor. Only
when the monitor and its keeper are both gone is a job lost (recorded so, and killed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from jupyter_worker.sandbox.keeper import MAX_RESTARTS
from tests.executor.conftest import wait_for

# every job of a test runs at once (by default a user runs 2)
SLOTS = ("--Policy.max_concurrent_jobs=8", "--Policy.max_jobs_per_user=0")
pytestmark = pytest.mark.executor_flags(*SLOTS)

WRITER = "for i in $(seq 1 3000); do echo $i; done; sleep 3; for i in $(seq 3001 6000); do echo $i; done"
IGNORES_TERM = "trap '' TERM; echo ready; sleep 300 & wait"


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _session(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[3])


def _spawner(daemon) -> int:
    """The daemon's spawner: its one child whose command line runs the spawner."""
    for pid in _children(daemon.process.pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"jupyter_worker.sandbox.spawner" in f.read():
                return pid
    raise AssertionError("the executor has no spawner")


def _monitors(spawner: int) -> list[int]:
    return [pid for pid in _children(spawner) if _comm(pid) == "jw-monitor"]


def _monitor(spawner: int) -> int:
    found = _monitors(spawner)
    assert len(found) == 1, f"the spawner has one monitor, not {found}"
    return found[0]


def _in_session(session: int, comm: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if _comm(int(pid)) == comm and _session(int(pid)) == session:
                found.append(int(pid))
        except OSError:
            pass
    return found


def _running(cmdline: bytes) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == cmdline:
                    return True
        except OSError:
            pass
    return False


def _holding(path: str, comm: str) -> list[int]:
    """The processes named comm that have path open."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if _comm(int(pid)) != comm:
            continue
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(int(pid))
        except OSError:
            pass
    return found


def _records(client, job_id: str) -> list[bytes]:
    records, offset = [], 0
    while True:
        chunks, offset, _ = client.logs(job_id, offset=offset, max_bytes=1 << 20)
        if not chunks:
            return records
        records += [c.data for c in chunks if c.stream == "stdout"]


def _repeats_in(records: list[bytes], expected: bytes) -> int:
    """How many records of the log say again what earlier ones said (a monitor killed after it
    wrote a record but before it took those bytes from the pipe: its successor writes them again);
    asserts that the log is expected with nothing missing, reordered or garbled."""
    position, starts, repeats = 0, [], 0
    for record in records:
        if expected.startswith(record, position):
            starts = [*starts[-16:], position]
            position += len(record)
            continue
        again = [start for start in starts if expected.startswith(record, start)]
        assert again, f"a record at {position} of the expected output is neither next nor a repeat"
        repeats += 1
        position = again[-1] + len(record)
    assert position == len(expected), f"{len(expected) - position} bytes of output are missing"
    return repeats


def _ended(client, job_id: str):
    return wait_for(lambda: (j := client.get(job_id)).status not in ("QUEUED", "RUNNING") and j, what="the end")


def _log(client, job_id: str) -> bytes:
    data, offset = b"", 0
    while True:
        chunks, offset, _ = client.logs(job_id, offset=offset, max_bytes=1 << 20)
        if not chunks:
            return data
        data += b"".join(c.data for c in chunks if c.stream == "stdout")


def test_a_kill_of_the_monitor_loses_no_job_no_output_and_no_outcome(daemon):
    with daemon.client() as client:
        writer = client.run({"command": ["sh", "-c", WRITER]}).id
        sleeper = client.run({"command": ["sleep", "300"]}).id
        timed = client.run({"command": ["sleep", "300"], "limits": {"timeout_s": 5}}).id
        failing = client.run({"command": ["sh", "-c", "sleep 2; exit 3"]}).id
        stubborn = client.run({"command": ["sh", "-c", IGNORES_TERM]}).id
        for job_id in (writer, sleeper, timed, failing, stubborn):
            wait_for(lambda job_id=job_id: client.get(job_id).status == "RUNNING", what="the jobs to run")
        wait_for(lambda: b"ready" in _log(client, stubborn), what="the trap")
        client.stop(stubborn, grace_s=3)  # in its grace period when the monitor dies
        spawner = _spawner(daemon)
        first = _monitor(spawner)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: _monitors(spawner) not in ([], [first]), what="a new monitor")
        assert (_ended(client, failing).status, _ended(client, failing).exit_code) == ("FAILED", 3)
        assert _ended(client, writer).status == "COMPLETED"
        assert _repeats_in(_records(client, writer), b"".join(b"%d\n" % i for i in range(1, 6001))) <= 1
        assert (_ended(client, timed).status, _ended(client, timed).reason) == ("FAILED", "timeout")
        assert _ended(client, stubborn).status == "STOPPED"
        assert client.get(sleeper).status == "RUNNING"
        client.stop(sleeper, grace_s=0)
        assert _ended(client, sleeper).status == "STOPPED"


def test_a_kill_of_the_executor_and_the_monitor_together_loses_no_job(daemon):
    with daemon.client() as client:
        sleeper = client.run({"command": ["sh", "-c", "echo before; sleep 300"]}).id
        wait_for(lambda: _log(client, sleeper), what="output")
    spawner = _spawner(daemon)
    monitor = _monitor(spawner)
    daemon.kill_hard()
    os.kill(monitor, signal.SIGKILL)
    log = os.path.join(daemon.state_dir, "jobs", sleeper, "log")
    wait_for(lambda: _holding(log, "jw-monitor") not in ([], [monitor]), what="a new monitor")
    daemon.start()
    with daemon.client() as client:
        assert client.get(sleeper).status == "RUNNING"
        client.stop(sleeper, grace_s=0)
        final = _ended(client, sleeper)
        assert (final.status, _log(client, sleeper)) == ("STOPPED", b"before\n")


def test_a_job_whose_monitor_and_its_keeper_both_vanished_is_recorded_as_lost(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["sleep", "42420"]})
        wait_for(lambda: client.get(job.id).status == "RUNNING", what="the job")
    spawner = _spawner(daemon)
    monitor = _monitor(spawner)
    daemon.kill_hard()
    keeper = wait_for(lambda: _in_session(spawner, "jw-keeper"), what="the keeper")
    for pid in [*keeper, monitor]:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    daemon.start()
    with daemon.client() as client:
        lost = client.get(job.id)
        assert (lost.status, lost.reason) == ("FAILED", "lost")
    wait_for(lambda: not _running(b"sleep\x0042420\x00"), what="the orphaned job to be killed")


def test_a_monitor_that_keeps_dying_gives_its_jobs_up_as_lost_rather_than_unfollowed(daemon):
    with daemon.client() as client:
        job = client.run({"command": ["sleep", "42421"]})
        wait_for(lambda: client.get(job.id).status == "RUNNING", what="the job")
        spawner = _spawner(daemon)
        for _ in range(MAX_RESTARTS):
            wait_for(lambda: _monitors(spawner), what="a monitor")
            killed = _monitor(spawner)
            os.kill(killed, signal.SIGKILL)
            wait_for(lambda killed=killed: killed not in _monitors(spawner), what="its end")
        lost = _ended(client, job.id)
        assert (lost.status, lost.reason) == ("FAILED", "lost")
        assert not _running(b"sleep\x0042421\x00")
        again = client.run({"command": ["true"]})
        assert _ended(client, again.id).status == "COMPLETED"


@pytest.mark.executor_flags(*SLOTS, "--Policy.log_max_bytes=1000000")
def test_a_job_flooding_its_output_does_not_hold_up_the_other_jobs_the_monitor_follows(daemon):
    with daemon.client() as client:
        flood = client.run({"command": ["sh", "-c", "yes flooding"]}).id
        sleeper = client.run({"command": ["sleep", "300"]}).id
        wait_for(lambda: client.get(sleeper).status == "RUNNING", what="the sleeper")
        wait_for(lambda: client.get(flood).metrics.get("cpu_seconds", 0) > 1, what="the flood", timeout=60)
        short = client.run({"command": ["sh", "-c", "echo done; exit 4"]}).id
        ended = wait_for(lambda: (j := client.get(short)).status == "FAILED" and j, what="the short job")
        assert (ended.exit_code, _log(client, short)) == (4, b"done\n")
        client.stop(sleeper, grace_s=0)
        assert _ended(client, sleeper).status == "STOPPED"
        client.stop(flood, grace_s=0)
        assert _ended(client, flood).status == "STOPPED"


def test_a_monitor_killed_in_the_middle_of_copying_output_loses_no_byte_of_it(daemon):
    """strace kills the monitor as it starts its third write(2): a log record, in the middle of
    the first piece of the job's output it copies (1 MiB, written as records of 256 KiB)."""
    lines = 3_000_000
    with daemon.client() as client:
        job = client.run({"command": ["sh", "-c", f"sleep 2; seq 1 {lines}"]}).id
        wait_for(lambda: client.get(job).status == "RUNNING", what="the job")
        monitor = _monitor(_spawner(daemon))
        tracer = subprocess.Popen(
            ["strace", "-qq", "-p", str(monitor), "-e", "trace=write", "-e", "inject=write:signal=KILL:when=3"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert _ended(client, job).status == "COMPLETED"
        finally:
            tracer.wait(timeout=30)
        assert not os.path.exists(f"/proc/{monitor}"), "the monitor was killed as it wrote"
        expected = b"".join(b"%d\n" % i for i in range(1, lines + 1))
        # no byte lost (checked by _repeats_in); the record cut short is written again only when an
        # earlier record of the same copy made it to the log first, which depends on how much the
        # pipe held at that copy
        assert _repeats_in(_records(client, job), expected) <= 1


HOLD = """
import socket, time
s = socket.socket(socket.AF_UNIX); s.bind('/shared/s'); s.listen()
c, _ = s.accept(); socket.recv_fds(c, 10, 4)
print('holding', flush=True); time.sleep(300)
"""
HAND = """
import socket, time
for _ in range(200):
    try:
        s = socket.socket(socket.AF_UNIX); s.connect('/shared/s'); break
    except OSError: time.sleep(0.05)
socket.send_fds(s, [b'x'], [1]); time.sleep(0.5)
"""


def test_a_job_that_hands_its_output_pipe_to_another_process_and_ends_holds_up_no_other_job(daemon):
    """The monitor takes what an ended job's pipes hold and does not wait for their end: a write end
    the job handed out (here to a job of the same user, through a shared folder) keeps them open."""
    shared = tempfile.mkdtemp(prefix="jupyter-worker-test-shared-")
    os.chmod(shared, 0o777)
    mount = [{"source": shared, "destination": "/shared", "rw": True}]
    try:
        with daemon.client() as client:
            holder = client.run({"command": ["python3", "-c", HOLD], "mounts": mount}).id
            hander = client.run({"command": ["python3", "-c", HAND], "mounts": mount}).id
            wait_for(lambda: b"holding" in _log(client, holder), what="the handed pipe", timeout=60)
            assert _ended(client, hander).status == "COMPLETED"
            other = client.run({"command": ["sh", "-c", "sleep 1; exit 5"]}).id
            assert (_ended(client, other).status, client.get(other).exit_code) == ("FAILED", 5)
            client.stop(holder, grace_s=0)
            assert _ended(client, holder).status == "STOPPED"
    finally:
        shutil.rmtree(shared)
