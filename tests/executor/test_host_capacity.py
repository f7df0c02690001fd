"""A job may not ask for more than the host has, whatever the policy allows: refused in words that
name the host's figure; a default above it is lowered to it; capabilities says what the host has."""

from __future__ import annotations

import os

import pytest

from jupyter_worker.errors import WorkerError
from tests.executor.conftest import SLEEP


def mem_total_mb() -> int:
    with open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) >> 10


def test_a_memory_limit_above_the_hosts_ram_is_refused_naming_what_the_host_has(daemon):
    with daemon.client() as client, pytest.raises(WorkerError) as refused:
        client.run({**SLEEP, "limits": {"memory_mb": 999999}})
    assert refused.value.reason.value == "invalid"
    assert refused.value.message.startswith("memory limit: 999999 MiB is more than this host has (")
    assert refused.value.message.endswith(" GiB)")
    with daemon.client() as client:
        assert client.list()[0] == []


@pytest.mark.executor_flags("--Policy.max_memory_limit=None", "--Policy.max_cpu_limit=None")
def test_cpu_beyond_the_hosts_cores_and_cpus_it_lacks_are_refused(daemon):
    cores = len(os.sched_getaffinity(0))
    with daemon.client() as client:
        with pytest.raises(WorkerError, match=rf"CPU limit: {100 * cores + 100} % is more than this host has"):
            client.run({**SLEEP, "limits": {"cpu_percent": 100 * cores + 100}})
        with pytest.raises(WorkerError, match=r"cpuset: CPU \d+ is not one this host has \(it has "):
            client.run({**SLEEP, "limits": {"cpuset": f"0-{max(os.sched_getaffinity(0)) + 1}"}})
        with pytest.raises(WorkerError, match=r"cpuset: CPU 4000000 is not"):
            client.run({**SLEEP, "limits": {"cpuset": "4000000-4000000000"}})


@pytest.mark.executor_flags("--Policy.default_memory_limit=1000000000")
def test_a_default_above_the_hosts_ram_is_lowered_to_it_and_capabilities_show_the_host(daemon):
    with daemon.client() as client:
        policy = client.capabilities()
        job = client.run(SLEEP)
    host = policy["host"]
    assert 0 < host["memory_mb"] <= mem_total_mb()
    assert host["cpu_percent"] <= 100 * len(os.sched_getaffinity(0))
    memory = next(row for row in policy["limits"] if row["field"] == "memory_mb")
    assert memory["default"] == memory["maximum"] == memory["host"] == host["memory_mb"]
    assert job.limits.memory_mb == host["memory_mb"]
