"""JupyterLab as `dev/start` runs it (as root, embedded executor), driven by Debian's chromium
through Playwright. Screenshots go to test-artifacts/ (or $JUPYTER_WORKER_ARTIFACTS)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import nbformat
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import DEMO, free_port

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.environ.get(
    "JUPYTER_WORKER_ARTIFACTS", os.path.join(os.path.dirname(__file__), "..", "..", "test-artifacts")
)

SETTINGS = {
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


class Lab:
    """`jupyter lab` on loopback in a folder of its own; the extension starts an embedded executor,
    or talks to the executor at socket when one is given (tests/slurm: a head executor)."""

    def __init__(self, socket: str = "") -> None:
        self.root = tempfile.mkdtemp(prefix="jupyter-worker-lab-")
        os.chmod(self.root, 0o755)
        self.state = tempfile.mkdtemp(prefix="jupyter-worker-lab-state-")
        self.port, self.token = free_port(), "browser-test-token"
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": os.path.join(self.state, "config"),
            "JUPYTER_RUNTIME_DIR": os.path.join(self.state, "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": self._settings(),
        }
        env.pop("JUPYTER_WORKER_SOCKET", None)
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--allow-root",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            f"--JupyterWorker.socket={socket or f'{self.state}/executor.sock'}",
            f"--JupyterWorker.embedded_state_dir={self.state}/executor",
        ]
        if socket:
            command.append("--JupyterWorker.embedded_executor=False")
        self.log = open(os.path.join(self.state, "lab.log"), "wb")
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_until_up()

    def _settings(self) -> str:
        """Every cell drawn (no windowing, so off-screen widgets are in the page) and no news popup."""
        folder = os.path.join(self.state, "settings")
        for plugin, values in SETTINGS.items():
            package, name = plugin.split(":")
            os.makedirs(os.path.join(folder, package), exist_ok=True)
            with open(os.path.join(folder, package, f"{name}.jupyterlab-settings"), "w") as f:
                json.dump(values, f)
        return folder

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(
                    f"{self.url}/api/worker/capabilities", headers={"Authorization": f"token {self.token}"}
                )
                with urllib.request.urlopen(request, timeout=5):
                    return
            except (OSError, urllib.error.HTTPError):
                if self.process.poll() is not None:
                    break
                time.sleep(0.3)
        raise AssertionError("JupyterLab did not come up:\n" + self.server_log())

    def server_log(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()[-5000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(users):
    running = Lab()
    try:
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium under Playwright (Playwright's own browser download is not used)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (dev/test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def screenshotted_page(browser: Browser, name: str) -> Iterator[Page]:
    """A fresh browser page; a screenshot of it is kept under the test's name, pass or fail."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    try:
        yield opened
    finally:
        os.makedirs(ARTIFACTS, exist_ok=True)
        opened.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)
        context.close()


@pytest.fixture(scope="module")
def browser(lab):
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, request):
    with screenshotted_page(browser, request.node.name) as opened:
        yield opened


@pytest.fixture
def jp_asyncio_loop():
    """These tests run no in-process server, and Playwright's sync API holds the thread's loop."""


@pytest.fixture
def jp_server_cleanup():
    """See jp_asyncio_loop: nothing of pytest-jupyter's to clean up here."""


def rest(lab, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"token {lab.token}"}
    request = urllib.request.Request(f"{lab.url}/api/worker/{path}", method=method, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def rgb(colour: str) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def open_panel(page: Page, lab) -> None:
    page.goto(f"{lab.url}/lab?reset&token={lab.token}")
    page.locator('.lm-TabBar-tab[data-id="jupyter-worker-panel"]').click()
    expect(page.locator("#jupyter-worker-panel")).to_be_visible(timeout=60_000)


def row(page: Page, name: str):
    return page.locator("#jupyter-worker-panel .jw-row").filter(has_text=name)


def open_job(page: Page, name: str):
    """Click the job's row once it is listed; returns the row and the job's view."""
    job = row(page, name)
    expect(job).to_have_count(1, timeout=30_000)
    job.click()
    return job, page.locator(".jw-job-view").filter(has_text=name)


NOTEBOOK_READY = """(name) => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return panel && panel.context && panel.context.path === name
    && panel.sessionContext.session?.kernel?.status === 'idle';
}"""
ALL_EXECUTED = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .every(c => c.model.type !== 'code' || c.model.executionCount !== null)"""


def open_and_run_all(page: Page, lab, name: str) -> None:
    """Opens the notebook alone (a fresh workspace) and runs every cell, as Run > Run All Cells does."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}")
    page.wait_for_function(NOTEBOOK_READY, arg=name, timeout=90_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(ALL_EXECUTED, timeout=120_000)


def place(lab, name: str, notebook: nbformat.NotebookNode | None = None) -> None:
    path = os.path.join(lab.root, name)
    if notebook is None:
        shutil.copy(DEMO, path)
    else:
        nbformat.write(notebook, path)
    os.chmod(path, 0o644)


def new_job_form(page: Page):
    panel = page.locator("#jupyter-worker-panel")
    if not panel.is_visible():  # a click on the tab of the panel shown would close the sidebar
        page.locator('.lm-TabBar-tab[data-id="jupyter-worker-panel"]').click()
    if not panel.locator(".jw-form").is_visible():
        panel.get_by_role("button", name="New job").click()
    return panel
