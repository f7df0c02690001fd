"""How jobs are shown: the table, times, a job's detail lines, and its log written as it comes."""

from __future__ import annotations

import datetime
import io

import pytest

from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.formatting import (
    TABLE_COLUMNS,
    LogWriter,
    clock,
    elapsed,
    follow_log,
    html_table,
    job_lines,
    table_row,
    text_table,
)
from jupyter_worker.spec import JobRecord
from tests.unit.conftest import make_record

START = datetime.datetime(2024, 5, 1, 12, 0, 0).timestamp()


def record(**fields) -> JobRecord:
    mine = {"command": ["sh", "-c", "echo started;\n  sleep 300"], "limits": {"memory_mb": 256, "timeout_s": 60.0}}
    return make_record(**{**mine, "created_at": START, "started_at": START, **fields})


def test_times_are_local_and_a_missing_one_is_a_dash():
    assert clock(START) == "2024-05-01 12:00:00"
    assert clock(None) == "-"


def test_elapsed_runs_to_the_end_or_to_now_and_is_none_before_the_start():
    assert elapsed(record(), now=START + 2.5) == 2.5
    assert elapsed(record(status="COMPLETED", reason="exit", exit_code=0, finished_at=START + 4), now=START + 99) == 4
    assert elapsed(record(status="QUEUED", started_at=None)) is None


def test_a_table_row_shows_cpu_time_and_the_memory_peak():
    running = record(metrics={"cpu_seconds": 1.234, "memory_bytes": 1 << 20, "memory_peak_bytes": 3 << 20})
    assert table_row(running, now=START + 12.34) == (
        "01234567",
        "RUNNING",
        "napper",
        "sh -c echo started; sleep 300",
        "2024-05-01 12:00:00",
        "12.3s",
        "1.23s",
        "3.0 MiB",
    )
    queued = record(status="QUEUED", started_at=None, name="")
    assert table_row(queued)[2:] == ("", "sh -c echo started; sleep 300", "-", "-", "-", "-")


def test_the_text_table_aligns_its_columns_under_the_heading():
    lines = text_table([record(), record(id="fedcba98" + "0" * 24, name="a much longer name")], now=START).splitlines()
    assert lines[0].split() == list(TABLE_COLUMNS)
    status_at = lines[0].index("STATUS")
    command_at = lines[0].index("COMMAND")
    assert all(line[status_at:].startswith("RUNNING") for line in lines[1:])
    assert all(line[command_at:].startswith("sh -c") for line in lines[1:])


def test_the_html_table_escapes_what_a_job_named():
    table = html_table([record(name="<b>bold</b>")], now=START)
    assert table.startswith('<div class="tex2jax_ignore mathjax_ignore"><table><thead><tr><th>ID</th>')
    assert "<td>&lt;b&gt;bold&lt;/b&gt;</td>" in table and "<b>bold</b>" not in table


def test_a_jobs_detail_lines_name_its_ending_its_limits_and_its_usage():
    ended = record(
        status="STOPPED",
        reason="stopped",
        stopped_by="root",
        finished_at=START + 3,
        metrics={"cpu_seconds": 0.5, "memory_peak_bytes": 5 << 20, "wall_seconds": 3.0},
    )
    assert job_lines(ended) == [
        "ID:        0123456789abcdef0123456789abcdef",
        "Name:      napper",
        "Owner:     alice",
        "Command:   sh -c echo started; sleep 300",
        "Status:    STOPPED (stopped by root)",
        "StartTime: 2024-05-01 12:00:00",
        "Limits:    Memory 256 MiB, Timeout 1m",
        "StoppedBy: root",
        "Usage:     cpu 0.50s, memory peak 5.0 MiB, wall 3.00s",
    ]
    running = job_lines(record())
    assert "Status:    RUNNING" in running and not any(line.startswith(("StoppedBy", "Usage")) for line in running)


def binary_stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8")


def test_the_log_goes_out_as_the_job_wrote_it_stdout_to_stdout_the_rest_to_stderr():
    stdout, stderr = binary_stream(), binary_stream()
    writer = LogWriter(stdout, stderr)
    stdout.write("before\n")
    writer.write("stdout", b"out \xff\n")
    writer.write("stderr", b"err\n")
    writer.write("notice", b"[killed]\n")
    assert stdout.buffer.getvalue() == b"before\nout \xff\n"
    assert stderr.buffer.getvalue() == b"err\n[killed]\n"


def test_a_text_only_stream_gets_the_log_decoded_with_split_characters_kept_whole():
    stdout, stderr = io.StringIO(), io.StringIO()
    writer = LogWriter(stdout, stderr)
    euro = "€".encode()
    writer.write("stdout", b"price " + euro[:1])
    writer.write("stderr", b"warn\n")
    writer.write("stdout", euro[1:] + b"\n")
    assert stdout.getvalue() == "price €\n"
    assert stderr.getvalue() == "warn\n"


def test_following_a_log_writes_it_and_returns_the_final_record():
    final = record(status="COMPLETED", reason="exit", exit_code=0, finished_at=START + 1)
    events = [
        {"event": "log", "stream": "stdout", "data": b"hi\n", "offset": 0},
        {"event": "status", "job": record()},
        {"event": "end", "job": final},
        {"event": "log", "stream": "stdout", "data": b"never\n", "offset": 3},
    ]
    stdout = io.StringIO()
    assert follow_log(iter(events), LogWriter(stdout, io.StringIO())) is final
    assert stdout.getvalue() == "hi\n"
    assert follow_log(iter(events)) is final


def test_a_log_that_ends_before_the_job_is_a_disconnection():
    with pytest.raises(WorkerError) as lost:
        follow_log(iter([{"event": "log", "stream": "stdout", "data": b"hi\n"}]), None)
    assert lost.value.reason is ErrorReason.DISCONNECTED
