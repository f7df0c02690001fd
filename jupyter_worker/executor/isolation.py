"""The isolated network as the executor runs it: the bridge comes up at the first isolated job,
each running job leases an address (and a veth name), leftovers of a crash are swept at start, and
the bridge and rules go when the executor stops with no isolated job running."""

from __future__ import annotations

import concurrent.futures
import ipaddress
from collections.abc import Callable, Collection
from typing import TypeVar

from ..errors import ErrorReason, WorkerError
from ..sandbox.launch_spec import JobLink
from ..sandbox.network import Bridge, NetworkError, host_nameservers, ipv4_forwarding, isolated_problem
from ..spec import NetworkMode
from .policy import Policy

T = TypeVar("T")


def _off_loop(action: Callable[[], T]) -> T:
    """pyroute2's blocking API runs its own event loop, which cannot run inside the executor's:
    netlink calls (a few milliseconds, at the first isolated job and at start and stop) go through
    a short-lived thread, waited for."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(action).result()


class IsolatedNetwork:
    def __init__(self, policy: Policy):
        subnet = ipaddress.IPv4Network(policy.isolated_subnet)
        dns = policy.isolated_dns if policy.isolated_dns is not None else host_nameservers()
        self.bridge = Bridge(
            policy.isolated_bridge, subnet, list(dns), list(policy.egress_allow), list(policy.egress_deny)
        )
        self.leases: dict[str, JobLink] = {}
        self._up = False

    def problem(self) -> str | None:
        return isolated_problem()

    def modes(self, allowed: Collection[NetworkMode] = tuple(NetworkMode)) -> list[str]:
        """The modes this host offers, of those allowed."""
        offered = ["none", "host"] + ([] if self.problem() else ["isolated"])
        return [mode for mode in offered if NetworkMode(mode) in allowed]

    def default_mode(self, configured: str, allowed: Collection[NetworkMode] = tuple(NetworkMode)) -> NetworkMode:
        """'auto' is isolated where this host offers it and forwards IPv4 (else jobs reach nothing), else none.
        A default the user may not use gives way to auto's choice, then to none, isolated, host: the
        first they may use."""
        if configured != "auto" and NetworkMode(configured) in allowed:
            return NetworkMode(configured)
        auto = NetworkMode.ISOLATED if ipv4_forwarding() and self.problem() is None else NetworkMode.NONE
        choices = (auto, NetworkMode.NONE, NetworkMode.ISOLATED, NetworkMode.HOST)
        return next((mode for mode in choices if mode in allowed), auto)

    def lease(self, job_id: str) -> JobLink:
        if not self._up:
            problem = self.problem()
            if problem:
                raise WorkerError(ErrorReason.UNSUPPORTED, f"network 'isolated' is not available here: {problem}")
            try:
                _off_loop(self.bridge.up)
            except NetworkError as exc:
                raise WorkerError(ErrorReason.UNSUPPORTED, f"network 'isolated' is not available here: {exc}") from None
            self._up = True
        taken = {link.address for link in self.leases.values()}
        free = next((a for a in self.bridge.addresses() if a not in taken), None)
        if free is None:
            raise WorkerError(ErrorReason.BUSY, f"every address of {self.bridge.subnet} is in use")
        link = JobLink(
            self.bridge.name, "jwv" + job_id.replace("-", "")[:11], free, str(self.bridge.gateway), self.bridge.dns
        )
        self.leases[job_id] = link
        return link

    def reserve(self, job_id: str, link: JobLink) -> None:
        """A job still running after a restart keeps its address."""
        self.leases[job_id] = link
        self._up = True

    def release(self, job_id: str) -> None:
        self.leases.pop(job_id, None)

    def sweep(self) -> None:
        """After a restart: veths on the bridge that belong to no running job (a crash's remains).
        Only a netlink lookup at start: no bridge, nothing to sweep (and no support probe)."""
        if _off_loop(self.bridge.exists):
            keep = {link.veth for link in self.leases.values()}
            _off_loop(lambda: self.bridge.remove_links(self.bridge.leftovers(keep)))
            self._up = True

    def close(self) -> None:
        """The bridge and rules go unless isolated jobs still run (they outlive the executor)."""
        if self._up and not self.leases:
            _off_loop(self.bridge.down)
            self._up = False
