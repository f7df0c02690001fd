"""Rich output of a job (issue 16): the in-job runner writes display bundles to the display fd as
they happen; the kernel shows only what richoutput.py lets through (sanitized HTML, checked PNG and
JPEG, text), bounded. Pure logic: no root, no sandbox (the runner runs as a plain subprocess)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest

from jupyter_worker import cell, richoutput
from jupyter_worker.richoutput import DisplaySink, sanitize_bundle, sanitize_html

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 32).decode()

HOSTILE_HTML = [
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)><circle/></svg>",
    "<iframe src='javascript:alert(1)'></iframe>",
    "<a href='javascript:alert(1)'>x</a>",
    "<a href='/api/contents?token=x'>x</a>",
    "<form action='/api/kernels' method=post><input name=x><button>go</button></form>",
    "<div style=\"background:url('https://evil.example/x')\">x</div>",
    "<style>body{display:none}</style>",
    "<object data=x></object><embed src=x>",
    "<math><mtext><script>alert(1)</script></mtext></math>",
    "<details open ontoggle=alert(1)>x</details>",
    "<meta http-equiv=refresh content='0;url=https://evil.example'>",
    "<base href='https://evil.example/'>",
    "<link rel=stylesheet href='https://evil.example/x.css'>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    "<q cite='https://evil.example/q'>x</q><blockquote cite='/api/x'>y</blockquote>",
    "<del cite='https://evil.example/d'>x</del><ins cite='javascript:alert(1)'>y</ins>",
]


@pytest.mark.parametrize("markup", HOSTILE_HTML)
def test_hostile_html_is_stripped_of_what_runs_fetches_or_restyles(markup):
    clean = sanitize_html(markup).lower()
    for bad in (
        "<script",
        "onerror",
        "onload",
        "ontoggle",
        "javascript:",
        "<iframe",
        "<form",
        "<input",
        "<svg",
        "style",
        "<object",
        "<embed",
        "<img",
        "<meta",
        "<base",
        "<link",
        "/api/",
        "evil.example",
    ):
        assert bad not in clean.replace('class="tex2jax_ignore mathjax_ignore"', ""), (markup, clean)


def test_a_dataframes_table_and_plain_markup_survive_inside_a_block_mathjax_skips():
    clean = sanitize_html("<table border='1' class='dataframe'><tr><th>a</th><td>$1$</td></tr></table>")
    assert clean.startswith('<div class="tex2jax_ignore mathjax_ignore"><table>') and "<td>$1$</td>" in clean
    assert 'href="https://example.org"' in sanitize_html("<a href='https://example.org'>ok</a>")


def test_only_text_html_and_checked_images_are_kept():
    bundle = {
        "text/plain": "t",
        "text/html": "<b onclick=x>b</b>",
        "image/png": PNG,
        "image/jpeg": JPEG,
        "application/javascript": "alert(1)",
        "image/svg+xml": "<svg onload=alert(1)/>",
        "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
        "text/markdown": "# md",
    }
    safe = sanitize_bundle(bundle)
    assert set(safe) == {"text/plain", "text/html", "image/png", "image/jpeg"}
    assert "onclick" not in safe["text/html"]
    assert sanitize_bundle({"text/markdown": "# md", "text/latex": "$x$"}) == {"text/plain": "# md"}
    fake_png = base64.b64encode(b"<svg onload=alert(1)>").decode()
    assert sanitize_bundle({"image/png": fake_png}) is None
    assert sanitize_bundle({"image/jpeg": "not base64!"}) is None
    assert sanitize_bundle({"image/png": PNG.replace("=", "") + "@@"}) is None
    assert sanitize_bundle({"application/javascript": "alert(1)"}) is None
    assert sanitize_bundle(["not", "a", "dict"]) is None


def test_an_image_past_its_cap_is_dropped(monkeypatch):
    monkeypatch.setattr(richoutput, "MAX_IMAGE_BYTES", 100)
    big = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 200).decode()
    assert sanitize_bundle({"image/png": big}) is None


def record(data) -> bytes:
    return json.dumps({"data": data, "metadata": {}}).encode() + b"\n"


def test_the_sink_joins_split_records_and_skips_garbage():
    shown: list = []
    sink = DisplaySink(shown.append)
    stream = record({"text/plain": "one"}) + b"not json\n" + b"[1]\n" + record({"text/plain": "two"})
    for i in range(0, len(stream), 7):
        sink.feed(stream[i : i + 7])
    assert shown == [{"text/plain": "one"}, {"text/plain": "two"}]


def test_the_sink_is_bounded_in_count_bytes_and_record_size(monkeypatch):
    monkeypatch.setattr(richoutput, "MAX_ITEMS", 3)
    shown: list = []
    sink = DisplaySink(shown.append)
    for n in range(10):
        sink.feed(record({"text/plain": str(n)}))
    assert [s["text/plain"] for s in shown] == [
        "0",
        "1",
        "2",
        f"[jupyter-worker: display output past 3 items or {richoutput.MAX_TOTAL_BYTES >> 20} MiB is not shown]",
    ]
    monkeypatch.setattr(richoutput, "MAX_RECORD_BYTES", 1000)
    shown.clear()
    sink = DisplaySink(shown.append)
    sink.feed(b'{"data": {"text/plain": "' + b"x" * 5000)
    sink.feed(b'"}}\n' + record({"text/plain": "after"}))
    assert shown[0]["text/plain"].startswith("[jupyter-worker: a display record past 1000 bytes")
    assert shown[1:] == [{"text/plain": "after"}]


def test_no_attribute_but_an_anchors_href_may_carry_a_url():
    for tag, attributes in richoutput.HTML_ATTRIBUTES.items():
        assert not (attributes - ({"href"} if tag == "a" else set())) & richoutput.URL_ATTRIBUTES, tag
    assert 'href="https://example.org/"' in sanitize_html("<a href='https://example.org/'>ok</a>")
    assert "cite" not in sanitize_html("<q cite='https://example.org/'>ok</q>")


def test_a_jobs_plain_text_shows_its_control_characters_inert_keeping_newlines_and_tabs():
    bundle = sanitize_bundle({"text/plain": "a\tb\nc\x1b[2J\u202eevil\rd"})
    assert bundle == {"text/plain": "a\tb\nc\\x1b[2J\\u202eevil\\x0dd"}
    assert sanitize_bundle({"text/markdown": "# t\x07"}) == {"text/plain": "# t\\x07"}


def test_the_sink_reads_a_record_split_into_many_small_pieces_in_linear_time():
    shown: list = []
    sink = DisplaySink(shown.append)
    stream = record({"text/plain": "x" * (8 << 20)})
    started = time.monotonic()
    for i in range(0, len(stream), 4096):  # 2048 pieces: a quadratic reader copies gigabytes
        sink.feed(stream[i : i + 4096])
    assert time.monotonic() - started < 5
    assert len(shown) == 1 and shown[0]["text/plain"].startswith("x" * richoutput.MAX_TEXT)


def test_an_over_long_record_is_dropped_as_it_comes_and_counts_toward_the_total(monkeypatch):
    monkeypatch.setattr(richoutput, "MAX_RECORD_BYTES", 1000)
    monkeypatch.setattr(richoutput, "MAX_TOTAL_BYTES", 50_000)
    shown: list = []
    sink = DisplaySink(shown.append)
    sink.feed(b'{"data": {"text/plain": "')
    for _ in range(100):  # 100 kB of one record: never buffered past the record cap
        sink.feed(b"x" * 1000)
        assert len(sink.buffer) <= 1000
    sink.feed(b'"}}\n' + record({"text/plain": "after"}))
    assert shown[0]["text/plain"].startswith("[jupyter-worker: a display record past 1000 bytes")
    assert shown[1]["text/plain"].startswith("[jupyter-worker: display output past")  # its bytes counted
    assert len(shown) == 2


def run_with_display(code: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """The runner with a display pipe, as a job with display: true has; the records it wrote."""
    with open(cell.__file__) as source:
        runner = source.read()
    read_end, write_end = os.pipe()
    env = {**os.environ, cell.DISPLAY_FD_ENV: str(write_end)}
    env.pop("MPLBACKEND", None)
    done = subprocess.run(
        [sys.executable, "-u", "-c", runner, "--", code],
        env=env,
        check=False,
        pass_fds=[write_end],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        records = [json.loads(line) for line in stream.read().splitlines()]
    return done, records


def test_the_runner_sends_display_calls_figures_and_the_last_expression():
    code = (
        "import pandas as pd, matplotlib.pyplot as plt\nfrom IPython.display import display, HTML, Image\n"
        "display(HTML('<b>bold</b>'))\ndisplay({'text/plain': 'raw'}, raw=True)\nprint('between')\n"
        "plt.plot([1, 2, 3]); plt.show()\nplt.figure(); plt.plot([3, 2, 1])\n"
        "pd.DataFrame({'x': [1, 2]})"
    )
    done, records = run_with_display(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "between\n"
    kinds = [sorted(r["data"]) for r in records]
    assert kinds == [
        ["text/html", "text/plain"],
        ["text/plain"],
        ["image/png", "text/plain"],
        ["text/html", "text/plain"],
        ["image/png", "text/plain"],
    ]
    assert records[0]["data"]["text/html"] == "<b>bold</b>"
    assert base64.b64decode(records[2]["data"]["image/png"]).startswith(b"\x89PNG")
    assert "dataframe" in records[3]["data"]["text/html"]
    assert all(sanitize_bundle(r["data"]) for r in records)


def test_without_a_display_channel_display_prints_its_text():
    with open(cell.__file__) as source:
        runner = source.read()
    env = {k: v for k, v in os.environ.items() if k != cell.DISPLAY_FD_ENV}
    done = subprocess.run(
        [sys.executable, "-c", runner, "--", "display('shown')\n41 + 1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout == "'shown'\n42\n"
