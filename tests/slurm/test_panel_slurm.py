"""The panel's New job form sends a job to a real Slurm cluster: JupyterLab (in chromium) on a head
executor with the Slurm backend on offers "Where" with Slurm's partitions, and the job it starts
runs on the node its partition names, which the list and the job's view say."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    ARTIFACTS,
    Lab,
    chromium,
    new_job_form,
    open_job,
    open_panel,
    rest,
    screenshotted_page,
)
from tests.executor.conftest import Daemon, started_daemon
from tests.slurm.conftest import head_flags

pytestmark = [pytest.mark.slurm, pytest.mark.browser]


@pytest.fixture(scope="module")
def head(slurm_cluster) -> Iterator[Daemon]:
    with started_daemon(head_flags(slurm_cluster)) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def lab_on_head(head) -> Iterator[Lab]:
    running = Lab(socket=head.socket)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(lab_on_head, request):
    with chromium() as browser, screenshotted_page(browser, request.node.name) as opened:
        yield opened


def test_the_form_offers_slurm_and_its_partitions_and_the_job_runs_on_the_node_it_names(
    slurm_cluster, lab_on_head, page
):
    lab = lab_on_head
    offered = rest(lab, "GET", "capabilities")
    assert "slurm" in offered["backends"]
    assert "only-n2" in offered["slurm"]["partitions"]
    open_panel(page, lab)
    panel = new_job_form(page)
    where = panel.locator("select[name=backend]")
    expect(where).to_be_visible(timeout=30_000)
    expect(panel.locator("select[name=partition]")).to_be_hidden()  # Local is the default
    where.select_option("slurm")
    expect(panel.locator("select[name=partition] option[value=only-n2]")).to_have_count(1)
    panel.locator("select[name=partition]").select_option("only-n2")
    panel.locator("input[name=command]").fill("echo from the cluster")
    panel.locator("input[name=name]").fill("panel-on-slurm")
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "test_the_form_offers_slurm_the_form.png"))
    panel.get_by_role("button", name="Start").click()
    job, view = open_job(page, "panel-on-slurm")
    expect(view.locator(".jw-badge")).to_have_text("exit code 0", timeout=60_000)
    expect(view.locator(".jw-log")).to_contain_text("from the cluster")
    expect(view.locator(".jw-facts")).to_contain_text("on n2 (partition only-n2)")
    expect(job.locator(".jw-sub")).to_contain_text("on n2")
    listed = [j for j in rest(lab, "GET", "jobs")["jobs"] if j["name"] == "panel-on-slurm"]
    assert [(j["backend"], j["node"], j["placement"]["partition"]) for j in listed] == [("slurm", "n2", "only-n2")]
    assert listed[0]["placement"]["slurm_job_id"]
