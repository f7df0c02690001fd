"""The executor's policy: default limits, the maxima a request may not exceed, caps, retention.

Set in a config file (`c.Policy.max_memory_limit = 4096` in jupyter_worker_executor_config.py, or
the same keys in JSON) or on the command line (`--Policy.max_concurrent_jobs=4`). Key names follow
the seed's worker.* keys.
"""

from __future__ import annotations

import os

from traitlets import Float, Int, List, Unicode
from traitlets.config import Configurable

from ..spec import JobRequest, Limits, NetworkMode, SpecError


class Policy(Configurable):
    default_cpu_limit = Int(100, allow_none=True, help="CPU limit of a job that asks for none (% of one core)").tag(
        config=True
    )
    default_memory_limit = Int(1024, allow_none=True, help="memory limit of a job that asks for none (MiB)").tag(
        config=True
    )
    default_io_limit = Int(None, allow_none=True, help="I/O limit of a job that asks for none (bytes/s)").tag(
        config=True
    )
    default_pids_limit = Int(512, allow_none=True, help="process limit of a job that asks for none").tag(config=True)
    max_cpu_limit = Int(None, allow_none=True, help="highest CPU limit a job may ask for (%)").tag(config=True)
    max_memory_limit = Int(None, allow_none=True, help="highest memory limit a job may ask for (MiB)").tag(config=True)
    max_io_limit = Int(None, allow_none=True, help="highest I/O limit a job may ask for (bytes/s)").tag(config=True)
    max_pids_limit = Int(None, allow_none=True, help="highest process limit a job may ask for").tag(config=True)
    job_timeout = Float(3600.0, help="timeout of a job that asks for none (seconds)").tag(config=True)
    max_job_timeout = Float(86400.0, help="longest timeout a job may ask for (seconds)").tag(config=True)
    max_concurrent_jobs = Int(max(2, 2 * (os.cpu_count() or 1)), help="jobs running at once; the rest wait").tag(
        config=True
    )
    max_jobs_per_user = Int(0, help="jobs one user may run at once (0: no cap beyond the global one)").tag(config=True)
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
    log_max_bytes = Int(256 << 20, help="per-job log cap; the excess is dropped with a notice").tag(config=True)
    retention_days = Float(14.0, help="finished jobs older than this are deleted (0: keep)").tag(config=True)
    retention_max_bytes = Int(10 << 30, help="oldest finished jobs are deleted past this total size").tag(config=True)

    def limits_for(self, request: JobRequest) -> Limits:
        """The request's limits with defaults (capped at the maxima) filled in; a value above a
        maximum is refused."""
        asked = dict(request.limits)
        defaults = {
            "memory_mb": self.default_memory_limit,
            "cpu_percent": self.default_cpu_limit,
            "io_bps": self.default_io_limit,
            "pids": self.default_pids_limit,
            "timeout_s": self.job_timeout,
        }
        maxima = {
            "memory_mb": (self.max_memory_limit, "memory limit", "MiB"),
            "cpu_percent": (self.max_cpu_limit, "CPU limit", "%"),
            "io_bps": (self.max_io_limit, "I/O limit", "bytes/s"),
            "pids": (self.max_pids_limit, "process limit", ""),
            "timeout_s": (self.max_job_timeout, "timeout", "s"),
        }
        for key, (maximum, _, _) in maxima.items():
            if maximum is not None and (defaults[key] is None or defaults[key] > maximum):
                defaults[key] = maximum
        limits = Limits.from_dict({**{k: v for k, v in defaults.items() if v is not None}, **asked})
        for key, (maximum, what, unit) in maxima.items():
            value = getattr(limits, key)
            if maximum is not None and value is not None and value > maximum:
                raise SpecError(f"{what}: {value:g}{unit} is above the maximum of {maximum:g}{unit}")
        return limits

    def check_command(self, argv: list[str]) -> None:
        if self.allowed_commands is not None and os.path.basename(argv[0]) not in self.allowed_commands:
            raise SpecError(f"command: {argv[0]!r} is not among the commands this executor allows")

    def network_for(self, request: JobRequest, default: NetworkMode) -> NetworkMode:
        return request.network or default
