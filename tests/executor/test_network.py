"""Network modes as jobs see them: none, host, and isolated (a private namespace on the project's
bridge with NAT and an egress filter). "The internet" is a namespace the test makes (internet.py);
no packet leaves this machine."""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest
from pyroute2 import IPRoute

from jupyter_worker.errors import WorkerError
from jupyter_worker.sandbox.network import isolated_problem
from tests.executor import internet
from tests.executor.conftest import started_daemon, wait_for

pytestmark = pytest.mark.skipif(
    isolated_problem() is not None, reason=f"this kernel cannot run isolated jobs: {isolated_problem()}"
)

BRIDGE, SUBNET = "jwt-br0", "198.51.100.0/25"  # a documentation range, free here
GATEWAY = "198.51.100.1"

PROBE = (
    """
import socket, sys, urllib.request
def tcp(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "open"
    except OSError as exc:
        return type(exc).__name__
for target in sys.argv[1:]:
    if target == "dns":
        try:
            print("dns", socket.gethostbyname("%s"))
        except OSError as exc:
            print("dns", type(exc).__name__)
    elif target == "web":
        print("web", urllib.request.urlopen("http://%s:%d/", timeout=5).read().decode().strip())
    else:
        host, port = target.rsplit(":", 1)
        print(target, tcp(host, int(port)))
""".replace("%s", internet.NAME, 1)
    .replace("%s", internet.SERVER, 1)
    .replace("%d", str(internet.PORT), 1)
)


@pytest.fixture(scope="module")
def world(users):
    """The internet stand-in, an executor whose isolated jobs resolve through it, and a host-side
    listener on 127.0.0.1 and on every address (0.0.0.0), as the Jupyter server would have."""
    net = internet.Internet()
    net.start()
    listener = socket.create_server(("0.0.0.0", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=_accept_until_closed, args=(listener,), daemon=True).start()
    flags = [
        f"--Policy.isolated_bridge={BRIDGE}",
        f"--Policy.isolated_subnet={SUBNET}",
        f"--Policy.isolated_dns=['{internet.SERVER}']",
    ]
    try:
        with started_daemon(flags) as daemon:
            yield daemon, port
    finally:
        listener.close()
        net.stop()


def _accept_until_closed(listener: socket.socket) -> None:
    """Accept and drop connections (a reachable service) until the fixture closes the listener."""
    while True:
        try:
            listener.accept()[0].close()
        except OSError:
            return


def probe(daemon, network: str, *targets: str) -> dict[str, str]:
    with daemon.client() as client:
        job = client.run({"command": ["python3", "-c", PROBE, *targets], "network": network})
        final = next(e["job"] for e in client.follow(job.id) if e["event"] == "end")
        output = b"".join(c.data for c in client.logs(job.id)[0]).decode()
    assert final.status == "COMPLETED", (final, output)
    return dict(line.split(" ", 1) for line in output.splitlines())


def test_an_isolated_job_reaches_the_internet_through_nat_and_resolves_names(world):
    daemon, _ = world
    seen = probe(daemon, "isolated", "dns", "web")
    assert seen == {"dns": internet.SERVER, "web": "hello, world"}


def test_an_isolated_job_cannot_reach_the_host_private_ranges_or_metadata(world):
    daemon, port = world
    assert internet.reachable_from_here(internet.SPECIAL) and internet.reachable_from_here(internet.METADATA)
    targets = [
        f"127.0.0.1:{port}",
        f"{GATEWAY}:{port}",
        f"{internet.HOST_ADDRESS}:{port}",
        f"{internet.SPECIAL}:{internet.PORT}",
        f"{internet.METADATA}:{internet.PORT}",
    ]
    seen = probe(daemon, "isolated", *targets)
    assert all(seen[t] != "open" for t in targets), seen
    assert probe(daemon, "host", f"127.0.0.1:{port}")[f"127.0.0.1:{port}"] == "open"


def test_two_isolated_jobs_cannot_see_each_other(world):
    daemon, _ = world
    serve = (
        "import socket; s = socket.create_server(('0.0.0.0', 9000)); u = socket.socket(socket.AF_INET, "
        f"socket.SOCK_DGRAM); u.connect(('{internet.SERVER}', 9)); print(u.getsockname()[0], flush=True); s.accept()"
    )
    with daemon.client() as client:
        server = client.run({"command": ["python3", "-c", serve], "network": "isolated"})
        address = wait_for(
            lambda: b"".join(c.data for c in client.logs(server.id)[0]).decode().strip(),
            what="the listening job's address",
        )
        assert address.startswith(SUBNET.rsplit(".", 1)[0] + ".")
        seen = probe(daemon, "isolated", f"{address}:9000")
        assert seen[f"{address}:9000"] != "open"
        client.stop(server.id, grace_s=0)


TRANSFER = """
import socket, sys, time, urllib.request
start = time.perf_counter()
if sys.argv[1] == "down":
    size = len(urllib.request.urlopen(sys.argv[2], timeout=60).read())
else:
    conn = socket.create_connection((sys.argv[2], int(sys.argv[3])))
    conn.sendall(b"x" * int(sys.argv[4]))
    conn.shutdown(socket.SHUT_WR)
    size = int(conn.recv(64))
print(size, time.perf_counter() - start)
"""


def transfer(daemon, limits: dict, *args: str) -> tuple[int, float]:
    with daemon.client() as client:
        job = client.run({"command": ["python3", "-c", TRANSFER, *args], "network": "isolated", "limits": limits})
        final = next(e["job"] for e in client.follow(job.id) if e["event"] == "end")
        output = b"".join(c.data for c in client.logs(job.id)[0]).decode()
    assert final.status == "COMPLETED", (final, output)
    size, seconds = output.split()
    return int(size), float(seconds)


def test_a_bandwidth_cap_holds_each_way(world):
    daemon, _ = world
    cap, amount = 512 << 10, 2 << 20
    url = f"http://{internet.SERVER}:{internet.PORT}/{amount}"
    assert transfer(daemon, {}, "down", url)[1] < 1.0
    size, seconds = transfer(daemon, {"net_bps": cap}, "down", url)
    assert size == amount and amount / seconds < 1.3 * cap, (size, seconds)
    size, seconds = transfer(daemon, {"net_bps": cap}, "up", internet.SERVER, str(internet.SINK_PORT), str(amount))
    assert size == amount and amount / seconds < 1.3 * cap, (size, seconds)


def test_a_bandwidth_cap_on_the_hosts_network_is_refused(world):
    daemon, _ = world
    with daemon.client() as client, pytest.raises(WorkerError, match="cannot be enforced on the host's network"):
        client.run({"command": ["true"], "network": "host", "limits": {"net_bps": 1 << 20}})


def test_none_has_only_loopback_and_host_shares_the_hosts_interfaces(world):
    daemon, _ = world
    listing = "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))"
    with daemon.client() as client:
        for network, expected in (("none", "['lo']"), ("isolated", "['eth0', 'lo']")):
            job = client.run({"command": ["python3", "-c", listing], "network": network})
            wait_for(lambda j=job: client.get(j.id).status == "COMPLETED", what=network)
            assert client.logs(job.id)[0][0].data.decode().strip() == expected
        job = client.run({"command": ["python3", "-c", listing], "network": "host"})
        wait_for(lambda: client.get(job.id).status == "COMPLETED", what="host")
        assert internet.HOST_SIDE in client.logs(job.id)[0][0].data.decode()


def test_everything_is_removed_when_the_executor_stops(users):
    flags = [f"--Policy.isolated_bridge={BRIDGE}", f"--Policy.isolated_subnet={SUBNET}"]
    with started_daemon(flags) as daemon, daemon.client() as client:
        job = client.run({"command": ["true"], "network": "isolated"})
        wait_for(lambda: client.get(job.id).status == "COMPLETED", what="the job")
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=BRIDGE)
    with IPRoute() as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    assert BRIDGE not in names and not [n for n in names if n.startswith("jwv")]
    assert (
        "jupyter_worker"
        not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    )


def test_a_crashed_executors_bridge_and_rules_are_swept_by_the_next(users):
    flags = [f"--Policy.isolated_bridge={BRIDGE}", f"--Policy.isolated_subnet={SUBNET}"]
    with started_daemon(flags) as daemon:
        with daemon.client() as client:
            job = client.run({"command": ["true"], "network": "isolated"})
            wait_for(lambda: client.get(job.id).status == "COMPLETED", what="the job")
        daemon.kill_hard()
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=BRIDGE), "kill -9 leaves the bridge behind"
        daemon.start()
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=BRIDGE)
    assert (
        "jupyter_worker"
        not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    )
