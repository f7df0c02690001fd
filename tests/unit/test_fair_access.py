"""Fair access, the pure parts: who is admitted, the per-user caps' defaults, and that a followed
job's news comes from the kernel (inotify) rather than from a timer."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from jupyter_worker import protocol
from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.executor.policy import Policy
from jupyter_worker.executor.server import Admission, _receive, _until_hung_up
from jupyter_worker.executor.supervision import UNWATCHED_POLL_S, Newsroom
from jupyter_worker.sandbox import libc

ALICE, BOB, ROOT = 1001, 1002, 0


def admission(**caps: int) -> Admission:
    return Admission(**{"max_connections": 10, "reserved": 2, "per_user": 3, "requests_per_user": 2} | caps)


def test_one_user_is_refused_past_their_own_cap_while_another_still_gets_in():
    gate = admission()
    assert [gate.enter(ALICE, False) for _ in range(3)] == [None, None, None]
    refused = gate.enter(ALICE, False)
    assert refused is not None and "Policy.max_connections_per_user" in refused
    assert gate.enter(BOB, False) is None
    assert (gate.total, gate.connections) == (4, {ALICE: 3, BOB: 1})


def test_ordinary_users_together_leave_the_reserve_to_root_and_admins():
    gate = admission(per_user=100)
    for _ in range(8):
        assert gate.enter(ALICE, False) is None
    refused = gate.enter(BOB, False)
    assert refused is not None and "Policy.reserved_connections" in refused
    assert gate.enter(ROOT, True) is None and gate.enter(ROOT, True) is None
    refused = gate.enter(ROOT, True)
    assert refused is not None and "Policy.max_connections" in refused  # the last guard holds for all


def test_privileged_callers_have_no_cap_of_their_own():
    gate = admission(per_user=1, requests_per_user=1)
    assert [gate.enter(ROOT, True) for _ in range(5)] == [None] * 5
    with gate.request(ROOT, True), gate.request(ROOT, True):
        pass


def test_a_connection_that_leaves_gives_its_place_back():
    gate = admission(per_user=1)
    assert gate.enter(ALICE, False) is None
    gate.leave(ALICE)
    assert (gate.total, gate.connections) == (0, {})
    assert gate.enter(ALICE, False) is None


def test_one_user_past_their_requests_in_flight_is_busy_and_the_count_comes_back():
    gate = admission(requests_per_user=2)
    with gate.request(ALICE, False), gate.request(ALICE, False):
        with pytest.raises(WorkerError) as refused:
            with gate.request(ALICE, False):
                pass
        assert refused.value.reason is ErrorReason.BUSY and "max_requests_per_user" in refused.value.message
        with gate.request(BOB, False):
            pass
    assert gate.requests == {}


def test_the_reserve_never_takes_every_place():
    policy = Policy(max_connections=4, reserved_connections=10)
    assert Admission.of(policy).reserved == 3


def test_per_user_job_and_queue_caps_are_on_by_default():
    assert Policy(max_concurrent_jobs=8).max_jobs_per_user == 4
    assert Policy(max_concurrent_jobs=1).max_jobs_per_user == 1
    assert Policy().max_queued_per_user == 100
    policy = Policy(max_queued_per_user=5, user_limits={"nobody-known": {"max_queued": 0}})
    assert policy.allowance("nobody-known").max_queued == 0  # 0: no cap of their own
    assert policy.allowance("someone-else").max_queued == 5


def test_a_queue_cap_in_an_entry_is_a_whole_number():
    with pytest.raises(Exception, match="max_queued"):
        Policy(user_limits={"x": {"max_queued": -1}})


def test_inotify_events_are_read_back_with_their_names_skipped():
    data = (
        struct.pack("iIII", 3, libc.IN_MODIFY, 0, 8) + b"name\0\0\0\0" + struct.pack("iIII", 4, libc.IN_IGNORED, 0, 0)
    )
    assert libc.inotify_events(data) == [(3, libc.IN_MODIFY), (4, libc.IN_IGNORED)]


def test_a_followed_log_wakes_its_followers_only_when_it_grows(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"")

    async def scenario() -> None:
        newsroom = Newsroom()
        with newsroom.subscribe("job") as first, newsroom.subscribe("job") as second:
            assert newsroom.watch_log("job", str(log)) is None
            assert newsroom.watch_log("job", str(log)) is None and len(newsroom._watches) == 1  # one watch
            await asyncio.sleep(0.2)
            assert not first.is_set() and newsroom.wakeups == 0  # quiet: nothing ran
            with open(log, "ab") as out:
                out.write(b"more")
            await asyncio.wait_for(first.wait(), 5)
            assert second.is_set() and newsroom.wakeups == 2
        assert newsroom.waiters == {} and newsroom._watches == {}  # the last follower took the watch along
        newsroom.close()

    asyncio.run(scenario())


def test_a_log_not_there_yet_waits_for_the_jobs_start_and_an_unwatchable_one_is_polled(tmp_path):
    async def scenario() -> None:
        newsroom = Newsroom()
        with newsroom.subscribe("job") as news:
            assert newsroom.watch_log("job", str(tmp_path / "missing")) is None
            newsroom.wake("job")  # the executor's word that its status changed
            assert news.is_set()
            (tmp_path / "file").write_bytes(b"")
            assert newsroom.watch_log("other", str(tmp_path / "file" / "log")) == UNWATCHED_POLL_S
        newsroom.close()

    asyncio.run(scenario())


def test_a_deleted_log_drops_its_watch_and_wakes_its_followers(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"")

    async def scenario() -> None:
        newsroom = Newsroom()
        with newsroom.subscribe("job") as news:
            newsroom.watch_log("job", str(log))
            os.unlink(log)
            await asyncio.wait_for(news.wait(), 5)
            await asyncio.sleep(0.05)
            assert newsroom._watches == {}
        newsroom.close()

    asyncio.run(scenario())


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    return reader


def test_a_half_sent_frame_times_out_and_an_idle_connection_does_not():
    async def scenario() -> None:
        frame = protocol.encode({"op": "hello", "version": protocol.VERSION})
        assert (await _receive(_reader(frame), 0.5))["op"] == "hello"
        with pytest.raises(TimeoutError):
            await _receive(_reader(frame[:3]), 0.2)  # the header itself half sent
        with pytest.raises(TimeoutError):
            await _receive(_reader(frame[:-1]), 0.2)
        idle = asyncio.ensure_future(_receive(_reader(b""), 0.05))
        await asyncio.sleep(0.2)
        assert not idle.done()  # waiting for a frame to begin costs no timer
        idle.cancel()
        ended = _reader(frame[:-1])
        ended.feed_eof()
        with pytest.raises(WorkerError, match="ended early"):
            await _receive(ended, 1)

    asyncio.run(scenario())


def test_a_stream_whose_peer_hangs_up_ends_though_it_had_nothing_to_send():
    async def scenario() -> None:
        never = asyncio.Event()
        reader = _reader(b"ignored bytes")
        streaming = asyncio.ensure_future(_until_hung_up(reader, never.wait()))
        await asyncio.sleep(0.05)
        assert not streaming.done()
        reader.feed_eof()
        await asyncio.wait_for(streaming, 1)

    asyncio.run(scenario())


def test_a_streams_refusal_still_reaches_the_caller():
    async def refused() -> None:
        raise WorkerError(ErrorReason.NOT_FOUND, "no job x")

    async def scenario() -> None:
        with pytest.raises(WorkerError, match="no job x"):
            await _until_hung_up(_reader(b""), refused())

    asyncio.run(scenario())
