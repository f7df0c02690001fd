"""The worker REST API behind JupyterHub, beside the same calls without the hub, same run.

    python bench/hub.py [--runs N]      (as root; dev/test installs the proxy into dev/proxy)

A real hub, proxy and executor, and a local user's single-user server (the test users of
tests/conftest.py, made and removed here; do not run it beside the test suite).
- GET jobs/{id}: through the hub's proxy with a hub token; straight to the single-user server with
  the same token (the server checks hub tokens with the hub, then caches); anchor: the executor
  socket's get.
- submit to COMPLETED of /bin/true through the proxy (POST, then a GET ?wait_s= answered once it
  has ended), beside the same job through the executor socket (run + follow).
- spawning the user's server until it answers (one sample; JupyterHub's own cost).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from start_latency import summary

from jupyter_worker.client import Client
from tests.conftest import local_users
from tests.executor.conftest import started_daemon
from tests.hub.conftest import ALICE, Hub

ENDED = ("COMPLETED", "FAILED", "STOPPED")


def timed(action: Callable[[], object], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        samples.append((time.perf_counter() - began) * 1000)
    return summary(samples)


def line(label: str, figures: tuple[float, float], anchor: tuple[float, float] | None, target: str = "") -> None:
    ratio = f"  ({figures[0] / anchor[0]:.2f}x the anchor{target})" if anchor else ""
    print(f"  {label:<44} p50 {figures[0]:7.2f} ms  p95 {figures[1]:7.2f} ms{ratio}")


JOB = {"command": ["/bin/true"], "python_prefixes": []}  # the same job on each path


def through_rest(hub: Hub, token: str) -> None:
    """POST, then GET ?wait_s= (answered once the job has ended)."""
    code, job = hub.worker(ALICE, "POST", "jobs", token, JOB)
    assert code == 201, job
    while job["status"] not in ENDED:
        job = hub.worker(ALICE, "GET", f"jobs/{job['id']}?wait_s=30", token)[1]


def through_socket(client: Client) -> None:
    """run, then follow until its end (as bench/executor.py and bench/server.py)."""
    job = client.run(JOB)
    for event in client.follow(job.id):
        if event["event"] == "end":
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with local_users(), started_daemon([]) as executor:
        hub = Hub(executor.socket)
        try:
            began = time.perf_counter()
            hub.start_server(ALICE)
            spawn_s = time.perf_counter() - began
            token = hub.token_for(ALICE)
            code, job = hub.worker(ALICE, "POST", "jobs", token, JOB)
            assert code == 201, job
            direct = hub.route_target(ALICE)
            with Client(executor.socket) as root:
                anchor = timed(lambda: root.get(job["id"]), args.runs)
                proxied = timed(lambda: hub.worker(ALICE, "GET", f"jobs/{job['id']}", token), args.runs)
                path = f"/user/{ALICE}/api/worker/jobs/{job['id']}"
                straight = timed(lambda: hub.request("GET", path, token, base=direct), args.runs)
                print(f"GET one job ({args.runs} runs)")
                line("anchor: executor socket", anchor, None)
                line("straight to the single-user server", straight, anchor)
                line("through the hub's proxy (as users call it)", proxied, anchor)
                socket_run = timed(lambda: through_socket(root), max(10, args.runs // 5))
                rest_run = timed(lambda: through_rest(hub, token), max(10, args.runs // 5))
                print(f"submit to COMPLETED of /bin/true ({max(10, args.runs // 5)} runs)")
                line("anchor: executor socket (run + follow)", socket_run, None)
                line("through the hub's proxy (POST + GET ?wait_s)", rest_run, socket_run, "; target <= 1.3x")
            print(f"spawning {ALICE}'s server until it answers: {spawn_s:.2f} s (one sample)")
        finally:
            hub.close()


if __name__ == "__main__":
    main()
