"""Fair access, tried as a hostile local user against a real executor: holding many connections,
never saying hello, sending half a frame, flooding the queue, and following quiet jobs in bulk.

alice (jwtest-alice) is the attacker; bob, root and an admin must still be served.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import time

import pytest

from jupyter_worker import protocol
from jupyter_worker.client import Client
from jupyter_worker.errors import ErrorReason, WorkerError
from tests.conftest import ADMINS
from tests.executor.conftest import SLEEP, Daemon, as_user, ask_as, run_as, started_daemon, wait_for

CAPS = (
    "--Policy.max_connections=60",
    "--Policy.reserved_connections=8",
    "--Policy.max_connections_per_user=20",
    "--Policy.hello_timeout_s=1",
    "--Policy.frame_timeout_s=1",
)

# Run as alice: open N connections, each saying hello (or not, or half a frame), report how each
# was answered, then keep them all until stdin closes.
HOG = """
import json, socket, sys
from jupyter_worker import protocol

path, count, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
held, answers = [], []
for number in range(count):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    held.append(sock)
    hello = protocol.encode({"op": "hello", "id": number, "version": protocol.VERSION})
    if how == "silent":
        continue
    sock.settimeout(10)
    try:
        sock.sendall(hello)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused (busy) and closed before our hello: the refusal waits to be read, as client.py reads it
    header = sock.recv(4, socket.MSG_WAITALL)
    answer = protocol.decode(sock.recv(protocol.frame_length(header), socket.MSG_WAITALL))
    answers.append(answer.get("error", {}).get("reason", "ok"))
    if how == "half" and "error" not in answer:
        sock.sendall(protocol.encode({"op": "list", "id": 0})[:3])
print(json.dumps(answers), flush=True)
sys.stdin.read()
"""


def hog(daemon: Daemon, user: str, count: int, how: str = "hello") -> tuple[subprocess.Popen, list[str]]:
    """A process of user's holding count connections to the executor; how each was answered."""
    entry = pwd.getpwnam(user)
    process = subprocess.Popen(
        [sys.executable, "-c", HOG, daemon.socket, str(count), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=os.getgrouplist(user, entry.pw_gid),
        cwd="/",
        text=True,
    )
    return process, json.loads(process.stdout.readline())


def release(process: subprocess.Popen) -> None:
    process.stdin.close()
    process.wait(timeout=10)


def served(daemon: Daemon, user: str | None) -> str:
    """One request as the user (root: None), within 5 s; 'ok' or the refusal's reason."""
    start = time.monotonic()

    def ask() -> str:
        try:
            Client(daemon.socket, timeout=5).list()
            return "ok"
        except WorkerError as exc:
            return exc.reason.value

    answer = ask() if user is None else as_user(user, ask)
    assert time.monotonic() - start < 5
    return answer


@pytest.fixture
def executor(request, users):
    """A real executor of the test's own, with @pytest.mark.executor_flags(...) (as tests/executor's daemon)."""
    marker = request.node.get_closest_marker("executor_flags")
    with started_daemon(list(marker.args) if marker else []) as running:
        yield running


@pytest.fixture
def admin(users):
    """carol, made a member of the admin group for the test."""
    subprocess.run(["usermod", "-aG", ADMINS, "jwtest-carol"], check=True, capture_output=True)
    yield "jwtest-carol"
    subprocess.run(["gpasswd", "-d", "jwtest-carol", ADMINS], check=True, capture_output=True)


@pytest.mark.executor_flags(*CAPS)
def test_one_user_holding_many_idle_connections_fails_to_lock_out_bob_root_or_an_admin(executor, admin):
    alice, answers = hog(executor, "jwtest-alice", 40)
    try:
        assert answers[:20] == ["ok"] * 20 and answers[20:] == ["busy"] * 20  # her own cap, not everyone's
        assert served(executor, "jwtest-bob") == "ok"
        assert served(executor, None) == "ok"
        assert served(executor, admin) == "ok"
    finally:
        release(alice)


@pytest.mark.executor_flags(*CAPS)
def test_users_together_filling_the_executor_fail_to_take_roots_and_the_admins_reserve(executor, admin):
    alice, _ = hog(executor, "jwtest-alice", 20)
    bob, bobs = hog(executor, "jwtest-bob", 20)
    try:
        assert bobs == ["ok"] * 20
        # 40 of 60 are taken: 12 more for ordinary users, then only the reserve of 8 is left
        filler, fills = hog(executor, "nobody", 20)
        try:
            assert fills.count("ok") == 12 and fills.count("busy") == 8
            with pytest.raises(WorkerError) as refused:
                as_user("jwtest-bob", lambda: Client(executor.socket, timeout=5).list())
            assert refused.value.reason is ErrorReason.BUSY and "Policy." in refused.value.message
            assert served(executor, None) == "ok"
            carol_then = served(executor, admin)
        finally:
            release(filler)
    finally:
        release(alice)
        release(bob)
    assert carol_then == "ok"


@pytest.mark.executor_flags(*CAPS)
def test_a_connection_that_never_says_hello_fails_to_keep_its_place(executor, users):
    def silent() -> tuple[str, bytes, float]:
        start = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(executor.socket)
            sock.settimeout(10)
            header = sock.recv(4, socket.MSG_WAITALL)
            answer = protocol.decode(sock.recv(protocol.frame_length(header), socket.MSG_WAITALL))
            return answer["error"]["reason"], sock.recv(1), time.monotonic() - start

    reason, after, took = as_user("jwtest-alice", silent)
    assert (reason, after) == ("bad_request", b"") and 0.5 < took < 5  # told why, then closed
    # twenty silent connections are all let go, so alice's own cap is free again
    alice, _ = hog(executor, "jwtest-alice", 20, how="silent")
    try:
        time.sleep(2)
        again, answers = hog(executor, "jwtest-alice", 20)
        release(again)
        assert answers == ["ok"] * 20
    finally:
        release(alice)


@pytest.mark.executor_flags(*CAPS)
def test_half_sent_frames_fail_to_block_other_users_or_to_last(executor, users):
    alice, answers = hog(executor, "jwtest-alice", 20, how="half")
    try:
        assert answers == ["ok"] * 20
        start = time.monotonic()
        assert served(executor, "jwtest-bob") == "ok"
        assert time.monotonic() - start < 1  # nobody waits for alice's frames
        time.sleep(2)  # past the frame timeout: her connections are closed, her cap free again
        again, answers = hog(executor, "jwtest-alice", 20)
        release(again)
        assert answers == ["ok"] * 20
    finally:
        release(alice)


@pytest.mark.executor_flags("--Policy.max_concurrent_jobs=2", "--Policy.max_queued_per_user=3")
def test_one_user_flooding_the_queue_is_refused_busy_and_others_still_queue(executor, users):
    statuses = [run_as(executor, "jwtest-alice", SLEEP).status for _ in range(4)]
    assert statuses == ["RUNNING", "QUEUED", "QUEUED", "QUEUED"]  # one running: her default cap is half of 2
    refused = ask_as(executor, "jwtest-alice", "run", SLEEP)
    assert refused == "refused: busy"
    with pytest.raises(WorkerError, match="already has 3 jobs queued"):
        as_user("jwtest-alice", lambda: Client(executor.socket).run(SLEEP))
    assert run_as(executor, "jwtest-bob", SLEEP).status == "RUNNING"
    assert run_as(executor, "jwtest-bob", SLEEP).status == "QUEUED"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spent(executor: Daemon, seconds: float) -> float:
    before = _cpu_seconds(executor.process.pid)
    time.sleep(seconds)
    return _cpu_seconds(executor.process.pid) - before


def test_many_followers_of_a_quiet_job_fail_to_cost_the_executor_cpu(executor, users):
    job = run_as(executor, "jwtest-alice", SLEEP)
    wait_for(lambda: ask_as(executor, "jwtest-alice", "get", job.id).status == "RUNNING", what="the job to run")
    alone = _spent(executor, 3)
    followers = [Client(executor.socket).follow(job.id) for _ in range(150)]
    watchers = [Client(executor.socket).watch() for _ in range(50)]
    time.sleep(1)  # their first events are sent
    crowded = _spent(executor, 3)
    # Polling every 50 ms, 150 followers cost about half a core; asleep until news, next to nothing.
    assert crowded - alone < 0.15, (alone, crowded)
    followers.clear()
    watchers.clear()


@pytest.mark.executor_flags(*CAPS)
def test_followers_that_hang_up_on_a_quiet_job_fail_to_keep_their_places(executor, users):
    job = run_as(executor, "jwtest-alice", SLEEP)

    def follow_and_hang_up() -> int:
        streams = [Client(executor.socket).follow(job.id) for _ in range(20)]
        streams.clear()  # each socket closes with its stream
        time.sleep(1)
        again = [Client(executor.socket) for _ in range(20)]
        return sum(client.capabilities() is not None for client in again)

    assert as_user("jwtest-alice", follow_and_hang_up) == 20


# Run as alice: N threads, each listing a folder of her job's /work over and over for SECONDS.
LISTER = """
import sys, threading, time
from jupyter_worker.client import Client
path, job, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def lister():
    with Client(path) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            client.files(job, "big")
workers = [threading.Thread(target=lister) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
"""


def test_one_users_flood_of_slow_work_listings_fails_to_keep_another_users_listing_waiting(executor, users):
    """alice lists a folder of 99,000 names (~0.1 s each) on 8 connections at once: the executor's
    file threads were shared by everyone, so bob's own listing waited ~0.5 s behind hers; now each
    user has at most executor/server.py's FILE_TURNS of them."""
    big = run_as(
        executor,
        "jwtest-alice",
        {"command": ["sh", "-c", "mkdir /work/big && cd /work/big && seq 99000 | xargs touch"]},
    )
    bobs = run_as(executor, "jwtest-bob", {"command": ["sh", "-c", "echo hi > /work/f"]})
    for user, job in (("jwtest-alice", big), ("jwtest-bob", bobs)):
        wait_for(lambda user=user, job=job: ask_as(executor, user, "get", job.id).finished, timeout=120)

    def bobs_listing() -> float:
        start = time.monotonic()
        assert [e["name"] for e in ask_as(executor, "jwtest-bob", "files", bobs.id)["entries"]] == ["f"]
        return time.monotonic() - start

    entry = pwd.getpwnam("jwtest-alice")
    flood = subprocess.Popen(
        [sys.executable, "-c", LISTER, executor.socket, big.id, "8", "8"],
        user=entry.pw_uid,
        group=entry.pw_gid,
        cwd="/",
    )
    try:
        time.sleep(2)  # her listings fill what they can
        waits = sorted(bobs_listing() for _ in range(9))
    finally:
        flood.wait(timeout=60)
    assert flood.returncode == 0
    assert waits[4] < 0.25, waits  # the median: it was ~0.5 s
