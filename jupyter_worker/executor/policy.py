"""The executor's policy: default limits, the maxima a request may not exceed, caps, retention.

Set in a config file (`c.Policy.max_memory_limit = 4096` in jupyter_worker_executor_config.py, or
the same keys in JSON) or on the command line (`--Policy.max_concurrent_jobs=4`). Key names follow
the seed's worker.* keys.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from traitlets import Dict, Float, Int, List, TraitError, TraitType, Unicode, default, validate
from traitlets.config import Configurable

from ..errors import ErrorReason, WorkerError
from ..limits import LIMITS, LimitRow
from ..sandbox.network import parse_rule
from ..spec import JobRequest, Limits, NetworkMode, SpecError

_BY_MAX = {row.max_setting: row for row in LIMITS if row.max_setting}
ALLOWANCE_KEYS = ("max_jobs", "max_queued", *(row.max_setting for row in LIMITS if row.max_setting))
_CAPS = ("max_jobs", "max_queued")  # whole numbers, 0 meaning no cap of the user's own
NETWORKS_KEY = "networks"  # in a user_limits or group_limits entry: the network modes they may use
EVERY_NETWORK = tuple(NetworkMode)


class LimitSetting(TraitType):
    """A policy setting for one limit: a value as a person types it ('4G', '2h', 512), kept typed."""

    def __init__(self, row: LimitRow, default: Any, words: str):
        self.row = row
        unit = row.unit or row.kind.value
        self.info_text = f"a {row.what} ({unit}), or None"
        super().__init__(default, allow_none=True, help=words.format(what=row.what, unit=unit))

    def validate(self, obj: Any, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.row.parse(value)
        except SpecError as exc:
            raise TraitError(f"{self.name}: {exc}") from None


def _limit_settings() -> dict[str, TraitType]:
    """Each limit's default and maximum setting, from the table (limits.LIMITS)."""
    settings: dict[str, TraitType] = {}
    for row in LIMITS:
        if row.default_setting:
            settings[row.default_setting] = LimitSetting(row, row.default, "{what} of a job asking for none ({unit})")
        if row.max_setting:
            settings[row.max_setting] = LimitSetting(
                row, row.max_default, "the most a job may ask for (None: no maximum):"
            )
    return {name: trait.tag(config=True) for name, trait in settings.items()}


_LimitSettings = type("_LimitSettings", (Configurable,), _limit_settings())


@dataclass(frozen=True)
class Allowance:
    """What one user may use: concurrent jobs and queued jobs (0: no cap of their own) and a maximum
    per limit (None: no maximum), and the network modes they may use, after their own entry, their
    groups' entries and the global settings."""

    max_jobs: int
    maxima: dict[str, float | None]
    max_queued: int = 0
    networks: tuple[NetworkMode, ...] = EVERY_NETWORK

    def to_dict(self) -> dict[str, Any]:
        return {"max_jobs": self.max_jobs, "max_queued": self.max_queued, **self.maxima}


class Policy(_LimitSettings):
    """The executor's settings; each limit's default and maximum come from the table (_LimitSettings)."""

    max_concurrent_jobs = Int(max(2, 2 * (os.cpu_count() or 1)), help="jobs running at once; the rest wait").tag(
        config=True
    )
    max_jobs_per_user = Int(
        min=0,
        help="jobs one user may run at once (0: no cap beyond the global one); default: half of "
        "max_concurrent_jobs, at least 1",
    ).tag(config=True)
    max_queued_per_user = Int(
        100, min=0, help="jobs one user may have waiting QUEUED; past it a submission is refused busy (0: no cap)"
    ).tag(config=True)
    max_connections = Int(
        512, min=1, help="client connections at once, all users together; the last guard (executor/server.py)"
    ).tag(config=True)
    reserved_connections = Int(
        32, min=0, help="of max_connections, how many only root and the admin group may use"
    ).tag(config=True)
    max_connections_per_user = Int(
        64, min=1, help="connections one user (uid) other than root and admins may hold at once, streams included"
    ).tag(config=True)
    max_requests_per_user = Int(
        8, min=1, help="requests of one user (uid) other than root and admins being answered at once"
    ).tag(config=True)
    hello_timeout_s = Float(
        10.0, min=0.1, help="a new connection that has not said hello within this many seconds is closed"
    ).tag(config=True)
    frame_timeout_s = Float(
        30.0,
        min=0.1,
        help="a request frame that has begun must arrive whole within this many seconds, or the connection is closed",
    ).tag(config=True)
    user_limits = Dict(
        help="per user name, what overrides the global settings for them: max_jobs, max_queued and any max_* limit "
        "(None: no maximum), e.g. {'alice': {'max_jobs': 8, 'max_memory_limit': 16384}}"
    ).tag(config=True)
    group_limits = Dict(
        help="per group name, the same keys; a member of several groups gets the largest value of each, "
        "and a user's own entry wins over their groups'"
    ).tag(config=True)
    allowed_networks = List(
        Unicode(),
        default_value=["none", "isolated"],
        help="network modes a job of a user without a 'networks' entry of their own (user_limits, group_limits) "
        "may use; root and the admin group may use every mode. 'host' shares the host's network: its "
        "loopback services, and whatever the host itself may reach",
    ).tag(config=True)
    allowed_commands = List(
        Unicode(), default_value=None, allow_none=True, help="program names a job may start (None: any)"
    ).tag(config=True)
    default_network = Unicode(
        "auto",
        help="network mode of a job that asks for none: none, host, isolated, or auto (isolated where "
        "the host offers it and forwards IPv4, else none)",
    ).tag(config=True)
    isolated_bridge = Unicode("jw-br0", help="the bridge isolated jobs are attached to (made and removed by us)").tag(
        config=True
    )
    isolated_subnet = Unicode("10.213.0.0/24", help="addresses of isolated jobs (the first is the bridge's)").tag(
        config=True
    )
    isolated_dns = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="resolvers for isolated jobs (None: the host's non-loopback nameservers), reachable on port 53 only",
    ).tag(config=True)
    egress_allow = List(Unicode(), help="CIDR[:PORT] isolated jobs may reach although private or special").tag(
        config=True
    )
    egress_deny = List(Unicode(), help="CIDR[:PORT] isolated jobs may not reach (checked before the allow list)").tag(
        config=True
    )
    hold_grace_s = Float(
        60.0,
        help="after a restart of the executor, how long a Jupyter server that holds jobs (jobs_on_server_stop = "
        "'stop') has to connect again before its jobs are stopped (seconds)",
    ).tag(config=True)
    log_max_bytes = Int(256 << 20, help="per-job log cap; the excess is dropped with a notice").tag(config=True)
    max_value_bytes = Int(
        256 << 20,
        min=1,
        help="the largest value a %%worker --out or Job.value() brings back to a kernel (bytes as stored, e.g. "
        "a .npy or Parquet file): the job's runner refuses to write a larger one, the kernel to read it",
    ).tag(config=True)
    retention_days = Float(14.0, help="finished jobs older than this are deleted (0: keep)").tag(config=True)
    retention_max_bytes = Int(10 << 30, help="oldest finished jobs are deleted past this total size").tag(config=True)
    max_kept_disk_per_user = Int(
        4 << 30,
        help="bytes one user's finished jobs may keep on the state folder's disk (their /work images, logs); "
        "past it that user's oldest finished jobs are deleted (0: no per-user quota)",
    ).tag(config=True)
    disk_reserve_bytes = Int(
        1 << 30,
        help="free bytes on the state folder's filesystem that jobs' disk limits never count on: a job whose "
        "disk limit does not fit in what is free beyond it waits while running jobs hold room, else it fails",
    ).tag(config=True)
    max_artifacts_mb = Int(
        1024,
        min=0,
        help="MiB of a job's /work that --artifacts copies to the requester's folder when it ends; files past it "
        "are not copied and the job's record says so (0: none copied)",
    ).tag(config=True)
    max_artifacts_files = Int(
        10000, min=0, help="files --artifacts copies at most from one job; the rest are left, with a note"
    ).tag(config=True)
    artifacts_timeout_s = Float(
        120.0,
        min=1.0,
        help="seconds the copy of a job's artifacts may take (the job is reported ended after it); past it the "
        "copy stops, with a note",
    ).tag(config=True)

    @default("max_jobs_per_user")
    def _half_the_slots(self) -> int:
        """On by default: one user never takes every slot while others wait."""
        return max(1, self.max_concurrent_jobs // 2)

    @validate("default_network")
    def _check_network(self, proposal: Any) -> str:
        if proposal["value"] not in ("auto", *(mode.value for mode in NetworkMode)):
            raise TraitError(f"Policy.default_network: {proposal['value']!r} is not none, host, isolated or auto")
        return proposal["value"]

    @validate("allowed_networks")
    def _check_allowed_networks(self, proposal: Any) -> list:
        try:
            return [mode.value for mode in _networks(proposal["value"])]
        except SpecError as exc:
            raise TraitError(f"Policy.allowed_networks: {exc}") from None

    @validate("isolated_subnet")
    def _check_subnet(self, proposal: Any) -> str:
        try:
            ipaddress.IPv4Network(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"Policy.isolated_subnet: {exc}") from None
        return proposal["value"]

    @validate("egress_allow", "egress_deny")
    def _check_rules(self, proposal: Any) -> list:
        for rule in proposal["value"]:
            try:
                parse_rule(rule)
            except SpecError as exc:
                raise TraitError(f"Policy.{proposal['trait'].name}: {exc}") from None
        return proposal["value"]

    @validate("user_limits", "group_limits")
    def _check_allowances(self, proposal: Any) -> dict:
        """Each entry's values are parsed as the settings they override ('16G' for a memory maximum)."""
        what, keys = proposal["trait"].name, ", ".join((*ALLOWANCE_KEYS, NETWORKS_KEY))
        checked: dict[str, dict[str, Any]] = {}
        for name, entry in proposal["value"].items():
            if not isinstance(entry, dict):
                raise TraitError(f"Policy.{what}[{name!r}]: a dict of {keys}")
            checked[name] = {}
            for key, value in entry.items():
                if key == NETWORKS_KEY:
                    checked[name][key] = _networks_value(f"Policy.{what}[{name!r}][{key!r}]", value)
                    continue
                if key not in ALLOWANCE_KEYS:
                    raise TraitError(f"Policy.{what}[{name!r}]: unknown key {key!r}; one of {keys}")
                checked[name][key] = _allowance_value(f"Policy.{what}[{name!r}][{key!r}]", key, value)
        return checked

    def allowance(self, user: str) -> Allowance:
        """The user's own entry wins; else the most generous of their groups' entries; else the global value."""
        chosen: dict[str, Any] = {"max_jobs": self.max_jobs_per_user, "max_queued": self.max_queued_per_user}
        chosen |= {setting: getattr(self, setting) for setting in ALLOWANCE_KEYS[len(_CAPS) :]}
        groups = [self.group_limits[g] for g in _groups_of(user) if g in self.group_limits]
        for key in ALLOWANCE_KEYS:
            values = [entry[key] for entry in groups if key in entry]
            if values:
                chosen[key] = _most_generous(key, values)
        chosen |= self.user_limits.get(user, {})
        max_jobs, max_queued = int(chosen.pop("max_jobs") or 0), int(chosen.pop("max_queued") or 0)
        networks = chosen.pop(NETWORKS_KEY, None)
        if NETWORKS_KEY not in self.user_limits.get(user, {}):  # the union of the user's groups' entries
            granted = {mode for entry in groups for mode in entry.get(NETWORKS_KEY, ())}
            networks = tuple(m for m in EVERY_NETWORK if m in granted) or None
        if networks is None:
            networks = _networks(self.allowed_networks)
        return Allowance(max_jobs, chosen, max_queued, networks)

    def limits_for(self, asked: Limits, allowance: Allowance) -> Limits:
        """The limits a job gets, limit by limit: what it asked for, which may not exceed the
        user's maximum; else the policy's default, lowered to that maximum (a limit with a maximum is
        never left unset)."""
        chosen: dict[str, Any] = {}
        for row in LIMITS:
            value = getattr(asked, row.field)
            maximum = allowance.maxima.get(row.max_setting) if row.max_setting else None
            if value is None:
                value = getattr(self, row.default_setting) if row.default_setting else None
                if maximum is not None and (value is None or value > maximum):
                    value = maximum
            elif maximum is not None and value > maximum:
                raise SpecError(f"{row.what}: {row.show(value)} is above the maximum of {row.show(maximum)}")
            chosen[row.field] = value
        return Limits(**chosen)

    def check_command(self, argv: list[str]) -> None:
        if self.allowed_commands is not None and os.path.basename(argv[0]) not in self.allowed_commands:
            raise SpecError(f"command: {argv[0]!r} is not among the commands this executor allows")

    def network_for(
        self, request: JobRequest, default: NetworkMode, allowed: tuple[NetworkMode, ...], user: str
    ) -> NetworkMode:
        """The mode asked for, if this user may use it; else the default (already one they may use)."""
        if request.network is None:
            return default
        if request.network not in allowed:
            modes = ", ".join(mode.value for mode in allowed)
            raise WorkerError(
                ErrorReason.FORBIDDEN,
                f"network {request.network.value!r} is not allowed for {user} on this executor "
                f"(allowed: {modes}); an admin grants modes with Policy.allowed_networks or a 'networks' entry "
                "in Policy.user_limits or Policy.group_limits",
            )
        return request.network

    def unknown_names(self) -> list[str]:
        """Users and groups the policy names that this host does not know: each a likely typo that would
        otherwise quietly leave someone with the global settings."""
        users = [f"Policy.user_limits names {n!r}, no user here" for n in self.user_limits if not user_exists(n)]
        groups = [f"Policy.group_limits names {n!r}, no group here" for n in self.group_limits if not group_exists(n)]
        return users + groups


def _allowance_value(where: str, key: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if key in _CAPS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError("a whole number >= 0")
            return value
        return _BY_MAX[key].parse(value)
    except SpecError as exc:
        raise TraitError(f"{where}: {exc}, or None for no maximum") from None


def _networks(value: Any) -> tuple[NetworkMode, ...]:
    """A list of network modes, in the order of NetworkMode; at least one."""
    names = ", ".join(mode.value for mode in NetworkMode)
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise SpecError(f"a list of network modes, at least one of {names}")
    unknown = [v for v in value if v not in {mode.value for mode in NetworkMode}]
    if unknown:
        raise SpecError(f"{unknown[0]!r} is not a network mode; one of {names}")
    return tuple(mode for mode in NetworkMode if mode.value in value)


def _networks_value(where: str, value: Any) -> tuple[NetworkMode, ...]:
    try:
        return _networks(value)
    except SpecError as exc:
        raise TraitError(f"{where}: {exc}") from None


def user_exists(name: str) -> bool:
    """Whether this host knows a user by that name."""
    return _known(pwd.getpwnam, name)


def group_exists(name: str) -> bool:
    """Whether this host knows a group by that name."""
    return _known(grp.getgrnam, name)


def _known(lookup: Callable[[str], Any], name: str) -> bool:
    with contextlib.suppress(KeyError):
        lookup(name)
        return True
    return False


def _most_generous(key: str, values: list[Any]) -> Any:
    if key in _CAPS:
        return 0 if 0 in values else max(values)
    return None if None in values else max(values)


def _groups_of(user: str) -> list[str]:
    """The user's groups by name (primary and supplementary); none for a name without an account."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return []
    names = []
    for gid in os.getgrouplist(user, entry.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names
