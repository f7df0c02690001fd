"""What this host can isolate and limit, so a refused job can be explained before it is asked for."""

from __future__ import annotations

import os
from typing import Any

from ..limits import LIMITS
from .cgroups import ENFORCED, CgroupHost, kernel_at_least, swap_in_use
from .devices import whole_disk
from .disk import problem as disk_problem
from .mounts import idmap_problem
from .native import INIT_PATH, init_problem
from .network import ipv4_forwarding, isolated_problem


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def diagnose(cgroup_root: str = "/sys/fs/cgroup") -> dict[str, Any]:
    """A JSON-ready report of the host; it changes nothing."""
    host = CgroupHost.detect(cgroup_root)
    # the probe makes a network namespace: only root can try it
    isolated = isolated_problem() if os.geteuid() == 0 else "only root can try it"
    forwarding = ipv4_forwarding()
    limits = {}
    for item in LIMITS:
        if item.field not in ENFORCED:
            continue
        controller = ENFORCED[item.field].controller
        refusals = host.refusals_of([item.field])
        backend = host.backend(controller)
        limits[controller] = {
            "enforced": not refusals,
            "how": backend.dialect.knobs[item.field].how if backend and not refusals else None,
            "why_not": "; ".join(refusals) or None,
        }
    hierarchies = [
        {"mountpoint": h.mountpoint, "version": h.version, "controllers": sorted(h.controllers), "own": h.own}
        for h in {id(h): h for h in [*host.v1.values(), *([host.v2] if host.v2 else [])]}.values()
    ]
    return {
        "root": os.geteuid() == 0,
        "kernel": os.uname().release,
        "cgroup": {
            "mode": host.mode,
            "root": cgroup_root,
            "hierarchies": hierarchies,
            "tracking": host.tracker.dialect.tracking if host.tracker else None,
            "kill": host.can_kill(),
        },
        "native_init": {"path": INIT_PATH, "why_not": init_problem()},
        "namespaces": sorted(os.listdir("/proc/self/ns")),
        "seccomp": _read("/proc/sys/kernel/seccomp/actions_avail") is not None,
        "features": {
            "mount_setattr": kernel_at_least(5, 12),
            "hidepid_invisible": kernel_at_least(5, 8),
            "swap_in_use": swap_in_use(),
        },
        "limits": limits,
        # the modes a job gets something from: isolated only where it can be made and reaches out
        "network_modes": ["none", "host"] + ([] if isolated or not forwarding else ["isolated"]),
        "isolated": {"why_not": isolated, "ipv4_forwarding": forwarding},
        "io_devices": {path: whole_disk(path) for path in ("/usr", "/var/lib")},
        "disk": {"enforced": disk_problem() is None, "why_not": disk_problem()},
        "idmapped_binds": _idmapped_binds(),
    }


# Where a root requester's folders usually are: each is tried once per filesystem.
_IDMAP_PLACES = ("/root", "/home", "/srv", "/tmp", "/var/tmp")


def _idmapped_binds() -> dict[str, str | None]:
    """For each usual place of a root requester's folders: why a job running as another user
    (root_runs_as) could not read and write it as root there (None: it can, through an id-mapped
    bind). Only root can try."""
    if os.geteuid() != 0:
        return {}
    seen, found = set(), {}
    for path in _IDMAP_PLACES:
        try:
            device = os.stat(path).st_dev
        except OSError:
            continue
        if device not in seen:
            seen.add(device)
            found[path] = idmap_problem(path)
    return found


def render(report: dict[str, Any]) -> str:
    """The report as the lines `jupyter-worker doctor` prints."""
    cg = report["cgroup"]
    lines = [
        f"running as root:  {'yes' if report['root'] else 'NO - the executor must run as root'}",
        f"kernel:           {report['kernel']}",
        f"cgroup mode:      {cg['mode']} (under {cg['root']})",
        f"job tracking:     {cg['tracking']}; whole-tree kill by {cg['kill']}",
    ]
    for h in cg["hierarchies"]:
        controllers = ",".join(h["controllers"]) or "(no controllers)"
        lines.append(f"  v{h['version']} {h['mountpoint']}: {controllers}; own cgroup {h['own']}")
    native = report["native_init"]
    lines.append(f"native init:      {'NO - ' + native['why_not'] if native['why_not'] else native['path']}")
    lines.append(f"namespaces:       {' '.join(report['namespaces'])}")
    lines.append(f"seccomp:          {'yes' if report['seccomp'] else 'no'}")
    lines.append("limits:")
    for name, info in report["limits"].items():
        state = f"enforced via {info['how']}" if info["enforced"] else f"REFUSED: {info['why_not']}"
        lines.append(f"  {name:<7} {state}")
    lines.append(f"network modes:    {', '.join(report['network_modes'])}")
    isolated = report["isolated"]
    if isolated["why_not"]:
        lines.append(f"  isolated: not offered: {isolated['why_not']}")
    elif not isolated["ipv4_forwarding"]:
        lines.append(
            "  isolated: offered, but reaches nothing: IPv4 forwarding is off (sysctl net.ipv4.ip_forward=1); "
            "'auto' means none"
        )
    disk = report["disk"]
    how = "enforced via an ext4 image per job on a loop device" if disk["enforced"] else f"REFUSED: {disk['why_not']}"
    lines.append(f"disk limit:       {how}")
    for path, device in report["io_devices"].items():
        lines.append(f"I/O device of {path}: {device or 'none (not throttled)'}")
    for path, problem in report.get("idmapped_binds", {}).items():
        if problem is None:
            how = "id-mapped: in root's jobs, root's files are the job's and its new files root's"
        else:
            how = f"not id-mapped ({problem}): root's jobs are only the user they run as there"
        lines.append(f"mounts from {path}: {how}")
    return "\n".join(lines)
