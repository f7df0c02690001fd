"""The jupyter-worker command: doctor reports, sandbox runs, bad input gets one line and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import is_root

CLI = [sys.executable, "-m", "jupyter_worker.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, timeout=60)


def test_doctor_reports_the_cgroup_layout_and_what_is_enforced():
    report = json.loads(cli("doctor", "--json").stdout)
    assert report["cgroup"]["mode"] in ("v1", "v2", "hybrid")
    assert set(report["limits"]) == {"memory", "cpu", "pids", "io", "cpuset"}
    assert "pid" in report["namespaces"]
    text = cli("doctor").stdout
    assert "cgroup mode:" in text and "limits:" in text


@pytest.mark.skipif(not is_root(), reason="the sandbox engine needs root")
def test_sandbox_verb_returns_the_jobs_exit_code_and_passes_output_through():
    result = cli("sandbox", "--max-memory", "64", "--env", "GREETING=hi", "--", "sh", "-c", 'echo "$GREETING"; exit 3')
    assert result.returncode == 3
    assert result.stdout == "hi\n"


@pytest.mark.skipif(not is_root(), reason="the sandbox engine needs root")
def test_sandbox_verb_reports_how_a_job_ended_as_json():
    result = cli("sandbox", "--json", "--timeout", "1s", "--", "sleep", "30")
    outcome = json.loads(result.stderr)
    assert outcome["reason"] == "timeout" and outcome["signal"] == 15
    assert result.returncode == 128 + 15


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sandbox", "--max-memory", "3", "--", "true"], "memory limit (MiB): 3 must be at least 8"),
        (["sandbox", "--timeout", "soon", "--", "true"], "--timeout: 'soon' is not a duration"),
        (["sandbox", "--env", "NOPE", "--", "true"], "env: 'NOPE' is not NAME=VALUE"),
        (["sandbox", "--mount", "/a:/proc", "--", "true"], "mount destination: /proc is reserved"),
        (["sandbox"], "no command given"),
    ],
)
def test_bad_input_gets_one_clear_line(args, message):
    result = cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
