"""A user of the hub logs in with their password, lands in JupyterLab, and runs a job from the
Worker panel: the browser's session token carries the worker scope the guide's config grants."""

from __future__ import annotations

import subprocess

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import chromium, screenshotted_page
from tests.hub.conftest import ALICE

pytestmark = [pytest.mark.hub, pytest.mark.browser]
PASSWORD = "Worker-Test-Password-1"


@pytest.fixture
def jp_asyncio_loop():
    """Playwright's sync API holds the thread's loop; no in-process server runs here."""


@pytest.fixture
def jp_server_cleanup():
    """See jp_asyncio_loop."""


@pytest.fixture
def page(hub, request):
    subprocess.run(["chpasswd"], input=f"{ALICE}:{PASSWORD}", text=True, check=True)
    with chromium() as browser, screenshotted_page(browser, request.node.name) as opened:
        yield opened


def test_a_user_logs_in_and_runs_a_job_from_the_panel_as_themselves(hub, page, users):
    page.goto(f"{hub.url}/hub/login")
    page.locator("input[name=username]").fill(ALICE)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[type=submit], button[type=submit]").first.click()
    page.wait_for_url(f"**/user/{ALICE}/lab**", timeout=120_000)
    page.locator('.lm-TabBar-tab[data-id="jupyter-worker-panel"]').click()
    panel = page.locator("#jupyter-worker-panel")
    expect(panel).to_be_visible(timeout=60_000)
    panel.get_by_role("button", name="New job").click()
    panel.locator("input[name=command]").fill("id -un")
    panel.locator("input[name=name]").fill("from-the-hub")
    panel.get_by_role("button", name="Start").click()
    job = panel.locator(".jw-row").filter(has_text="from-the-hub")
    expect(job.locator(".jw-badge")).to_have_text("done", timeout=60_000)  # the list's short word
    expect(job.locator(".jw-badge")).to_have_attribute("title", "exit code 0")
    job.click()
    view = page.locator(".jw-job-view").filter(has_text="from-the-hub")
    expect(view.locator(".jw-stdout")).to_have_text(f"{ALICE}\n", timeout=30_000)
