"""The Slurm backend beside Slurm itself, measured in the same run on the test cluster (root; the
Slurm and munge packages installed: dev/test installs them).

    python bench/slurm.py [--runs N]

- submit to COMPLETED of /bin/true through the head executor's Slurm backend (a user's request,
  followed to its end as the widget and `run --wait` follow it), beside `sbatch --wrap true` as the
  same user, polled with `scontrol show job` every POLL_S until Slurm says COMPLETED. Target: at
  most 1.3x.

Slurm places a batch job at its next scheduling pass (about once a second here), not when it is
submitted, so a job waits 0 to 1 s for reasons of the clock alone. Each pair is therefore submitted
at the same moment (the anchor from a thread): both wait for the same pass, and the ratio shows
what the backend adds. A random pause between pairs spreads them over Slurm's cycle.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyter_worker.client import Client
from tests.conftest import local_users
from tests.executor.conftest import as_user, started_daemon
from tests.slurm.cluster import SlurmCluster, missing_programs

USER = "jwtest-alice"
POLL_S = 0.02  # the anchor's poll: finer than any a person would script


def through_backend(socket: str) -> float:
    """Seconds from submit to the end of /bin/true through the head's Slurm backend."""
    start = time.perf_counter()
    with Client(socket) as client:
        record = client.run({"command": ["/bin/true"], "backend": "slurm", "python_prefixes": []})
        for event in client.follow(record.id):
            if event["event"] == "end":
                if event["job"].status.value != "COMPLETED":
                    raise RuntimeError(f"the job ended {event['job'].ending}")
                return time.perf_counter() - start
    raise RuntimeError("the follow ended without an end")


def plain_sbatch(cluster: SlurmCluster) -> float:
    """Seconds from `sbatch --wrap true` to Slurm's COMPLETED, polled."""
    env = cluster.env
    start = time.perf_counter()
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", "--chdir=/tmp", "--wrap", "true"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    while True:
        argv = ["scontrol", "show", "job", "-o", job_id]
        shown = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if "JobState=COMPLETED" in shown.stdout:
            return time.perf_counter() - start
        if any(f"JobState={state}" in shown.stdout for state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")):
            raise RuntimeError(f"sbatch's job ended otherwise: {shown.stdout.strip()}")
        time.sleep(POLL_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0 or missing_programs():
        raise SystemExit(f"needs root and Slurm + munge installed (missing: {', '.join(missing_programs())})")
    with local_users(), SlurmCluster() as cluster:
        with started_daemon(cluster.head_config()) as head:

            def pair() -> tuple[float, float]:
                anchor: list[float] = []
                thread = threading.Thread(target=lambda: anchor.append(plain_sbatch(cluster)))
                thread.start()
                backend = through_backend(head.socket)
                thread.join()
                return backend, anchor[0]

            def measure() -> dict[str, list[float]]:
                samples: dict[str, list[float]] = {"backend": [], "sbatch": []}
                pair()  # the first of each pays the controller's first pass
                for _ in range(args.runs):
                    time.sleep(random.random())
                    backend, anchor = pair()
                    samples["backend"].append(backend)
                    samples["sbatch"].append(anchor)
                return samples

            samples = as_user(USER, measure)
    backend, anchor = (statistics.median(samples[name]) * 1000 for name in ("backend", "sbatch"))
    extra = statistics.median(b - a for b, a in zip(samples["backend"], samples["sbatch"], strict=True)) * 1000
    print(f"submit to COMPLETED of /bin/true, {args.runs} pairs submitted together (ms, p50)")
    print(f"  through the Slurm backend (followed to its end)   {backend:8.1f}")
    print(f"  anchor: sbatch --wrap true, polled every {POLL_S * 1000:.0f} ms   {anchor:8.1f}")
    print(f"  ratio {backend / anchor:.2f}x (target <= 1.3x); the backend's own share, p50 {extra:.1f} ms")


if __name__ == "__main__":
    main()
