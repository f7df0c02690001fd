"""What the sandbox engine needs to start one job: command, identity, limits, filesystem, network."""

from __future__ import annotations

import os
import pwd
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ..limits import Limits
from ..spec import (
    DISPLAY_FD_ENV,
    Mount,
    NetworkMode,
    check_destination,
    check_prefixes,
    python_prefixes,
    validate_argv,
    validate_env,
)

NOBODY = 65534
DISPLAY_FD = 3  # a job with display writes its display output here (the next fd after stdio)
# The largest launch request (JSON) the engine's lines carry in one SEQPACKET message: the spec's
# bounds allow some 128 KiB of command and 128 KiB of environment, each byte up to 6 as JSON
# (\u0001), and 32 mounts and 8 prefixes of 4 KiB paths; a unix socket refuses a message larger than
# its send buffer (EMSGSIZE), whose default (net.core.wmem_default) is some 200 KiB.
MAX_LAUNCH_MESSAGE = 8 << 20
_SO_SNDBUFFORCE = 32  # socket(7); Python's socket module does not name it


def fit_launch_messages(*socks: socket.socket) -> None:
    """Send buffers large enough for MAX_LAUNCH_MESSAGE on the lines a launch request travels; past
    net.core.wmem_max as root (SO_SNDBUFFORCE). Memory is only used while a message is in flight."""
    for sock in socks:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, MAX_LAUNCH_MESSAGE)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_LAUNCH_MESSAGE)


@dataclass(frozen=True)
class JobLink:
    """A job's place on the bridge: its veth's host-side name, its address (CIDR), the gateway and
    resolvers; chosen by the executor, made by the supervisor before the job runs."""

    bridge: str
    veth: str
    address: str
    gateway: str
    dns: list[str]

    def to_dict(self) -> dict:
        return {
            "bridge": self.bridge,
            "veth": self.veth,
            "address": self.address,
            "gateway": self.gateway,
            "dns": self.dns,
        }

    def resolv_conf(self) -> str:
        return "".join(f"nameserver {server}\n" for server in self.dns) or "# no resolver is reachable\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobLink:
        return cls(data["bridge"], data["veth"], data["address"], data["gateway"], list(data.get("dns", [])))


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"user{uid}"


@dataclass
class LaunchSpec:
    """One sandboxed command. uid/gid run it; requester_* resolve the paths the client named."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/work"
    uid: int = NOBODY
    gid: int = NOBODY
    requester_uid: int = 0
    requester_gid: int = 0
    requester_groups: list[int] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    mounts: list[Mount] = field(default_factory=list)
    network: NetworkMode = NetworkMode.NONE
    link: JobLink | None = None
    hostname: str = "jupyter-worker"
    work_dir: str | None = None
    python_prefixes: list[str] = field(default_factory=python_prefixes)
    stop_grace_s: float = 5.0
    name: str = field(default_factory=lambda: uuid.uuid4().hex)
    display: bool = False

    def __post_init__(self) -> None:
        self.argv = validate_argv(self.argv)
        self.env = validate_env(self.env)
        self.network = NetworkMode(self.network)
        if not isinstance(self.display, bool):
            raise SpecError("display: true or false")
        if self.link is not None and self.network is not NetworkMode.ISOLATED:
            raise SpecError("network: a place on the bridge is for the 'isolated' mode only")
        if self.limits.net_bps is not None and self.network is NetworkMode.HOST:
            raise SpecError("network limit: cannot be enforced on the host's network; use network 'isolated'")
        for what, value in (("uid", self.uid), ("gid", self.gid)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**32 - 1:
                raise SpecError(f"{what}: jobs never run as root; {value!r} is not an unprivileged id")
        self.cwd = check_destination(self.cwd, "cwd")
        if not self.name.replace("-", "").isalnum():
            raise SpecError(f"name: {self.name!r} may hold only letters, digits and '-'")
        destinations = [m.destination for m in self.mounts]
        if len(set(destinations)) != len(destinations):
            raise SpecError("mount: two mounts share one destination")
        self.python_prefixes = check_prefixes(self.python_prefixes)

    @property
    def user(self) -> str:
        return user_name(self.uid)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["limits"] = self.limits.to_dict()
        data["mounts"] = [m.to_dict() for m in self.mounts]
        data["network"] = self.network.value
        data["link"] = self.link.to_dict() if self.link else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaunchSpec:
        data = dict(data)
        data["limits"] = Limits.from_dict(data.get("limits", {}))
        data["mounts"] = [Mount(**m) for m in data.get("mounts", [])]
        data["link"] = JobLink.from_dict(data["link"]) if data.get("link") else None
        return cls(**data)


def job_env(spec: LaunchSpec) -> dict[str, str]:
    """The whole environment of the job: PATH, HOME, LANG, then exactly what the spec passes, and
    the display pipe's fd for a job with display (validate_env keeps the spec from naming it)."""
    bins = [os.path.join(p, "bin") for p in spec.python_prefixes]
    env = {
        "PATH": ":".join([*bins, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": "/work",
        "LANG": "C.UTF-8",
    }
    env.update(spec.env)
    if spec.display:
        env[DISPLAY_FD_ENV] = str(DISPLAY_FD)
    return env
