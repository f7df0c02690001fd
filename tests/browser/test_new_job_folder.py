"""The New job form runs a user's script: its Folder is the file browser's current folder (JupyterLab
as dev/start runs it, in chromium)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS, new_job_form, open_job, open_panel

pytestmark = pytest.mark.browser

SCRIPT = """import os
print("trained in", os.getcwd())
print(open("data/epochs.txt").read().strip(), "epochs")
"""


@pytest.fixture(scope="module")
def project(lab) -> str:
    """A folder of the server's root with a script that reads a file beside it."""
    folder = os.path.join(lab.root, "proj")
    os.makedirs(os.path.join(folder, "data"), mode=0o755)
    with open(os.path.join(folder, "train.py"), "w") as f:
        f.write(SCRIPT)
    with open(os.path.join(folder, "data", "epochs.txt"), "w") as f:
        f.write("3\n")
    for path in (folder, os.path.join(folder, "data")):
        os.chmod(path, 0o755)  # the lab runs as root, its jobs as nobody
    return folder


def browse(page: Page, *names: str) -> None:
    """Show the file browser, go to the server's root and open the folders one after the other, as
    a user would."""
    page.locator('.lm-TabBar-tab[data-id="filebrowser"]').click()
    page.locator("#filebrowser .jp-BreadCrumbs-home").click()
    for name in names:
        item = page.locator(".jp-DirListing-item").filter(has=page.locator(".jp-DirListing-itemText", has_text=name))
        item.first.dblclick()
        expect(page.locator(".jp-BreadCrumbs")).to_contain_text(name)


def test_the_form_runs_a_script_from_the_folder_the_file_browser_shows(lab, project, page):
    open_panel(page, lab)
    browse(page, "proj")
    panel = new_job_form(page)
    expect(panel.locator("input[name=folder]")).to_have_value("proj")
    panel.locator("input[name=command]").fill("python3 train.py")
    panel.locator("input[name=name]").fill("script-from-folder")
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "test_the_form_runs_a_script_from_the_folder_the_form.png"))
    panel.get_by_role("button", name="Start").click()
    _, view = open_job(page, "script-from-folder")
    expect(view.locator(".jw-badge")).to_have_text("exit code 0", timeout=30_000)
    expect(view.locator(".jw-log")).to_contain_text(f"trained in {os.path.realpath(project)}\n3 epochs")


def test_the_folder_follows_the_browser_until_the_user_types_one_and_a_bad_one_is_refused_in_the_form(
    lab, project, page
):
    open_panel(page, lab)
    panel = new_job_form(page)
    folder = panel.locator("input[name=folder]")
    expect(folder).to_have_value("")
    browse(page, "proj", "data")
    panel = new_job_form(page)
    expect(folder).to_have_value("proj/data")
    folder.fill("../elsewhere")
    browse(page, "proj")
    panel = new_job_form(page)
    expect(folder).to_have_value("../elsewhere")
    panel.locator("input[name=command]").fill("true")
    panel.locator("textarea[name=mounts]").fill("data:/data\nnot-a-mount")
    panel.get_by_role("button", name="Start").click()
    expect(panel.locator(".jw-form-error")).to_have_text(
        "mount: 'not-a-mount' is not SRC:DST, SRC:DST:ro or SRC:DST:rw"
    )
    panel.locator("textarea[name=mounts]").fill("data:/data")
    panel.get_by_role("button", name="Start").click()
    expect(panel.locator(".jw-form-error")).to_have_text(
        "The server refused the job: folder: '../elsewhere' must not contain '..'"
    )
