"""`jupyter-worker doctor`: can I use jupyter-worker here, and if not, what to do - a one-line
verdict first, then each check a user depends on, then the host's detail for the admin.

The checks, each with what it found and, when it fails, the fix:
- the executor: does one answer at the socket (--socket, $JUPYTER_WORKER_SOCKET or the default),
  and as whom (the role: user, viewer - may read but not run - or admin);
- the server extension: is `jupyter_worker` enabled in this environment's Jupyter configuration
  (the same merge `jupyter server extension list` and the server make, no subprocess);
- the kernels: a notebook server's kernels get $JUPYTER_WORKER_SOCKET from the extension (its
  socket, the same default unless configured); kernels started without a server (papermill,
  nbclient) use the default socket; and the `jupyter-worker` kernelspec other environments use;
- the network modes: which of none, host and isolated work for this user here, and why not.
Nothing is changed; only the admin detail (sandbox/doctor.py) needs root to be complete.
"""

from __future__ import annotations

from typing import Any

from . import kernelspec
from .client import DEFAULT_SOCKET, Client, socket_path
from .errors import WorkerError
from .sandbox.doctor import diagnose
from .sandbox.doctor import render as render_host
from .sandbox.network import ipv4_forwarding

EXTENSION = "jupyter_worker"
ROLE_WORDS = {
    "user": "runs jobs and sees their own",
    "viewer": "may read every job but run none",
    "admin": "runs jobs and sees and stops everyone's",
}
NETWORK_WORDS = {
    "none": "no network: loopback only",
    "host": "the host's network, as the host's own processes",
    "isolated": "an address of its own behind the host (NAT), filtered by the admin's egress rules",
}


def check_executor(socket: str | None = None) -> dict[str, Any]:
    """Whether an executor answers at the socket, and who this caller is to it."""
    path = socket_path(socket)
    found: dict[str, Any] = {"socket": path, "reachable": False}
    try:
        with Client(path, timeout=10) as client:
            offered = client.capabilities(whole=True)
            identity = client.identity
        policy = offered.get("policy") or {}
    except WorkerError as exc:
        return found | {"why_not": exc.message}
    except OSError as exc:  # a folder it may not enter, a timeout
        return found | {"why_not": f"cannot reach {path}: {exc.strerror or exc}"}
    return found | {
        "reachable": True,
        "user": identity.get("user"),
        "role": identity.get("role"),
        "allowed_networks": policy.get("allowed_networks", []),
        "network_modes": policy.get("network_modes", []),
        "default_network": policy.get("default_network"),
        "backends": offered.get("backends", ["local"]),
        "slurm": offered.get("slurm"),
    }


def check_extension() -> dict[str, Any]:
    """Whether the server extension is enabled for a Jupyter server of this environment, and where
    that is said: the configuration folders merged as jupyter_server merges them (the first folder
    of jupyter_config_path wins)."""
    try:
        from jupyter_core.paths import jupyter_config_path  # noqa: PLC0415 - only where Jupyter is
        from jupyter_server.extension.config import ExtensionConfigManager  # noqa: PLC0415
    except ImportError as exc:
        return {"enabled": False, "where": None, "why_not": f"Jupyter Server is not installed here ({exc.name})"}
    paths = jupyter_config_path()
    enabled = bool(ExtensionConfigManager(read_config_path=paths).get_jpserver_extensions().get(EXTENSION))
    where = None
    for path in paths:  # highest precedence first: the folder whose word counts
        said = ExtensionConfigManager(read_config_path=[path]).get_jpserver_extensions().get(EXTENSION)
        if said is not None:
            where = path
            break
    why_not = None
    if not enabled:
        how = "disabled in " + where if where else "not enabled in any of " + ", ".join(paths)
        why_not = f"{how}: jupyter server extension enable {EXTENSION}"
    return {"enabled": enabled, "where": where, "why_not": why_not}


def configured_socket() -> str | None:
    """c.JupyterWorker.socket in the Jupyter server's configuration of this environment and user,
    read as the server reads it (its config files are the user's own), or None."""
    try:
        from jupyter_core.application import JupyterApp  # noqa: PLC0415

        class ServerConfig(JupyterApp):
            name = "jupyter-server"
            config_file_name = "jupyter_server_config"

        app = ServerConfig()
        app.load_config_file()
        value = app.config.get("JupyterWorker", {}).get("socket")
    except Exception:  # a broken config file is the server's to report; the doctor goes on
        return None
    return value if isinstance(value, str) and value else None


def check_kernels(executor: dict[str, Any]) -> dict[str, Any]:
    """The socket kernels will use, and whether it answers: under a server, the one the extension
    passes them (its c.JupyterWorker.socket, else $JUPYTER_WORKER_SOCKET or the default); without
    one (papermill, nbclient), theirs or the default. And the kernelspec."""
    server_socket = configured_socket() or socket_path()
    default = executor if executor["socket"] == DEFAULT_SOCKET else check_executor(DEFAULT_SOCKET)
    served = executor if executor["socket"] == server_socket else check_executor(server_socket)
    spec = kernelspec.found()
    problem = spec.pop("problem")
    if not spec["installed"]:
        spec["why_not"] = problem or "not installed (needed by papermill, nbclient from other environments): "
        spec["why_not"] += "" if problem else "jupyter-worker kernelspec install"
    elif problem or not spec["this_environment"] or not spec["magics"]:
        if not problem:
            problem = "it does not load the magics"
            if not spec["this_environment"]:
                problem = f"it runs {spec['python']}, not this environment's Python"
        spec["why_not"] = f"{problem}; reinstall: jupyter-worker kernelspec install"
    return {
        "server_socket": server_socket,
        "server_reachable": served["reachable"],
        "default_socket": DEFAULT_SOCKET,
        "default_reachable": default["reachable"],
        "kernelspec": {"name": kernelspec.NAME, **spec},
    }


def check_networks(executor: dict[str, Any], host: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each mode: whether a job of this user gets it here, and if not, why (and whose fix it is).
    Why the host cannot give isolated only root can find out (the probe makes a network namespace)."""
    modes: dict[str, dict[str, Any]] = {}
    forwarding = ipv4_forwarding()
    for mode, words in NETWORK_WORDS.items():
        if not executor["reachable"]:
            modes[mode] = {"works": False, "why_not": "no executor answers"}
        elif mode not in executor["allowed_networks"]:
            modes[mode] = {"works": False, "why_not": "the admin's policy does not allow it you (allowed_networks)"}
        elif mode not in executor["network_modes"]:
            why = host["isolated"]["why_not"] if host["root"] else None
            modes[mode] = {
                "works": False,
                "why_not": f"this host cannot give it: {why}"
                if why
                else "this host cannot give it (an admin's "
                "fix: sudo jupyter-worker doctor says why; the bridge needs nftables and veth)",
            }
        elif mode == "isolated" and not forwarding:
            modes[mode] = {
                "works": False,
                "why_not": "offered, but IPv4 forwarding is off (sysctl net.ipv4.ip_forward=1, an admin's fix): "
                "such a job reaches nothing",
            }
        else:
            modes[mode] = {"works": True, "what": words}
    return modes


def diagnose_all(socket: str | None = None, cgroup_root: str = "/sys/fs/cgroup") -> dict[str, Any]:
    """The whole report, JSON-ready: the verdict, each check, and the host's detail."""
    executor, host = check_executor(socket), diagnose(cgroup_root)
    report = {
        "executor": executor,
        "extension": check_extension(),
        "kernels": check_kernels(executor),
        "networks": check_networks(executor, host),
        "host": host,
    }
    report["ready"], report["verdict"] = verdict(report)
    return report


def verdict(report: dict[str, Any]) -> tuple[bool, str]:
    """(whether jobs can be run from here, the one line that says so and what stands in the way)."""
    executor, kernels = report["executor"], report["kernels"]
    if not executor["reachable"]:
        return False, f"not ready: {executor['why_not']}"
    who = f"{executor['user']} ({executor['role']})"
    if executor["role"] == "viewer":
        return False, f"not ready: the executor answers, but {who} may read jobs, not run them"
    working = [mode for mode, check in report["networks"].items() if check["works"]]
    line = f"ready: the executor answers as {who}; networks: {', '.join(working)}"
    missing = []
    if not report["extension"]["enabled"]:
        missing.append("the server extension is not enabled")
    if not kernels["server_reachable"]:
        missing.append("a Jupyter server's kernels will not find the executor")
    return True, line + (f"; but {', '.join(missing)} (see below)" if missing else "")


def _check(ok: bool, text: str) -> str:
    return f"{'ok ' if ok else 'NO '} {text}"


def render(report: dict[str, Any]) -> str:
    """The lines `jupyter-worker doctor` prints: the verdict, the user's checks, the admin detail."""
    executor, extension, kernels = report["executor"], report["extension"], report["kernels"]
    lines = [f"jupyter-worker doctor: {report['verdict']}", ""]
    if executor["reachable"]:
        role = executor["role"]
        text = f"executor at {executor['socket']}: you are {executor['user']}, {role} ({ROLE_WORDS.get(role, role)})"
        lines.append(_check(role != "viewer", text))
    else:
        lines.append(_check(False, f"executor: {executor['why_not']}"))
    if extension["enabled"]:
        lines.append(_check(True, f"server extension: enabled (in {extension['where']})"))
    else:
        lines.append(_check(False, f"server extension: {extension['why_not']}"))
    socket, default = kernels["server_socket"], kernels["default_socket"]
    lines.append(
        _check(
            kernels["server_reachable"],
            f"kernels of a Jupyter server: get $JUPYTER_WORKER_SOCKET={socket} from the extension"
            + ("" if kernels["server_reachable"] else ": no executor answers there"),
        )
    )
    if default != socket:
        lines.append(
            _check(
                kernels["default_reachable"],
                f"kernels started without a server or $JUPYTER_WORKER_SOCKET (papermill, nbclient): use {default}"
                + ("" if kernels["default_reachable"] else ": no executor answers there"),
            )
        )
    spec = kernels["kernelspec"]
    if spec.get("why_not"):
        lines.append(_check(False, f"kernelspec {spec['name']}: {spec['why_not']}"))
    else:
        lines.append(_check(True, f"kernelspec {spec['name']}: {spec['path']}, runs {spec['python']} with the magics"))
    if executor["reachable"]:
        lines.append(_check(True, f"backends: {', '.join(executor.get('backends', ['local']))}"))
        if executor.get("slurm") is not None:
            lines.append(f"  {_slurm_line(executor['slurm'])}")
    lines.append("network modes:")
    for mode, check in report["networks"].items():
        lines.append(f"  {_check(check['works'], f'{mode:<9} ' + (check.get('what') or check['why_not']))}")
    lines += ["", "host (for the admin):", *("  " + line for line in render_host(report["host"]).splitlines())]
    return "\n".join(lines)


def _slurm_line(slurm: dict[str, Any]) -> str:
    """The Slurm backend as its executor describes it: the partitions, or why it cannot submit."""
    if slurm.get("problem"):
        return _check(False, f"slurm: {slurm['problem']}")
    default = slurm.get("default_partition")
    partitions = ", ".join(f"{p}{' (default)' if p == default else ''}" for p in slurm.get("partitions", []))
    return _check(True, f"slurm: partitions {partitions or 'none listed'}")
