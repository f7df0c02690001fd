"""The Slurm backend beside Slurm itself, measured in the same run on the test cluster (root; the
Slurm and munge packages installed: dev/test installs them).

    python bench/slurm.py [--runs N]

- submit to COMPLETED of /bin/true through the head executor's Slurm backend (a user's request,
  followed to its end as the widget and `run --wait` follow it), beside `sbatch --wrap true` as the
  same user, polled with `scontrol show job` every POLL_S until Slurm says COMPLETED; alternated
  run by run, so both see the same machine. Target: at most 1.3x.
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import subprocess
import sys
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
            pwd.getpwnam(USER)

            def measure() -> dict[str, list[float]]:
                samples: dict[str, list[float]] = {"backend": [], "sbatch": []}
                through_backend(head.socket)  # the first of each pays the controller's first pass
                plain_sbatch(cluster)
                for _ in range(args.runs):
                    samples["backend"].append(through_backend(head.socket))
                    samples["sbatch"].append(plain_sbatch(cluster))
                return samples

            samples = as_user(USER, measure)
    backend, anchor = (statistics.median(samples[name]) * 1000 for name in ("backend", "sbatch"))
    print(f"submit to COMPLETED of /bin/true, {args.runs} runs each, alternated (ms, p50)")
    print(f"  through the Slurm backend (followed to its end)   {backend:8.1f}")
    print(f"  anchor: sbatch --wrap true, polled every {POLL_S * 1000:.0f} ms   {anchor:8.1f}")
    print(f"  ratio {backend / anchor:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
