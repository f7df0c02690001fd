"""The "Worker jobs" side panel as a user drives it: JupyterLab (as dev/start runs it) in chromium."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from jupyter_worker.widgets import COLOURS
from tests.browser.conftest import open_job, open_panel, rest, rgb, row

pytestmark = pytest.mark.browser


def test_a_job_started_from_the_form_streams_its_log_and_completes(lab, page):
    open_panel(page, lab)
    panel = page.locator("#jupyter-worker-panel")
    panel.get_by_role("button", name="New job").click()
    expect(panel.locator("input[name=memory_mb]")).to_have_attribute("placeholder", "default 1024")
    panel.locator("input[name=command]").fill(
        "sh -c 'for i in 1 2 3; do echo line $i; sleep 0.5; done; echo oops >&2; echo 42 > /work/answer.txt'"
    )
    panel.locator("input[name=name]").fill("from-the-form")
    panel.get_by_role("button", name="Start").click()
    job, view = open_job(page, "from-the-form")
    expect(view.locator(".jw-stdout").filter(has_text="line 1")).to_be_visible(timeout=30_000)
    expect(view.locator(".jw-stderr")).to_have_text("oops\n", timeout=30_000)
    expect(view.locator(".jw-badge")).to_have_text("exit code 0", timeout=30_000)
    expect(job.locator(".jw-badge")).to_have_text("done")
    expect(job.locator(".jw-badge")).to_have_attribute("title", "exit code 0")
    expect(job.locator(".jw-badge")).to_have_css("background-color", rgb(COLOURS["COMPLETED"]))
    expect(view.get_by_role("button", name="Stop")).to_be_disabled()
    with page.expect_download() as download:
        view.locator(".jw-files").get_by_role("link", name="answer.txt").click()
    with open(download.value.path()) as saved:
        assert saved.read() == "42\n"


def test_the_forms_limits_come_from_the_executors_table_and_take_units(lab, page):
    open_panel(page, lab)
    panel = page.locator("#jupyter-worker-panel")
    panel.get_by_role("button", name="New job").click()
    rows = rest(lab, "GET", "capabilities")["policy"]["limits"]
    assert panel.locator(".jw-limits input").evaluate_all("nodes => nodes.map(n => n.name)") == [
        r["field"] for r in rows
    ]
    timeout = panel.locator(".jw-field").filter(has=page.locator("input[name=timeout_s]"))
    expect(timeout).to_contain_text("Timeout (s)")
    expect(timeout.locator(".jw-hint")).to_have_text("max 86400 s")
    panel.locator("input[name=command]").fill("sleep 0.5")
    panel.locator("input[name=name]").fill("with-units")
    panel.locator("input[name=timeout_s]").fill("2d")
    panel.get_by_role("button", name="Start").click()
    expect(panel.locator(".jw-form-error")).to_have_text(
        "The server refused the job: timeout: 2d is above the maximum of 1d"
    )
    panel.locator("input[name=timeout_s]").fill("10m")
    panel.locator("input[name=memory_mb]").fill("256M")
    panel.locator("input[name=tmp_mb]").fill("32M")
    panel.get_by_role("button", name="Start").click()
    job, view = open_job(page, "with-units")
    facts = view.locator("xpath=.//dt[text()='Limits']/following-sibling::dd[1]")
    expect(facts).to_contain_text("Memory 256 MiB, CPU 100 %, Processes 512, /tmp 32 MiB, Disk 1024 MiB, Timeout 600 s")
    record = rest(lab, "GET", f"jobs/{job.get_attribute('data-job-id')}")
    assert (record["limits"]["memory_mb"], record["limits"]["timeout_s"], record["limits"]["tmp_mb"]) == (256, 600, 32)


def test_a_long_job_appears_live_is_stopped_and_deleted(lab, page):
    open_panel(page, lab)
    job = rest(lab, "POST", "jobs", {"command": ["sleep", "300"], "name": "long-one"})
    listed = row(page, "long-one")
    expect(listed.locator(".jw-badge")).to_have_text("running", timeout=30_000)
    expect(page.locator(".jw-status-item")).to_contain_text("1 running")
    listed.focus()
    page.keyboard.press("Enter")
    view = page.locator(".jw-job-view").filter(has_text="long-one")
    view.get_by_role("button", name="Stop").click()
    expect(view.locator(".jw-badge")).to_have_text("stopped by root", timeout=30_000)
    expect(listed.locator(".jw-badge")).to_have_text("stopped")
    expect(listed.locator(".jw-badge")).to_have_css("background-color", rgb(COLOURS["STOPPED"]))
    view.get_by_role("button", name="Delete").click()
    page.locator(".jp-Dialog").get_by_role("button", name="Delete").click()
    expect(listed).to_have_count(0, timeout=10_000)
    assert all(j["id"] != job["id"] for j in rest(lab, "GET", "jobs")["jobs"])


def test_a_failed_jobs_reason_is_shown_in_words(lab, page):
    open_panel(page, lab)
    code = "import time; time.sleep(1); b = bytearray(512 << 20)"
    rest(lab, "POST", "jobs", {"command": ["python3", "-c", code], "name": "hungry-one", "limits": {"memory_mb": 64}})
    listed = row(page, "hungry-one")
    expect(listed.locator(".jw-badge")).to_have_text("failed", timeout=30_000)
    expect(listed.locator(".jw-badge")).to_have_attribute("title", "killed: out of memory (limit 64 MiB)")
    expect(listed.locator(".jw-badge")).to_have_css("background-color", rgb(COLOURS["FAILED"]))
    expect(page.locator(".jp-Notification-Toast-error, .Toastify__toast--error").first).to_be_visible(timeout=10_000)
    page.locator("#jupyter-worker-panel .jw-filter").select_option("FAILED")
    expect(page.locator("#jupyter-worker-panel .jw-row")).not_to_have_count(0)
    # Waits out the redraw the filter causes (a snapshot of the rows could hold detached ones).
    expect(page.locator('#jupyter-worker-panel .jw-row .jw-badge:not([data-status="FAILED"])')).to_have_count(0)


def test_refusals_are_shown_in_the_form(lab, page):
    open_panel(page, lab)
    panel = page.locator("#jupyter-worker-panel")
    panel.get_by_role("button", name="New job").click()
    panel.get_by_role("button", name="Start").click()
    expect(panel.locator(".jw-form-error")).to_have_text("give a command to run")
    panel.locator("input[name=command]").fill("true")
    panel.locator("input[name=name]").fill("no/slashes")
    panel.get_by_role("button", name="Start").click()
    expect(panel.locator(".jw-form-error")).to_contain_text("The server refused the job: name:")
    expect(row(page, "no/slashes")).to_have_count(0)


def test_the_palette_and_the_dark_theme(lab, page):
    open_panel(page, lab)
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    panel = page.locator("#jupyter-worker-panel")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    background = panel.evaluate("node => getComputedStyle(node).backgroundColor")
    red, green, blue = (int(v) for v in background[background.index("(") + 1 : -1].split(",")[:3])
    assert red + green + blue < 3 * 128, background
    page.evaluate("window.jupyterapp.commands.execute('apputils:activate-command-palette')")
    page.locator(".lm-CommandPalette-input").fill("New Worker Job")
    entry = page.locator(".lm-CommandPalette-item").filter(has_text="New Worker Job")
    expect(entry).to_have_class(re.compile("lm-mod-active"), timeout=15_000)
    page.keyboard.press("Enter")  # the palette redraws its items as it filters: a click can land on a detached one
    expect(panel.locator("input[name=command]")).to_be_focused()
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
