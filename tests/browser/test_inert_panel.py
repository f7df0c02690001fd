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
