"""The panel shows a job's hostile text as text: HTML in its command never becomes an element,
control and bidi characters are spelled out (issue 15, item 5)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import open_job, open_panel, rest

pytestmark = pytest.mark.browser

IMG = "<img src=x onerror=alert(1)>"


def test_html_and_bidi_in_a_jobs_command_show_literally_in_the_panel_and_never_run(lab, page: Page):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    open_panel(page, lab)
    command = ["sh", "-c", "exit 0", f"{IMG} $x^2$ \u202eevil \x1b[2J"]
    rest(lab, "POST", "jobs", {"command": command, "name": "html-in-command"})
    _, view = open_job(page, "html-in-command")
    facts = view.locator("dd").first
    expect(facts).to_contain_text(IMG, timeout=30_000)
    expect(facts).to_contain_text("\\u202eevil \\x1b[2J")
    assert page.locator("#jupyter-worker-panel img, .jw-job-view img").count() == 0
    assert page.locator(".jw-job-view mjx-container").count() == 0
    assert dialogs == []


SPLIT_AND_HOSTILE = """
import os, time
os.write(1, b"caf\\xc3")
time.sleep(0.5)
os.write(1, b"\\xa9 <img src=x onerror=alert(1)> \\xff!\\n")
"""


def test_a_jobs_log_bytes_come_as_binary_frames_and_show_as_text_never_as_markup(lab, page: Page):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    streams: list[str] = []
    page.on("websocket", lambda ws: streams.append(ws.url) if "/stream" in ws.url else None)
    open_panel(page, lab)
    rest(lab, "POST", "jobs", {"command": ["python3", "-c", SPLIT_AND_HOSTILE], "name": "bytes-in-log"})
    _, view = open_job(page, "bytes-in-log")
    # a character split between two frames is joined; a byte that is not UTF-8 is U+FFFD
    expect(view.locator(".jw-stdout")).to_have_text(f"caf\u00e9 {IMG} \ufffd!\n", timeout=30_000)
    assert view.locator("img").count() == 0 and dialogs == []
    assert streams and all("frames=binary" in url for url in streams)
