"""Untrusted text is inert: the one escaping function, the HTML forms, the name rule and the size
bounds that keep any record inside a protocol frame (issue 15, item 5)."""

from __future__ import annotations

import asyncio
import io
import json
import time
import unicodedata

import pytest

from jupyter_worker import protocol
from jupyter_worker.cli import report_errors
from jupyter_worker.errors import ErrorReason, SpecError, WorkerError
from jupyter_worker.executor.store import JobStore
from jupyter_worker.formatting import LogWriter, html_job, html_table, inert, job_lines, text_table
from jupyter_worker.server.handlers import error_reply
from jupyter_worker.spec import (
    MAX_ARGS,
    MAX_COMMAND_BYTES,
    MAX_ENV_BYTES,
    MAX_ENV_VARS,
    MAX_ERROR_CHARS,
    MAX_MOUNTS,
    MAX_NAME_CHARS,
    MAX_PATH_BYTES,
    JobRecord,
    JobRequest,
    clip,
    default_name,
)
from jupyter_worker.widgets import JobWidget
from tests.unit.conftest import make_record

# What a hostile name or command carries: set the window title, clear the screen, a one-byte CSI
# (C1), DEL, a newline to forge a row, a bidi override, zero-width characters, a line separator,
# a lone surrogate (which cannot even be printed), LaTeX and HTML.
HOSTILE = (
    "\x1b]0;owned\x07\x1b[2J\x9b31m\x7f\x85\nFORGED 00000000 COMPLETED"
    "\u202eevil\u2066\u200b\u200d\ufeff\u2028\ud800 $x^2$ <script>alert(1)</script>"
)
HIDDEN = [
    *(chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))),  # C0, DEL, C1
    *"\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",  # bidi marks, overrides, isolates
    *"\u200b\u200c\u200d\u2060\ufeff\u00ad\U000e0001",  # zero-width, BOM, soft hyphen, a tag character
    *"\u2028\u2029\ud800",  # line and paragraph separators, a lone surrogate
]


def shows_nothing_hidden(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text.replace("\n", ""))


def record(**fields) -> JobRecord:
    hostile = {"command": ["sh", "-c", HOSTILE], "status": "FAILED", "reason": "start_error", "error": HOSTILE}
    return make_record(**{**hostile, **fields})


@pytest.mark.parametrize("char", HIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_bidi_and_invisible_character_is_spelled_out(char):
    shown = inert(f"a{char}b")
    assert shown.startswith("a\\") and shown.endswith("b") and shows_nothing_hidden(shown)


def test_ordinary_text_of_any_script_is_shown_as_it_is():
    for text in ("plain", "naïve café", "数据 處理", "emoji 🎉 ok", "tab-free spaces", "x\\x1b literal"):
        assert inert(text) == text


def test_a_log_keeps_its_newlines_and_tabs_but_nothing_else_hidden():
    assert inert("a\tb\nc\x1b[2J\r", keep="\n\t") == "a\tb\nc\\x1b[2J\\x0d"


def test_the_cli_table_of_a_hostile_job_is_one_inert_line_under_its_heading():
    table = text_table([record(name="x")])
    assert shows_nothing_hidden(table) and len(table.splitlines()) == 2


def test_the_detail_lines_of_a_hostile_job_hide_nothing_and_forge_no_line():
    lines = job_lines(record(stopped_by=HOSTILE, owner=HOSTILE))
    assert all(shows_nothing_hidden(line) and "\n" not in line for line in lines)
    assert [line.split(":")[0] for line in lines][:5] == ["ID", "Name", "Owner", "Command", "Status"]


@pytest.mark.parametrize("render", [html_table, lambda r: html_job(r[0])], ids=["list", "status"])
def test_the_notebooks_html_escapes_hostile_text_and_never_holds_a_dollar(render):
    page = render([record(command=["$x^2$ <script>alert(1)</script>", HOSTILE])])
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "$" not in page and "&#36;x^2&#36;" in page
    assert page.startswith('<div class="tex2jax_ignore mathjax_ignore">')
    assert shows_nothing_hidden(page)


def test_the_widget_shows_a_hostile_name_and_error_escaped_and_out_of_mathjaxs_reach():
    async def drawn() -> str:
        widget = JobWidget(record(name="n$x$<b>", finished_at=2.0), socket="/nonexistent/executor.sock")
        await asyncio.wait_for(widget.task, 10)  # no executor there: it ends at once
        return widget.header.value

    header = asyncio.run(drawn())
    assert header.startswith('<div class="tex2jax_ignore mathjax_ignore">')
    assert "$" not in header and "<script" not in header and "&lt;b&gt;" in header and shows_nothing_hidden(header)


def test_an_error_naming_hostile_text_is_one_inert_line_on_stderr(capsys):
    assert report_errors(lambda: (_ for _ in ()).throw(WorkerError(ErrorReason.INVALID, HOSTILE))) == 2
    err = capsys.readouterr().err
    assert shows_nothing_hidden(err) and err.count("\n") == 1


class Terminal(io.StringIO):
    def __init__(self):
        super().__init__()
        self.buffer = io.BytesIO()


def test_another_users_log_is_written_inert_and_ones_own_as_it_came():
    raw, shown = Terminal(), Terminal()
    data = "line\n\x1b]0;owned\x07\x9b2J\ttab\n".encode()
    LogWriter(raw, raw).write("stdout", data)
    LogWriter(shown, shown, inert=True).write("stdout", data[:9])
    LogWriter(shown, shown, inert=True).write("stdout", data[9:])
    assert raw.buffer.getvalue() == data
    assert shown.getvalue() == "line\n\\x1b]0;owned\\x07\\x9b2J\ttab\n" and not shown.buffer.getvalue()


@pytest.mark.parametrize(
    ("program", "name"),
    [
        ("/usr/bin/python3", "python3"),
        ("\x1b]0;owned\x07/evil\u202eexe", "evil_exe"),
        ("/opt/tools/", "tools"),
        ("/", "_"),
        ("  ", "job"),
        ("$(rm -rf)", "_rm -rf_"),
        ("a" * 500, "a" * MAX_NAME_CHARS),
    ],
)
def test_a_default_name_from_argv_follows_the_name_rule(program, name):
    assert default_name(program) == name
    assert JobRequest(command=["true"], name=name).name == name  # the rule every given name meets


@pytest.mark.parametrize("name", ["\x1bname", "a\nb", "x\u202ey", "$x$", "<b>", "a" * (MAX_NAME_CHARS + 1), " lead"])
def test_a_name_outside_the_rule_is_refused(name):
    with pytest.raises(SpecError, match="name:"):
        JobRequest(command=["true"], name=name)


@pytest.mark.parametrize(
    ("fields", "limit"),
    [
        ({"command": ["x"] * (MAX_ARGS + 1)}, f"at most {MAX_ARGS} arguments"),
        ({"command": ["x", "y" * MAX_COMMAND_BYTES]}, f"at most {MAX_COMMAND_BYTES} bytes"),
        ({"env": {f"V{i}": "" for i in range(MAX_ENV_VARS + 1)}}, f"at most {MAX_ENV_VARS} variables"),
        ({"env": {"A": "x" * MAX_ENV_BYTES}}, f"at most {MAX_ENV_BYTES} bytes"),
        ({"mounts": ["/tmp:/data"] * (MAX_MOUNTS + 1)}, f"at most {MAX_MOUNTS}"),
        ({"cwd": "/" + "d" * MAX_PATH_BYTES}, f"at most {MAX_PATH_BYTES} bytes"),
        ({"mounts": [{"source": "/" + "s" * MAX_PATH_BYTES, "destination": "/data"}]}, f"{MAX_PATH_BYTES} bytes"),
        ({"python_prefixes": ["/opt"] * 9}, "at most 8"),
    ],
    ids=["args", "command-bytes", "env-vars", "env-bytes", "mounts", "cwd", "mount-path", "prefixes"],
)
def test_a_request_over_a_size_bound_is_invalid_naming_the_bound(fields, limit):
    with pytest.raises(SpecError, match=limit) as refused:
        JobRequest.from_dict({"command": ["true"], **fields})
    assert refused.value.reason is ErrorReason.INVALID


def test_the_largest_request_allowed_still_runs():
    request = JobRequest.from_dict(
        {
            "command": ["x"] * (MAX_ARGS - 1) + ["y" * (MAX_COMMAND_BYTES - 2 * MAX_ARGS)],
            "env": {"A": "v" * (MAX_ENV_BYTES - 4)},
            "mounts": ["/tmp:/data"] * MAX_MOUNTS,
        }
    )
    assert len(request.command) == MAX_ARGS


def test_a_refusal_never_echoes_a_huge_input():
    huge = "x" * (200 << 10)
    for data in ({"command": ["true"], "mounts": [huge]}, {"command": ["true"], "network": huge}):
        with pytest.raises(SpecError) as refused:
            JobRequest.from_dict(data)
        assert len(refused.value.message) < 300
    with pytest.raises(SpecError) as refused:
        JobRequest.from_dict({"command": ["true"], "env": {huge: "1"}})
    assert len(refused.value.message) < 300
    assert len(protocol.failed(1, WorkerError(ErrorReason.INVALID, huge))["error"]["message"]) <= 1003
    assert len(error_reply(WorkerError(ErrorReason.INVALID, huge))[1]["message"]) < 1100


def test_a_stored_error_is_cut_to_its_bound():
    assert len(clip("e" * 10**6) or "") < MAX_ERROR_CHARS + 40 and clip(None) is None and clip("ok") == "ok"


def biggest_record(number: int, command: list[str]) -> JobRecord:
    return record(
        id=f"{number:032x}",
        name="n" * MAX_NAME_CHARS,
        command=command,
        error="e" * MAX_ERROR_CHARS,
        created_at=time.time(),
    )


def test_a_thousand_records_of_the_largest_size_list_in_pages_that_each_fit_a_frame(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    largest = ["y" * (MAX_COMMAND_BYTES - 2)]
    escaped = ["\x01" * (MAX_COMMAND_BYTES - 2)]  # each byte 6 in JSON: the worst a record gets
    for number in range(1000):
        store.add(biggest_record(number, escaped if number % 100 == 0 else largest), {})
    seen, cursor, pages = [], None, 0
    while True:
        records, cursor = store.page(None, None, cursor, 1000, False, max_bytes=protocol.LIST_PAGE_BYTES)
        frame = protocol.encode(protocol.ok(7, jobs=[r.to_dict() for r in records], cursor=cursor))
        assert len(frame) <= protocol.MAX_FRAME + protocol.LENGTH.size
        seen += [r.id for r in records]
        pages += 1
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 1000 and pages > 1


def test_a_page_by_count_is_unchanged_when_records_are_small(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    for number in range(5):
        store.add(record(id=f"{number:032x}"), {})
    records, cursor = store.page(None, None, None, 3, False, max_bytes=protocol.LIST_PAGE_BYTES)
    assert [r.id[-1] for r in records] == ["4", "3", "2"] and cursor is not None
    records, cursor = store.page(None, None, cursor, 3, False, max_bytes=protocol.LIST_PAGE_BYTES)
    assert [r.id[-1] for r in records] == ["1", "0"] and cursor is None


def test_a_single_record_of_the_largest_size_fits_a_frame_as_json():
    largest = biggest_record(0, ["\x01" * (MAX_COMMAND_BYTES - 2)])
    assert len(json.dumps(largest.to_dict())) < protocol.LIST_PAGE_BYTES
