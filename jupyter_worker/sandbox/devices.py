"""The block devices behind a job's storage, which is where an I/O limit is applied."""

from __future__ import annotations

import os

from ..errors import SpecError
from .launch_spec import LaunchSpec


def whole_disk(path: str) -> str | None:
    """'MAJ:MIN' of the disk holding path (a partition maps to its disk), or None if not on one."""
    dev = os.stat(path).st_dev
    node = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    if not os.path.exists(node):
        return None
    if os.path.exists(os.path.join(node, "partition")):
        with open(os.path.join(os.path.realpath(node), "..", "dev")) as f:
            return f.read().strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


def job_storage(spec: LaunchSpec) -> list[str]:
    paths = ["/usr", *spec.python_prefixes, *(m.source for m in spec.mounts)]
    if spec.work_dir:
        paths.append(spec.work_dir)
    return paths


def io_devices(spec: LaunchSpec) -> tuple[list[str], list[str]]:
    """The devices to throttle, and a note for each path I/O to which cannot be throttled.

    A job none of whose storage sits on a block device is refused: its limit could not hold.
    """
    devices: list[str] = []
    unthrottled: list[str] = []
    for path in job_storage(spec):
        try:
            device = whole_disk(path)
        except OSError as exc:
            raise SpecError(f"I/O limit: {path}: {exc.strerror}") from None
        if device is None:
            unthrottled.append(f"I/O to {path} is not throttled: it is not on a block device")
        elif device not in devices:
            devices.append(device)
    if not devices:
        raise SpecError("I/O limit: none of the job's storage is on a block device, so it cannot be throttled")
    return devices, unthrottled
