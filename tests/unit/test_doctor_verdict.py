"""The doctor's first line: ready or not, and what stands in the way, from the checks' findings."""

from __future__ import annotations

from typing import Any

from jupyter_worker.doctor import render, verdict

HOST = {
    "root": False,
    "kernel": "6.1",
    "cgroup": {"mode": "v2", "root": "/sys/fs/cgroup", "hierarchies": [], "tracking": "v2", "kill": "cgroup.kill"},
    "native_init": {"path": "/venv/jupyter_worker/sandbox/native/jw-init", "why_not": None},
    "namespaces": ["pid"],
    "seccomp": True,
    "limits": {},
    "network_modes": ["none", "host"],
    "isolated": {"why_not": "only root can try it", "ipv4_forwarding": False},
    "disk": {"enforced": True, "why_not": None},
    "io_devices": {},
}


def report(role: str | None = "user", extension: bool = True, server: bool = True) -> dict[str, Any]:
    executor = {"socket": "/run/x.sock", "reachable": role is not None}
    if role:
        executor |= {"user": "alice", "role": role}
    else:
        executor["why_not"] = "no executor answers at /run/x.sock (No such file or directory)"
    why = None if extension else "not enabled in any of /etc/jupyter: jupyter server extension enable jupyter_worker"
    spec = {"name": "jupyter-worker", "installed": False, "why_not": "not installed"}
    found = {
        "executor": executor,
        "extension": {"enabled": extension, "where": "/etc/jupyter" if extension else None, "why_not": why},
        "kernels": {
            "server_socket": "/run/x.sock",
            "server_reachable": server,
            "default_socket": "/run/x.sock",
            "default_reachable": server,
            "kernelspec": spec,
        },
        "networks": {
            "none": {"works": bool(role), "what": "no network: loopback only"},
            "host": {"works": False, "why_not": "the admin's policy does not allow it you (allowed_networks)"},
            "isolated": {"works": False, "why_not": "offered, but IPv4 forwarding is off"},
        },
        "host": HOST,
    }
    found["ready"], found["verdict"] = verdict(found)
    return found


def test_a_user_who_can_run_jobs_reads_ready_and_the_networks_that_work():
    assert verdict(report()) == (True, "ready: the executor answers as alice (user); networks: none")


def test_what_stands_in_the_way_of_a_ready_user_follows_the_ready():
    ready, line = verdict(report(extension=False, server=False))
    assert ready and line.endswith(
        "; but the server extension is not enabled, a Jupyter server's kernels will not find the executor (see below)"
    )


def test_no_executor_or_a_viewer_is_not_ready():
    assert verdict(report(role=None)) == (
        False,
        "not ready: no executor answers at /run/x.sock (No such file or directory)",
    )
    assert verdict(report(role="viewer"))[0] is False


def test_the_text_starts_with_the_verdict_and_ends_with_the_admins_detail():
    lines = render(report(extension=False)).splitlines()
    assert lines[0] == "jupyter-worker doctor: " + report(extension=False)["verdict"]
    assert (
        "NO  server extension: not enabled in any of /etc/jupyter: jupyter server extension enable jupyter_worker"
        in lines
    )
    assert "  NO  isolated  offered, but IPv4 forwarding is off" in lines
    assert "NO  kernelspec jupyter-worker: not installed" in lines
    assert lines.index("host (for the admin):") < lines.index("  cgroup mode:      v2 (under /sys/fs/cgroup)")
