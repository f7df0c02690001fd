"""Network modes: start latency of isolated beside none and host, and a download inside an
isolated job beside the same download on the host (run as root; nftables installed).

    python bench/network.py [--runs N] [--mib M]

"The internet" is a namespace made here (tests/executor/internet.py), routed through the host,
so the download crosses the job's veth, the bridge, the NAT and the filter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from executor import Daemon, run_to_end
from start_latency import summary

from jupyter_worker.client import Client
from tests.executor import internet

DOWNLOAD = """
import sys, time, urllib.request
start = time.perf_counter()
with urllib.request.urlopen(sys.argv[1], timeout=60) as response:
    size = 0
    while chunk := response.read(1 << 20):
        size += len(chunk)
print(size, time.perf_counter() - start)
"""


TARGET = 1.2  # issue 19: an isolated start at most 1.2x a none start


def start_latency(client: Client, runs: int) -> None:
    """Interleaved samples (none, host, isolated, none, ...), so the machine's load hits each alike."""
    samples: dict[str, list[float]] = {mode: [] for mode in ("none", "host", "isolated")}
    for _ in range(runs):
        for mode, values in samples.items():
            begin = time.perf_counter()
            final = run_to_end(client, {"command": ["/bin/true"], "network": mode, "python_prefixes": []})
            assert final.status.value == "COMPLETED", final
            values.append((time.perf_counter() - begin) * 1000)
    print(f"submit to COMPLETED of /bin/true, {runs} runs each, interleaved (ms)")
    base, base_p95 = summary(samples["none"])
    print(f"  anchor: none  p50 {base:7.2f}  p95 {base_p95:7.2f}")
    for mode in ("host", "isolated"):
        p50, p95 = summary(samples[mode])
        extra = statistics.median(b - a for a, b in zip(samples["none"], samples[mode], strict=True))
        target = f"; target <= {TARGET:.1f}x" if mode == "isolated" else ""
        print(
            f"  {mode:<12}  p50 {p50:7.2f}  p95 {p95:7.2f}  ({p50 / base:.2f}x none{target}; "
            f"median of paired differences {extra:+.2f} ms)"
        )


def download(client: Client, mib: int) -> None:
    url = f"http://{internet.SERVER}:{internet.PORT}/{mib << 20}"
    begin = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        while response.read(1 << 20):
            pass
    outside = time.perf_counter() - begin
    job = client.run({"command": ["python3", "-c", DOWNLOAD, url], "network": "isolated", "limits": {"memory_mb": 256}})
    final = next(e["job"] for e in client.follow(job.id) if e["event"] == "end")
    size, inside = client.logs(job.id)[0][0].data.decode().split()
    assert final.status.value == "COMPLETED" and int(size) == mib << 20
    print(f"download of {mib} MiB from the test server (MB/s)")
    print(f"  anchor: on the host      {mib * 1.048576 / outside:8.1f}")
    print(
        f"  inside an isolated job   {mib * 1.048576 / float(inside):8.1f}  ({outside / float(inside):.2f}x the host)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()
    net = internet.Internet()
    net.start()
    try:
        with tempfile.TemporaryDirectory(prefix="jupyter-worker-bench-") as folder:
            os.chmod(folder, 0o755)
            daemon = Daemon(
                folder,
                "--Policy.isolated_bridge=jwt-brb",
                "--Policy.isolated_subnet=198.51.100.128/25",
                f"--Policy.isolated_dns=['{internet.SERVER}']",
            )
            try:
                with Client(daemon.socket) as client:
                    start_latency(client, args.runs)
                    download(client, args.mib)
            finally:
                daemon.stop()
    finally:
        net.stop()


if __name__ == "__main__":
    main()
