"""A job's log file (sandbox/output.py): framed records of stdout, stderr and notices, read back from
any record boundary with no gap and no duplicate, partial records left for later, and a cap."""

from __future__ import annotations

import os

import pytest

from jupyter_worker.sandbox.output import HEADER, MAX_RECORD, NOTICE, STDERR, STDOUT, Chunk, LogWriter, read_chunks


@pytest.fixture
def log(tmp_path) -> str:
    return str(tmp_path / "log")


def writer(path: str, cap: int = 1 << 30) -> LogWriter:
    """A writer appending to path, as the supervisor opens it."""
    return LogWriter(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), cap)


def read_all(path: str, offset: int = 0, max_bytes: int = 1 << 20) -> tuple[list[Chunk], int]:
    """Follow the log to its end in reads of max_bytes, as a reader that keeps up does."""
    chunks: list[Chunk] = []
    while True:
        more, next_offset = read_chunks(path, offset, max_bytes)
        if not more:
            return chunks, offset
        chunks += more
        offset = next_offset


def test_records_come_back_in_order_with_their_streams_and_offsets(log):
    out = writer(log)
    out.write(STDOUT, b"hello\n")
    out.write(STDERR, b"oops\n")
    out.write(STDOUT, b"bye\n")
    out.close()
    chunks, end = read_chunks(log)
    assert [(c.stream_name, c.data) for c in chunks] == [
        ("stdout", b"hello\n"),
        ("stderr", b"oops\n"),
        ("stdout", b"bye\n"),
    ]
    assert [c.offset for c in chunks] == [0, HEADER.size + 6, 2 * HEADER.size + 11]
    assert end == os.path.getsize(log) == 3 * HEADER.size + 15


def test_reading_from_a_records_offset_gives_it_and_what_follows(log):
    out = writer(log)
    for n in range(5):
        out.write(STDOUT, f"line {n}\n".encode())
    out.close()
    chunks, end = read_chunks(log)
    rest, rest_end = read_chunks(log, chunks[3].offset)
    assert rest == chunks[3:]
    assert rest_end == end
    assert read_chunks(log, end) == ([], end)


def test_a_reader_that_follows_sees_every_byte_once(log):
    out = writer(log)
    out.write(STDOUT, b"first\n")
    seen, offset = read_chunks(log)
    out.write(STDOUT, b"second\n")
    out.write(STDERR, b"third\n")
    more, offset = read_chunks(log, offset)
    out.close()
    assert b"".join(c.data for c in seen + more) == b"first\nsecond\nthird\n"
    assert read_chunks(log, offset) == ([], offset)


def test_a_record_still_being_written_is_left_for_the_next_read(log):
    out = writer(log)
    out.write(STDOUT, b"whole\n")
    out.close()
    with open(log, "ab") as f:
        f.write(HEADER.pack(STDERR, 10) + b"half")
    chunks, offset = read_chunks(log)
    assert [c.data for c in chunks] == [b"whole\n"]
    assert read_chunks(log, offset) == ([], offset)
    with open(log, "ab") as f:
        f.write(b"-done\n")
    chunks, end = read_chunks(log, offset)
    assert [(c.offset, c.stream, c.data) for c in chunks] == [(offset, STDERR, b"half-done\n")]
    assert end == os.path.getsize(log)


def test_a_half_written_header_is_left_for_the_next_read_too(log):
    with open(log, "wb") as f:
        f.write(HEADER.pack(STDOUT, 3)[:2])
    assert read_chunks(log) == ([], 0)


def test_reads_stop_near_max_bytes_and_go_on_from_where_they_stopped(log):
    out = writer(log)
    lines = [f"{n:04d}\n".encode() for n in range(200)]
    for line in lines:
        out.write(STDOUT, line)
    out.close()
    first, _ = read_chunks(log, 0, max_bytes=100)
    assert 100 <= sum(len(c.data) for c in first) < 100 + 5
    chunks, end = read_all(log, max_bytes=100)
    assert [c.data for c in chunks] == lines
    assert end == os.path.getsize(log)


def test_a_record_larger_than_the_read_window_is_read_whole(log):
    big = bytes(range(256)) * 400
    out = writer(log)
    out.write(STDOUT, big)
    out.write(STDOUT, b"after\n")
    out.close()
    chunks, offset = read_chunks(log, 0, max_bytes=16)
    assert [c.data for c in chunks] == [big]
    assert read_chunks(log, offset, max_bytes=16)[0][0].data == b"after\n"


def test_a_large_record_still_being_written_is_left_for_the_next_read(log):
    with open(log, "wb") as f:
        f.write(HEADER.pack(STDOUT, 100_000) + b"x" * 50_000)
    assert read_chunks(log, 0, max_bytes=16) == ([], 0)


def test_output_longer_than_a_record_is_split_into_records(log):
    data = os.urandom(2 * MAX_RECORD + 10)
    out = writer(log)
    out.write(STDERR, data)
    out.close()
    chunks, _ = read_all(log)
    assert [len(c.data) for c in chunks] == [MAX_RECORD, MAX_RECORD, 10]
    assert {c.stream for c in chunks} == {STDERR}
    assert b"".join(c.data for c in chunks) == data


def test_past_the_cap_one_notice_is_written_and_the_rest_dropped_and_counted(log):
    out = writer(log, cap=100)
    out.write(STDOUT, b"a" * 40)
    out.write(STDOUT, b"b" * 40)
    out.write(STDOUT, b"c" * 30)
    out.write(STDERR, b"d" * 7)
    out.close()
    chunks, _ = read_all(log)
    assert [(c.stream_name, c.data) for c in chunks] == [
        ("stdout", b"a" * 40),
        ("stdout", b"b" * 40),
        ("notice", b"[jupyter-worker: log cap of 100 bytes reached; output dropped]\n"),
        ("notice", b"[jupyter-worker: 37 bytes of output were dropped]\n"),
    ]
    assert chunks[2].stream == NOTICE


def test_a_log_under_its_cap_has_no_notice(log):
    out = writer(log, cap=HEADER.size + 10)
    out.write(STDOUT, b"0123456789")
    out.close()
    assert [c.stream for c in read_all(log)[0]] == [STDOUT]


def test_a_writer_on_an_existing_log_appends_and_counts_it_against_the_cap(log):
    first = writer(log)
    first.write(STDOUT, b"x" * 50)
    first.close()
    again = writer(log, cap=HEADER.size + 60)
    assert again.size == HEADER.size + 50
    again.write(STDOUT, b"y" * 5)
    again.write(STDOUT, b"z" * 10)
    again.close()
    assert [c.data[:1] for c in read_all(log)[0]] == [b"x", b"y", b"[", b"["]


def test_a_log_not_yet_made_reads_as_nothing_at_the_offset_asked(log):
    assert read_chunks(log, 42) == ([], 42)


def test_an_unknown_stream_reads_as_stdout():
    assert Chunk(0, 9, b"").stream_name == "stdout"


def test_a_log_taken_over_after_a_writer_died_mid_record_goes_on_after_its_last_whole_record(log):
    path = log
    first = writer(path)
    first.write(STDOUT, b"one\n")
    whole = first.size
    first.write(STDOUT, b"two\n")
    os.write(first.fd, HEADER.pack(STDOUT, 100) + b"torn")  # killed 4 bytes into a record of 100
    os.close(first.fd)
    successor = LogWriter(os.open(path, os.O_WRONLY | os.O_APPEND), 1 << 20)
    successor.cut_torn_tail(whole)
    successor.write(STDOUT, b"three\n")
    successor.close()
    chunks, _ = read_chunks(path)
    assert [c.data for c in chunks] == [b"one\n", b"two\n", b"three\n"]


def test_a_log_with_no_torn_record_is_left_as_it_is(log):
    path = log
    first = writer(path)
    first.write(STDOUT, b"whole\n")
    size = first.size
    first.cut_torn_tail(0)
    assert first.size == os.path.getsize(path) == size
    first.close()
