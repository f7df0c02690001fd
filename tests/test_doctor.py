"""`jupyter-worker doctor` for users: a verdict first (exit 0 when jobs can run from here), then
the executor and the caller's role, the server extension, the kernels' socket and kernelspec, the
network modes that work and why the others do not; then the host's detail. --json carries it all."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from jupyter_worker.sandbox.network import ipv4_forwarding
from tests.conftest import cli, is_root
from tests.executor.conftest import started_daemon

pytestmark = pytest.mark.skipif(not is_root(), reason="asks a real executor as the test users")


@pytest.fixture(scope="module")
def executor(users):
    with started_daemon([]) as daemon:
        yield daemon


def doctor(*args: str, **kwargs) -> tuple[int, dict, list[str]]:
    """The exit code, the JSON report and the text's lines of the same run's situation."""
    as_json = cli("doctor", "--json", *args, **kwargs)
    text = cli("doctor", *args, **kwargs)
    assert as_json.returncode == text.returncode and not text.stderr, text.stderr
    return text.returncode, json.loads(as_json.stdout), text.stdout.splitlines()


def test_a_user_is_told_first_that_they_can_run_jobs_and_as_whom(executor):
    code, report, lines = doctor(daemon=executor, user="jwtest-alice")
    assert code == 0 and report["ready"]
    assert report["executor"] | {"reachable": True, "user": "jwtest-alice", "role": "user"} == report["executor"]
    assert lines[0].startswith("jupyter-worker doctor: ready: the executor answers as jwtest-alice (user)")
    assert f"ok  executor at {executor.socket}: you are jwtest-alice, user (runs jobs and sees their own)" in lines
    assert lines.index("host (for the admin):") > lines.index("network modes:")


def test_a_viewer_is_told_they_may_read_jobs_but_not_run_them(executor):
    code, report, lines = doctor(daemon=executor, user="jwtest-carol")
    assert code == 1 and not report["ready"] and report["executor"]["role"] == "viewer"
    said = "not ready: the executor answers, but jwtest-carol (viewer) may read jobs, not run them"
    assert lines[0] == f"jupyter-worker doctor: {said}"


def test_no_executor_is_the_verdict_with_how_to_start_one_and_no_network_is_said_to_work():
    code, report, lines = doctor("--socket", "/nonexistent/executor.sock")  # after the verb, as users write it
    assert code == 1 and not report["ready"]
    assert lines[0].startswith("jupyter-worker doctor: not ready: no executor answers at /nonexistent/executor.sock")
    assert "start one as root: jupyter-worker executor" in lines[0]
    assert all(not mode["works"] for mode in report["networks"].values())
    assert report["host"]["cgroup"]["mode"] in ("v1", "v2", "hybrid")  # the admin detail is there still


def test_the_network_modes_say_which_work_for_this_user_and_why_the_others_do_not(executor):
    _, report, lines = doctor(daemon=executor, user="jwtest-alice")
    networks = report["networks"]
    assert networks["none"] == {"works": True, "what": "no network: loopback only"}
    assert not networks["host"]["works"] and "policy does not allow it you" in networks["host"]["why_not"]
    isolated = networks["isolated"]
    if "isolated" not in report["executor"]["network_modes"]:
        assert "this host cannot give it" in isolated["why_not"]
    elif not ipv4_forwarding():  # offered, yet a job would reach nothing: never listed as working
        assert not isolated["works"] and "IPv4 forwarding is off" in isolated["why_not"]
        assert "isolated" not in report["host"]["network_modes"]
    else:
        assert isolated["works"]
    _, root, _ = doctor(daemon=executor)
    assert root["networks"]["host"]["works"]  # root may use every mode
    assert any(line.startswith("  NO  host      the admin's policy") for line in lines)


def test_a_disabled_server_extension_is_named_with_where_and_the_command_that_enables_it(executor):
    config = tempfile.mkdtemp(prefix="jupyter-worker-config-")
    os.makedirs(os.path.join(config, "jupyter_server_config.d"))
    with open(os.path.join(config, "jupyter_server_config.d", "off.json"), "w") as f:
        json.dump({"ServerApp": {"jpserver_extensions": {"jupyter_worker": False}}}, f)
    # The user's folder comes before this environment's only where the environment is not preferred:
    # the doctor merges as the server does, so a word said in a folder that does not count is no answer.
    os.environ |= {"JUPYTER_CONFIG_DIR": config, "JUPYTER_PREFER_ENV_PATH": "0"}
    os.environ["JUPYTER_WORKER_SOCKET"] = executor.socket  # where a server's kernels would look
    try:
        code, report, lines = doctor(daemon=executor)
        os.environ["JUPYTER_PREFER_ENV_PATH"] = "1"
        _, outweighed, _ = doctor(daemon=executor)
    finally:
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_PREFER_ENV_PATH", "JUPYTER_WORKER_SOCKET"):
            del os.environ[name]
    assert outweighed["extension"]["enabled"] and outweighed["extension"]["where"] != config
    assert code == 0 and report["extension"]["enabled"] is False and report["extension"]["where"] == config
    assert lines[0].endswith("; but the server extension is not enabled (see below)")
    assert f"NO  server extension: disabled in {config}: jupyter server extension enable jupyter_worker" in lines
    _, enabled, _ = doctor(daemon=executor)
    assert enabled["extension"]["enabled"]  # this environment enables it (jupyter-config/)


def test_a_socket_set_in_the_servers_configuration_is_the_one_its_kernels_get(executor):
    config = tempfile.mkdtemp(prefix="jupyter-worker-config-")
    with open(os.path.join(config, "jupyter_server_config.py"), "w") as f:
        f.write(f"c.JupyterWorker.socket = {executor.socket!r}\n")
    os.environ |= {"JUPYTER_CONFIG_DIR": config, "JUPYTER_PREFER_ENV_PATH": "0"}
    try:
        _, report, _ = doctor()
    finally:
        del os.environ["JUPYTER_CONFIG_DIR"], os.environ["JUPYTER_PREFER_ENV_PATH"]
    assert report["kernels"]["server_socket"] == executor.socket and report["kernels"]["server_reachable"]


def test_kernels_are_told_which_socket_they_get_with_and_without_a_server(executor):
    os.environ["JUPYTER_WORKER_SOCKET"] = executor.socket
    try:
        _, report, lines = doctor()
    finally:
        del os.environ["JUPYTER_WORKER_SOCKET"]
    kernels = report["kernels"]
    assert kernels["server_socket"] == executor.socket and kernels["server_reachable"]
    assert kernels["default_socket"] == "/run/jupyter-worker/executor.sock"
    if not os.path.exists(kernels["default_socket"]):  # no executor at the default place on this machine
        assert not kernels["default_reachable"]
        assert (
            "NO  kernels started without a server or $JUPYTER_WORKER_SOCKET (papermill, nbclient): use "
            "/run/jupyter-worker/executor.sock: no executor answers there" in lines
        )
    assert kernels["kernelspec"]["name"] == "jupyter-worker"
