"""The "Worker jobs" panel for daily use, at JupyterLab's default side-panel width: whole badge
words, columns that give way, buttons that look enabled or disabled, a job's title from its name
or a short command, the whole run's chart with labelled axes, and notifications as set in Settings
(never for a job on screen)."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import nbformat
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS, open_and_run_all, open_job, open_panel, place, rest, row

pytestmark = pytest.mark.browser

PANEL = "#jupyter-worker-panel"
TOASTS = ".jp-Notification-Toast-success, .jp-Notification-Toast-error, .jp-Notification-Toast-info, .Toastify__toast"
SETTINGS_PLUGIN = "jupyter-worker:panel"


@pytest.fixture(scope="module", autouse=True)
def executor_up(lab):
    """The embedded executor starts beside the server: wait until it answers."""
    deadline = time.monotonic() + 60
    while not rest(lab, "GET", "capabilities")["executor"]["available"]:
        assert time.monotonic() < deadline, "the embedded executor did not come up"
        time.sleep(0.3)


def set_notifications(lab, mode: str | None) -> None:
    """Settings > Worker jobs, as the Settings editor saves it (the settings REST API); None
    puts back the default. The page reads it when it loads."""
    raw = "{}" if mode is None else json.dumps({"notifications": mode})
    request = urllib.request.Request(
        f"{lab.url}/lab/api/settings/{SETTINGS_PLUGIN}",
        method="PUT",
        data=json.dumps({"raw": raw}).encode(),
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def wait_for(lab, job_id: str, statuses=("COMPLETED", "FAILED", "STOPPED"), timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = rest(lab, "GET", f"jobs/{job_id}")
        if record["status"] in statuses:
            return record
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {record['status']}")


def panel_shot(page: Page, name: str) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.locator(PANEL).screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"))


def cut_off(locator) -> list[str]:
    """The texts of the elements whose words do not fit them or stick out of the panel's right edge."""
    return locator.evaluate_all(
        """(nodes) => {
          const panel = document.querySelector('#jupyter-worker-panel').getBoundingClientRect();
          return nodes.filter(n => n.scrollWidth > n.clientWidth
              || n.getBoundingClientRect().right > panel.right + 0.5)
            .map(n => `${n.textContent} (${n.scrollWidth} > ${n.clientWidth})`);
        }"""
    )


def test_at_the_default_width_the_list_shows_whole_badge_words_and_short_titles(lab, page):
    done = rest(lab, "POST", "jobs", {"command": ["true"], "name": "daily-done"})
    failed = rest(lab, "POST", "jobs", {"command": ["sh", "-c", "exit 3"], "name": "daily-failed"})
    stopped = rest(lab, "POST", "jobs", {"command": ["sleep", "300"], "name": "daily-stopped"})
    running = rest(lab, "POST", "jobs", {"command": ["sleep", "300"], "name": "daily-running"})
    python = sys.executable
    runner = [python, "-u", "-m", "jupyter_worker.cell", "--", "import time\ntime.sleep(1)"]
    cell = rest(lab, "POST", "jobs", {"command": runner, "name": "demo.ipynb - import time"})
    unnamed = rest(lab, "POST", "jobs", {"command": [python, "-u", "-c", "pass"]})
    try:
        wait_for(lab, stopped["id"], ("RUNNING",))
        rest(lab, "POST", f"jobs/{stopped['id']}/stop", {})
        for job in (done, failed, stopped, cell, unnamed):
            wait_for(lab, job["id"])
        open_panel(page, lab)
        panel = page.locator(PANEL)
        expect(row(page, "daily-running").locator(".jw-badge")).to_have_text("running", timeout=30_000)
        width = panel.evaluate("n => n.clientWidth")
        # JupyterLab's default side panel is 250 px wide: the secondary columns give way.
        assert 200 <= width <= 300, width
        words = {"daily-done": "done", "daily-failed": "failed", "daily-stopped": "stopped", "daily-running": "running"}
        for name, word in words.items():
            badge = row(page, name).locator(".jw-badge")
            expect(badge).to_have_text(word)
        # The full words are in the badge's tooltip.
        expect(row(page, "daily-failed").locator(".jw-badge")).to_have_attribute("title", "exit code 3")
        assert cut_off(panel.locator(".jw-row .jw-badge")) == []
        assert panel.evaluate("n => n.scrollWidth <= n.clientWidth"), "the list is wider than the panel"
        shown = panel.locator(".jw-jobs").get_attribute("data-columns").split()
        assert shown[:2] == ["status", "job"] and "cpu" not in shown, shown
        expect(panel.locator("th.jw-col-cpu")).to_be_hidden()
        # A cell job by its name; an unnamed runner by its program's name, never the interpreter's path.
        expect(row(page, "demo.ipynb - import time").locator(".jw-label")).to_have_text("demo.ipynb - import time")
        labels = panel.locator(".jw-row .jw-label").all_inner_texts()
        assert not any("/opt/" in label or "jupyter_worker.cell" in label for label in labels), labels
        panel_shot(page, "panel_default_width")
        # The duration, whose column gave way, is in the row's second line.
        expect(row(page, "daily-done").locator(".jw-sub")).to_contain_text(" s · root · ")
        # Dragged wider: every column comes back.
        handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 200)
        page.mouse.down()
        page.mouse.move(box["x"] + 320, box["y"] + 200, steps=5)
        page.mouse.up()
        expect(panel.locator("th.jw-col-cpu")).to_be_visible(timeout=10_000)
        panel_shot(page, "panel_wide")
    finally:
        rest(lab, "POST", f"jobs/{running['id']}/stop", {})


def test_buttons_look_enabled_or_disabled(lab, page):
    job = rest(lab, "POST", "jobs", {"command": ["true"], "name": "daily-buttons"})
    wait_for(lab, job["id"])
    open_panel(page, lab)
    new_job = page.locator(PANEL).get_by_role("button", name="New job")
    _, view = open_job(page, "daily-buttons")
    stop, delete = view.get_by_role("button", name="Stop"), view.get_by_role("button", name="Delete")
    expect(stop).to_be_disabled()
    expect(delete).to_be_enabled()
    look = "n => { const s = getComputedStyle(n); return [s.opacity, s.cursor, s.backgroundColor, s.color]; }"
    stop_look, delete_look, new_look = stop.evaluate(look), delete.evaluate(look), new_job.evaluate(look)
    assert float(stop_look[0]) <= 0.6 and stop_look[1] == "not-allowed", stop_look
    assert float(delete_look[0]) == 1 and delete_look[1] == "pointer", delete_look
    assert stop_look[2:] != delete_look[2:]
    # "New job" is the panel's main action: opaque, a pointer and a coloured face.
    assert float(new_look[0]) == 1 and new_look[1] == "pointer", new_look
    assert new_look[2] not in ("rgba(0, 0, 0, 0)", "transparent"), new_look
    view.screenshot(path=os.path.join(ARTIFACTS, "job_view_buttons.png"))


def test_the_chart_covers_the_whole_run_with_labelled_axes_also_once_it_ended(lab, page):
    code = "import time\ntime.sleep(2)\nx = bytearray(40 << 20)\nfor i in range(40): x[i << 20] = 1\ntime.sleep(3)"
    job = rest(
        lab, "POST", "jobs", {"command": ["python3", "-c", code], "name": "daily-chart", "limits": {"memory_mb": 256}}
    )
    wait_for(lab, job["id"])
    open_panel(page, lab)
    _, view = open_job(page, "daily-chart")
    chart = view.locator("svg.jw-chart")
    expect(chart.locator("text.jw-axis-title")).to_have_text(["CPU %", "memory (limit 256 MiB)", "time since start"])
    expect(chart.locator("text.jw-time-tick").first).to_have_text("0 s")
    expect(chart.locator("text.jw-memory-tick").last).to_have_text("256 MiB")
    expect(chart.locator("text.jw-cpu-tick").last).to_have_text("100 %")
    # The chart uses the view's width, not a fixed stub.
    assert chart.evaluate("n => n.getBoundingClientRect().width") > 500
    memory = view.locator("xpath=.//dt[text()='Memory']/following-sibling::dd[1]")
    expect(memory).to_contain_text("peak")
    expect(memory).not_to_contain_text("now")
    try:
        history = rest(lab, "GET", f"jobs/{job['id']}/metrics")
    except urllib.error.HTTPError:
        history = None  # an executor without the metric history: the axes are all there is to check
    if history is not None and len(history["samples"]) >= 2:
        points = view.locator("polyline.jw-memory-line").get_attribute("points").split()
        assert len(points) == len(history["samples"])
        tops = [float(p.split(",")[1]) for p in points]
        assert min(tops) < max(tops), "the memory line is flat though the job allocated 40 MiB"
    view.screenshot(path=os.path.join(ARTIFACTS, "job_view_chart.png"))


def no_toast_for(page: Page, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert page.locator(TOASTS).count() == 0, page.locator(TOASTS).all_inner_texts()
        time.sleep(0.2)


def test_notifications_follow_the_setting_and_never_come_for_a_job_on_screen(lab, page):
    try:
        set_notifications(lab, "none")
        open_panel(page, lab)
        job = rest(lab, "POST", "jobs", {"command": ["sh", "-c", "sleep 1; exit 1"], "name": "daily-quiet"})
        expect(row(page, "daily-quiet").locator(".jw-badge")).to_have_text("failed", timeout=30_000)
        no_toast_for(page, 3)

        set_notifications(lab, None)  # the default: failures only
        open_panel(page, lab)
        rest(lab, "POST", "jobs", {"command": ["sh", "-c", "sleep 1"], "name": "daily-fine"})
        expect(row(page, "daily-fine").locator(".jw-badge")).to_have_text("done", timeout=30_000)
        no_toast_for(page, 3)
        rest(lab, "POST", "jobs", {"command": ["sh", "-c", "sleep 1; exit 2"], "name": "daily-loud"})
        expect(page.locator(".jp-Notification-Toast-error, .Toastify__toast--error").first).to_be_visible(
            timeout=30_000
        )
        expect(page.locator(TOASTS).first).to_contain_text("daily-loud")

        set_notifications(lab, "all")
        open_panel(page, lab)
        rest(lab, "POST", "jobs", {"command": ["sh", "-c", "sleep 1"], "name": "daily-all"})
        expect(page.locator(".jp-Notification-Toast-success, .Toastify__toast--success").first).to_be_visible(
            timeout=30_000
        )
        # A job whose view is on screen: the user watches it end, so no notification even with "all".
        expect(page.locator(TOASTS)).to_have_count(0, timeout=15_000)  # closes by itself after 5 s
        rest(lab, "POST", "jobs", {"command": ["sh", "-c", "sleep 3; exit 1"], "name": "daily-watched"})
        _, view = open_job(page, "daily-watched")
        expect(view.locator(".jw-badge")).to_have_text("exit code 1", timeout=30_000)
        no_toast_for(page, 3)
        assert job["id"]
    finally:
        set_notifications(lab, None)


def test_a_queued_job_shows_its_place_and_why_it_waits(lab, page):
    started = []
    try:
        # Long jobs until one waits (the user's share of the slots, or all of them, in use).
        for n in range(8):
            started.append(rest(lab, "POST", "jobs", {"command": ["sleep", "300"], "name": f"daily-slot-{n}"}))
            if started[-1]["status"] == "QUEUED":
                break
        waiting = started[-1]
        assert waiting["status"] == "QUEUED", "no job waited with 8 running"
        assert waiting["queue"]["position"] == 1 and waiting["queue"]["reason"], waiting["queue"]
        open_panel(page, lab)
        listed = row(page, waiting["name"])
        expect(listed.locator(".jw-badge")).to_have_text("queued", timeout=30_000)
        expect(listed.locator(".jw-sub")).to_have_text(f"next to start: {waiting['queue']['reason']}")
        listed.click()
        view = page.locator(".jw-job-view").filter(has_text=waiting["name"])
        facts = view.locator("xpath=.//dt[text()='Queue']/following-sibling::dd[1]")
        expect(facts).to_have_text(f"next to start: {waiting['queue']['reason']}")
        expect(view.locator(".jw-chart-empty")).to_have_text("not started yet")
        panel_shot(page, "panel_queued")
    finally:
        for job in reversed(started):
            rest(lab, "POST", f"jobs/{job['id']}/stop", {})


def test_no_notification_for_a_cell_whose_widget_is_on_screen(lab, page):
    """The %%worker widget the user watches tells the ending; a job elsewhere still notifies."""
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext jupyter_worker"),
            nbformat.v4.new_code_cell("%%worker --name watched-cell --bash\nsleep 4; exit 1"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    try:
        set_notifications(lab, "all")
        place(lab, "watched.ipynb", notebook)
        open_and_run_all(page, lab, "watched.ipynb")
        # The widget while it runs, its HTML form once it ended: the same output, on screen.
        output = page.locator(".jp-Notebook .jp-OutputArea-output").filter(has_text="watched-cell")
        expect(output.get_by_text("running", exact=True).first).to_be_visible(timeout=60_000)
        expect(output.get_by_text("exit code 1").first).to_be_visible(timeout=60_000)
        no_toast_for(page, 3)
        rest(lab, "POST", "jobs", {"command": ["sh", "-c", "sleep 1; exit 1"], "name": "unwatched-one"})
        expect(page.locator(TOASTS).filter(has_text="unwatched-one")).to_be_visible(timeout=30_000)
        assert page.locator(TOASTS).filter(has_text="watched-cell").count() == 0
    finally:
        set_notifications(lab, None)


def test_a_running_jobs_chart_starts_from_its_history_and_grows_live(lab, page):
    code = "import time\nx = []\nfor i in range(8):\n    x.append(b'x' * (8 << 20))\n    time.sleep(1)"
    job = rest(lab, "POST", "jobs", {"command": ["python3", "-c", code], "name": "daily-live"})
    try:
        wait_for(lab, job["id"], ("RUNNING",))
        time.sleep(3)  # samples the history holds before the view opens
        open_panel(page, lab)
        _, view = open_job(page, "daily-live")
        line = view.locator("polyline.jw-memory-line")
        count = "n => n.getAttribute('points').trim().split(/\\s+/).length"
        node = "document.querySelector('.jw-job-view polyline.jw-memory-line')"
        points = f"(() => {{ const n = {node}; return n ? ({count})(n) : 0; }})()"
        page.wait_for_function(f"() => {points} >= 2", timeout=10_000)
        first = line.evaluate(count)
        page.wait_for_function(f"() => {points} > {first}", timeout=15_000)
        cpu = view.locator("xpath=.//dt[text()='CPU']/following-sibling::dd[1]")
        expect(cpu).to_contain_text("now")
        view.screenshot(path=os.path.join(ARTIFACTS, "job_view_running_chart.png"))
    finally:
        rest(lab, "POST", f"jobs/{job['id']}/stop", {})
