"""The display stream (issue 16): a job that asks for display gets a pipe at a fixed fd whose bytes,
newline-delimited JSON mime bundles, land in its log as stream DISPLAY, capped on their own below
the log cap; text consumers never print them. Pure logic: no root, no sandbox."""

from __future__ import annotations

import io
import json
import os

import pytest

from jupyter_worker.errors import SpecError
from jupyter_worker.formatting import LogWriter as TextWriter
from jupyter_worker.formatting import follow_log
from jupyter_worker.sandbox.control import Capture
from jupyter_worker.sandbox.launch_spec import DISPLAY_FD, LaunchSpec, job_env
from jupyter_worker.sandbox.output import DISPLAY, HEADER, NOTICE, STDOUT, Chunk, LogWriter, read_chunks
from jupyter_worker.spec import DISPLAY_FD_ENV, JobRequest
from tests.unit.conftest import make_record


def bundle(n: int, size: int = 0) -> bytes:
    return json.dumps({"data": {"text/plain": f"{n}" + "x" * size}, "metadata": {}}).encode() + b"\n"


@pytest.fixture
def log(tmp_path) -> str:
    return str(tmp_path / "log")


def writer(path: str, cap: int = 1 << 30, display_cap: int | None = None) -> LogWriter:
    return LogWriter(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), cap, display_cap)


def streams(path: str) -> list[tuple[str, bytes]]:
    return [(c.stream_name, c.data) for c in read_chunks(path, 0, 1 << 30)[0]]


def test_display_records_are_their_own_stream_named_display(log):
    out = writer(log)
    out.write(STDOUT, b"before\n")
    out.write(DISPLAY, bundle(1))
    out.write(STDOUT, b"after\n")
    out.close()
    assert streams(log) == [("stdout", b"before\n"), ("display", bundle(1)), ("stdout", b"after\n")]
    assert Chunk(0, DISPLAY, b"").stream_name == "display"


def test_the_display_cap_defaults_to_a_quarter_of_the_log_cap(log):
    assert writer(log, cap=4000).display_cap == 1000


def test_past_the_display_cap_the_stream_ends_on_a_whole_line_with_one_notice_and_stdout_goes_on(log):
    out = writer(log, display_cap=100)
    lines = [bundle(n) for n in range(10)]  # 47 bytes each: two fit
    for line in lines:
        out.write(DISPLAY, line)
    out.write(STDOUT, b"still here\n")
    out.close()
    assert streams(log) == [
        ("display", lines[0]),
        ("display", lines[1]),
        ("notice", b"[jupyter-worker: display cap of 100 bytes reached; display output dropped]\n"),
        ("stdout", b"still here\n"),
        ("notice", f"[jupyter-worker: {8 * len(lines[0])} bytes of display output were dropped]\n".encode()),
    ]


def test_a_write_crossing_the_display_cap_keeps_its_whole_lines_only(log):
    out = writer(log, display_cap=100)
    out.write(DISPLAY, bundle(1) + bundle(2) + bundle(3))  # 141 bytes
    out.close()
    kept = b"".join(data for stream, data in streams(log) if stream == "display")
    assert kept == bundle(1) + bundle(2)


def test_a_line_begun_before_the_display_cap_is_closed_so_readers_can_skip_it(log):
    out = writer(log, display_cap=100)
    out.write(DISPLAY, b'{"data": {"text/plain": "' + b"y" * 60)
    out.write(DISPLAY, b"y" * 60 + b'"}}\n')
    out.close()
    display = b"".join(data for stream, data in streams(log) if stream == "display")
    assert display.endswith(b"\n") and display.count(b"\n") == 1
    assert len(display) <= 101
    with pytest.raises(ValueError):
        json.loads(display)


def test_the_log_cap_still_bounds_display_output(log):
    out = writer(log, cap=200, display_cap=10_000)
    for n in range(20):
        out.write(DISPLAY, bundle(n))
    out.close()
    chunks = read_chunks(log)[0]
    assert sum(len(c.data) for c in chunks if c.stream == DISPLAY) <= 200
    assert any(c.stream == NOTICE and b"log cap of 200 bytes" in c.data for c in chunks)


def test_display_output_longer_than_a_record_is_split_and_joins_back(log):
    big = bundle(0, size=600_000)
    out = writer(log)
    out.write(DISPLAY, big)
    out.close()
    chunks = read_chunks(log, 0, 1 << 30)[0]
    assert len(chunks) > 1 and {c.stream for c in chunks} == {DISPLAY}
    assert b"".join(c.data for c in chunks) == big
    assert os.path.getsize(log) == len(chunks) * HEADER.size + len(big)


def test_capture_reads_a_display_pipe_only_when_asked(log, tmp_path):
    result = str(tmp_path / "result")

    def capture(display: bool) -> Capture:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return Capture(fd, os.open(result, os.O_WRONLY | os.O_CREAT, 0o600), 1 << 20, display)

    plain = capture(False)
    assert len(plain.job_ends) == 2 and len(plain.fds()) == 2
    with_display = capture(True)
    assert len(with_display.job_ends) == 3
    _, _, display_end = with_display.job_ends
    os.write(display_end, bundle(7))
    for end in [*plain.job_ends, *with_display.job_ends]:
        os.close(end)
    with_display.drain()
    plain.drain()
    with_display.log.close()
    plain.log.close()
    assert streams(log) == [("display", bundle(7))]


def test_only_a_job_with_display_gets_the_variable_naming_its_fd():
    assert DISPLAY_FD_ENV not in job_env(LaunchSpec(["true"]))
    assert job_env(LaunchSpec(["true"], display=True))[DISPLAY_FD_ENV] == str(DISPLAY_FD) == "3"
    assert LaunchSpec.from_dict(LaunchSpec(["true"], display=True).to_dict()).display is True
    old = LaunchSpec(["true"]).to_dict()
    del old["display"]  # a launch stored before the field existed
    assert LaunchSpec.from_dict(old).display is False


def test_a_request_cannot_set_the_display_variable_itself_or_a_display_that_is_not_a_bool():
    with pytest.raises(SpecError, match=DISPLAY_FD_ENV):
        JobRequest(["true"], env={DISPLAY_FD_ENV: "1"})
    with pytest.raises(SpecError, match=DISPLAY_FD_ENV):
        LaunchSpec(["true"], env={DISPLAY_FD_ENV: "1"})
    for value in ("yes", 1, None):
        with pytest.raises(SpecError, match="display"):
            JobRequest.from_dict({"command": ["true"], "display": value})
        with pytest.raises(SpecError, match="display"):
            LaunchSpec(["true"], display=value)  # type: ignore[arg-type]


def test_display_is_a_request_field_that_defaults_to_off():
    assert JobRequest.from_dict({"command": ["true"]}).display is False
    request = JobRequest.from_dict({"command": ["true"], "display": True})
    assert request.display is True and request.to_dict()["display"] is True


def test_text_consumers_never_print_display_bytes_but_hand_them_on_when_asked():
    out, err = io.StringIO(), io.StringIO()
    TextWriter(out, err).write("display", bundle(1))
    assert out.getvalue() == err.getvalue() == ""
    seen: list[bytes] = []
    text = TextWriter(out, err, on_display=seen.append)
    for stream, data in [("stdout", b"a\n"), ("display", bundle(1)[:10]), ("display", bundle(1)[10:])]:
        text.write(stream, data)
    assert out.getvalue() == "a\n" and err.getvalue() == ""
    assert b"".join(seen) == bundle(1)


def test_following_a_log_with_display_chunks_prints_only_the_text():
    out, err = io.StringIO(), io.StringIO()
    events = [
        {"event": "log", "stream": "stdout", "data": b"one\n"},
        {"event": "log", "stream": "display", "data": bundle(1)},
        {"event": "log", "stream": "stderr", "data": b"two\n"},
        {"event": "end", "job": make_record()},
    ]
    follow_log(events, TextWriter(out, err, inert=True))
    assert (out.getvalue(), err.getvalue()) == ("one\n", "two\n")
