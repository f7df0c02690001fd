"""The cost of the disk limit (an ext4 image a job on a loop device), each figure beside its anchor,
a job without the limit, from the same run and the same executor (run as root).

    python bench/disk.py [--runs N]

- start latency: submit to COMPLETED of /bin/true, with and without a disk limit (1 GiB);
- write throughput: dd of 256 MiB to /work, buffered and with conv=fsync (the bytes reach the
  host's disk), with and without a disk limit (1 GiB), the two taking turns;
- reading a finished job's /work (a listing): the kept image mounted read-only for the call,
  beside a job without the limit whose /work is a plain folder;
- deleting a finished job whose /work holds 20,000 files: with the limit it is an unlink.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

from jupyter_worker.client import Client

sys.path.insert(0, os.path.dirname(__file__))
from executor import Daemon, run_to_end
from start_latency import summary

WITH = {"disk_mb": 1024}
WITHOUT: dict = {}
CASES = (("without a disk limit (anchor)", WITHOUT), ("with a 1 GiB disk limit", WITH))
DD = "dd if=/dev/zero of=/work/out bs=1M count=256 {} 2>&1 | tail -1"
DD_KINDS = (("buffered", ""), ("conv=fsync", "conv=fsync"))
MANY_FILES = "i=0; while [ $i -lt 20000 ]; do : > /work/f$i; i=$((i+1)); done"


def job(command: list[str], limits: dict) -> dict:
    return {"command": command, "limits": limits, "python_prefixes": []}


def log_of(client: Client, job_id: str) -> str:
    chunks, _, _ = client.logs(job_id)
    return b"".join(chunk.data for chunk in chunks).decode()


def start_latency(client: Client, runs: int) -> None:
    samples: dict[str, list[float]] = {name: [] for name, _ in CASES}
    for _ in range(runs):
        for name, limits in CASES:
            started = time.perf_counter()
            run_to_end(client, job(["/bin/true"], limits))
            samples[name].append((time.perf_counter() - started) * 1000)
    print(f"start latency: submit to COMPLETED of /bin/true, {runs} runs each (ms)")
    for name, values in samples.items():
        p50, p95 = summary(values)
        print(f"  {name:<32} p50 {p50:7.2f}  p95 {p95:7.2f}")


def write_throughput(client: Client, runs: int) -> None:
    """The two cases take turns, so a change in the host's disk meanwhile touches both alike."""
    for kind, option in DD_KINDS:
        print(f"write throughput: dd of 256 MiB to /work, {kind}, {runs} runs each (MB/s as dd reports)")
        rates: dict[str, list[float]] = {name: [] for name, _ in CASES}
        for _ in range(runs):
            for name, limits in CASES:
                record = run_to_end(client, job(["sh", "-c", DD.format(option)], limits))
                match = re.search(r"([\d.]+) ([kMG]?B)/s", log_of(client, record.id))
                if match:
                    scale = {"kB": 1e-3, "B": 1e-6, "MB": 1, "GB": 1e3}[match.group(2)]
                    rates[name].append(float(match.group(1)) * scale)
        for name, values in rates.items():
            p50, _ = summary(values) if values else (float("nan"), 0)
            low, high = min(values, default=0), max(values, default=0)
            print(f"  {name:<32} p50 {p50:7.1f} MB/s   (min {low:.0f}, max {high:.0f})")


def read_and_delete(client: Client, runs: int) -> None:
    print(f"a finished job's /work of 20,000 files, {runs} runs each (ms)")
    for name, limits in CASES:
        listing, deleting = [], []
        for _ in range(runs):
            record = run_to_end(client, job(["sh", "-c", MANY_FILES], limits))
            started = time.perf_counter()
            client.files(record.id)
            listing.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            client.delete(record.id)
            deleting.append((time.perf_counter() - started) * 1000)
        print(f"  {name:<32} listing p50 {summary(listing)[0]:7.2f}   delete p50 {summary(deleting)[0]:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jupyter-worker-bench-") as folder:
        daemon = Daemon(folder, "--Policy.default_disk_limit=None")
        try:
            client = Client(daemon.socket)
            start_latency(client, args.runs)
            write_throughput(client, max(5, args.runs // 2))
            read_and_delete(client, max(3, args.runs // 4))
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
