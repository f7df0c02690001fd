"""The executor's systemd unit (`jupyter-worker executor --install-service`) is docs/deployment.md's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jupyter_worker.executor import service_unit

DEPLOYMENT = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def documented_unit() -> str:
    text = DEPLOYMENT.read_text()
    found = re.search(r"```ini\n(.*?)```", text, re.DOTALL)
    assert found, "docs/deployment.md shows the unit in an ini block"
    return found.group(1)


def test_the_unit_is_the_one_the_deployment_guide_shows():
    unit = service_unit.unit_text("/opt/jupyter-worker/venv/bin/jupyter-worker", "/etc/jupyter-worker/executor.py")
    assert unit == documented_unit()


def test_the_unit_runs_the_jupyter_worker_of_this_environment_with_its_options_quoted():
    unit = service_unit.unit_text("/opt/j w/bin/jupyter-worker", "", ["--socket", "/run/x y.sock"])
    assert "ExecStart='/opt/j w/bin/jupyter-worker' executor --socket '/run/x y.sock'\n" in unit
    assert service_unit.command_of_this_environment().endswith("/jupyter-worker")


def test_the_unit_keeps_jobs_alive_across_a_restart_and_delegates_cgroups():
    unit = service_unit.unit_text("/usr/bin/jupyter-worker")
    assert "KillMode=process\n" in unit
    assert "Delegate=yes\n" in unit


def test_install_writes_the_unit_starts_it_and_waits_for_the_socket(tmp_path, monkeypatch):
    # systemctl stands in for systemd here: "enable --now" makes the socket, as the service would.
    socket = tmp_path / "executor.sock"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n[ "$1" = enable ] && touch {socket}\nexit 0\n'
    )
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    unit = tmp_path / "jupyter-worker.service"
    words = service_unit.install(str(socket), config_file="/etc/jw.py", unit_path=str(unit))
    assert "--config /etc/jw.py" in unit.read_text()
    assert unit.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "calls").read_text() == "daemon-reload\nenable --now jupyter-worker.service\n"
    assert str(socket) in words


def test_a_failing_systemctl_is_one_line_in_its_own_words(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\necho 'System has not been booted with systemd' >&2\nexit 1\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(RuntimeError) as raised:
        service_unit.install(str(tmp_path / "s.sock"), unit_path=str(tmp_path / "u.service"))
    assert str(raised.value) == "systemctl daemon-reload: System has not been booted with systemd"
