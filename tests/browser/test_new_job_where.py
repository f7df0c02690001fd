"""The New job form's "Where" choice is offered only where the executor offers Slurm (JupyterLab as
dev/start runs it, in chromium: its embedded executor has no Slurm backend). tests/slurm has the
form sending a job to a real cluster."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import new_job_form, open_job, open_panel, rest

pytestmark = pytest.mark.browser


def test_an_executor_without_slurm_shows_no_where_choice_and_the_form_runs_the_job_here(lab, page):
    assert "slurm" not in (rest(lab, "GET", "capabilities").get("backends") or [])
    open_panel(page, lab)
    panel = new_job_form(page)
    expect(panel.locator("input[name=command]")).to_be_visible()
    expect(panel.locator(".jw-where")).to_be_hidden()
    expect(panel.locator("select[name=backend]")).to_be_hidden()
    expect(panel.locator("select[name=partition]")).to_be_hidden()
    panel.locator("input[name=command]").fill("echo here")
    panel.locator("input[name=name]").fill("no-where-choice")
    panel.get_by_role("button", name="Start").click()
    job, view = open_job(page, "no-where-choice")
    expect(view.locator(".jw-badge")).to_have_text("exit code 0", timeout=30_000)
    expect(view.locator(".jw-facts")).not_to_contain_text("Where")
    assert " on " not in job.locator(".jw-sub").inner_text()  # no node: it ran here
    listed = [j for j in rest(lab, "GET", "jobs")["jobs"] if j["name"] == "no-where-choice"]
    assert [(j["backend"], j["node"], j["placement"]) for j in listed] == [("local", None, None)]
