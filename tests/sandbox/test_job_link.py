"""An isolated job's eth0 as network.attach makes it: born in the job's namespace, set up there
without a fork, nothing left behind when it fails or when the job's namespace ends.

Each test runs in a child with a network namespace of its own standing in for the host (a bridge
made there), so nothing of this machine's network is touched; the job's namespace is a grandchild's.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable

import pytest
from pyroute2 import IPRoute

from jupyter_worker.sandbox import libc, network
from jupyter_worker.sandbox.launch_spec import JobLink

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(
        os.geteuid() == 0 and network.isolated_problem() is not None,
        reason=f"this kernel cannot run isolated jobs: {network.isolated_problem()}",
    ),
]

BRIDGE = "jwt-brl"  # in a namespace of the test's own; the range is a documentation one
GATEWAY = "198.51.100.1"


def in_own_host(check: Callable[[], dict]) -> dict:
    """Run check in a child with its own network namespace holding the bridge; its answer back."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        try:
            libc.unshare(libc.CLONE_NEWNET)
            with IPRoute() as ipr:
                ipr.link("add", ifname=BRIDGE, kind="bridge")
                index = ipr.link_lookup(ifname=BRIDGE)[0]
                ipr.addr("add", index=index, address=GATEWAY, prefixlen=25)
                ipr.link("set", index=index, state="up")
            answer = check()
        except BaseException:
            answer = {"error": traceback.format_exc()}
        os.write(write_end, json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answers:
        answer = json.loads(answers.read() or b'{"error": "no answer"}')
    os.waitpid(child, 0)
    assert "error" not in answer, answer["error"]
    return answer


def job_namespace() -> int:
    """A process holding a fresh network namespace (the job's init stands in), until killed."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        libc.unshare(libc.CLONE_NEWNET)
        os.write(ready_w, b"1")
        time.sleep(60)
        os._exit(0)
    os.read(ready_r, 1)
    os.close(ready_r)
    os.close(ready_w)
    return pid


def links_of(pid: int | None = None) -> dict[str, dict]:
    """Links of pid's network namespace (ours if None): name -> up, master, addresses, default route."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if pid is not None:
            with open(f"/proc/{pid}/ns/net") as target:
                libc.setns(target.fileno(), libc.CLONE_NEWNET)
        with IPRoute() as ipr:
            found = {}
            for link in ipr.get_links():
                index = link["index"]
                found[link.get_attr("IFLA_IFNAME")] = {
                    "up": bool(link["flags"] & 1),
                    "master": link.get_attr("IFLA_MASTER"),
                    "addresses": [
                        f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index, family=2)
                    ],
                    "gateway": [r.get_attr("RTA_GATEWAY") for r in ipr.get_default_routes(family=2, table=254)],
                }
            return found
    finally:
        libc.setns(home, libc.CLONE_NEWNET)
        os.close(home)


def bridge_index() -> int:
    with IPRoute() as ipr:
        return ipr.link_lookup(ifname=BRIDGE)[0]


def test_an_isolated_jobs_eth0_is_made_in_its_namespace_with_its_address_and_route():
    def check() -> dict:
        job = job_namespace()
        home = os.readlink("/proc/thread-self/ns/net")
        network.attach(JobLink(BRIDGE, "jwvtestjob0", "198.51.100.2/25", GATEWAY, []), job)
        answer = {
            "inside": links_of(job),
            "host": links_of(),
            "bridge": bridge_index(),
            "back_home": os.readlink("/proc/thread-self/ns/net") == home,
        }
        os.kill(job, 9)
        os.waitpid(job, 0)
        return answer

    answer = in_own_host(check)
    assert answer["back_home"]
    assert set(answer["inside"]) == {"lo", "eth0"}
    eth0 = answer["inside"]["eth0"]
    assert eth0["up"] and eth0["addresses"] == ["198.51.100.2/25"] and eth0["gateway"] == [GATEWAY]
    host_end = answer["host"]["jwvtestjob0"]
    assert host_end["up"] and host_end["master"] == answer["bridge"]


def test_a_job_link_that_cannot_be_made_is_refused_and_leaves_the_other_jobs_link_alone():
    def check() -> dict:
        first, second = job_namespace(), job_namespace()
        network.attach(JobLink(BRIDGE, "jwvtestjob1", "198.51.100.3/25", GATEWAY, []), first)
        try:
            network.attach(JobLink(BRIDGE, "jwvtestjob1", "198.51.100.4/25", GATEWAY, []), second)
            refused = ""
        except network.NetworkError as exc:
            refused = str(exc)
        try:
            network.attach(JobLink("jwt-nobridge", "jwvtestjob2", "198.51.100.5/25", GATEWAY, []), second)
        except network.NetworkError as exc:
            refused += " | " + str(exc)
        answer = {"refused": refused, "host": links_of(), "second": links_of(second), "first": links_of(first)}
        for pid in (first, second):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        return answer

    answer = in_own_host(check)
    assert "File exists" in answer["refused"] and "bridge jwt-nobridge is missing" in answer["refused"]
    assert "jwvtestjob1" in answer["host"] and "jwvtestjob2" not in answer["host"]
    assert answer["first"]["eth0"]["addresses"] == ["198.51.100.3/25"]
    assert set(answer["second"]) == {"lo"}


def test_a_jobs_link_goes_with_its_namespace():
    def check() -> dict:
        job = job_namespace()
        network.attach(JobLink(BRIDGE, "jwvtestjob3", "198.51.100.6/25", GATEWAY, []), job, rate_bps=1 << 20)
        shaped = "jwvtestjob3" in links_of()
        os.kill(job, 9)
        os.waitpid(job, 0)
        deadline = time.monotonic() + 10
        while "jwvtestjob3" in links_of() and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"made": shaped, "left": sorted(links_of())}

    answer = in_own_host(check)
    assert answer["made"] and answer["left"] == sorted(["lo", BRIDGE])
