"""`jupyter-worker executor --install-service`: the executor as a systemd service, in one command.

The unit is docs/deployment.md's: root, `KillMode=process` (jobs' supervisors outlive a restart of
the daemon, which reattaches to them), `Delegate=yes` (a cgroup subtree of its own on cgroup v2),
its socket folder kept across restarts. It runs the `jupyter-worker` of the environment the
command was run from, so a node of a Slurm cluster is set up with that environment's one command
(docs/slurm.md).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

UNIT_NAME = "jupyter-worker.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
DEFAULT_CONFIG = "/etc/jupyter-worker/executor.py"
SOCKET_WAIT_S = 30.0


def command_of_this_environment() -> str:
    """The `jupyter-worker` script beside this Python (the venv's, not the Python it links to)."""
    return os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "jupyter-worker")


def unit_text(command: str, config_file: str = "", options: list[str] | None = None) -> str:
    """The unit running `command executor [--config FILE] [options]` as docs/deployment.md's."""
    argv = [command, "executor"]
    if config_file:
        argv += ["--config", config_file]
    argv += options or []
    return (
        "[Unit]\n"
        "Description=jupyter-worker executor (sandboxed jobs for Jupyter)\n"
        "After=local-fs.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={shlex.join(argv)}\n"
        "Restart=on-failure\n"
        "KillMode=process\n"
        "Delegate=yes\n"
        "RuntimeDirectory=jupyter-worker\n"
        "RuntimeDirectoryPreserve=yes\n"
        "StateDirectory=jupyter-worker\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def install(socket: str, config_file: str = "", options: list[str] | None = None, unit_path: str = UNIT_PATH) -> str:
    """Write the unit (0644, replacing one of the same name), reload systemd, enable and start the
    service, and wait for its socket. Returns what was done, in words; raises RuntimeError with
    systemctl's own words, or when the socket does not appear."""
    if not config_file and os.path.isfile(DEFAULT_CONFIG):
        config_file = DEFAULT_CONFIG
    text = unit_text(command_of_this_environment(), config_file, options)
    partial = f"{unit_path}.partial"
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644), "w") as f:
        f.write(text)
    os.chmod(partial, 0o644)
    os.replace(partial, unit_path)
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT_NAME]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            words = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"{shlex.join(argv)}: {words[0] if words else f'exit status {done.returncode}'}")
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not os.path.exists(socket):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service started but {socket} did not appear: see journalctl -u {UNIT_NAME}")
        time.sleep(0.2)
    return f"installed {unit_path} and started it: the executor listens on {socket}"
