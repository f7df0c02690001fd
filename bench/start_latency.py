"""Start latency and CPU overhead of the sandbox engine, each beside its anchors from the same run.

    python bench/start_latency.py [--runs N]

Anchors: a bare /bin/true (fork + exec + wait from Python), bubblewrap with equivalent isolation
(every namespace, minimal read-only root, fresh /proc and /dev, private /tmp, new session, no
capabilities), and a bare Python interpreter start (what a job must not cost). The engine starts
/bin/true with every namespace, seccomp, and memory, CPU, pids and time limits. Runs interleave the
three so machine noise hits them alike; compare ratios, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

from jupyter_worker.sandbox import LaunchSpec, Sandbox
from jupyter_worker.spec import Limits

# bwrap with the same isolation as our engine; one option group a line.
BWRAP = shlex.split(
    """
    bwrap --unshare-all --die-with-parent --new-session --cap-drop ALL --uid 65534 --gid 65534
    --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin
    --symlink usr/lib /lib --symlink usr/lib64 /lib64 --ro-bind /etc/ld.so.cache /etc/ld.so.cache
    --proc /proc --dev /dev --tmpfs /tmp --tmpfs /work --chdir /work --remount-ro / /bin/true
    """
)
LIMITS = Limits(memory_mb=256, cpu_percent=100, pids=64, timeout_s=60)
CPU_LOOP = (
    "import time\nt = time.process_time()\nx = 0\nfor i in range(6_000_000): x += i * i\nprint(time.process_time() - t)"
)


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def engine_true(sandbox: Sandbox) -> None:
    with sandbox.launch(LaunchSpec(["/bin/true"], limits=LIMITS)) as job:
        outcome = job.wait()
    assert outcome is not None and outcome.exit_code == 0, outcome


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def start_latency(sandbox: Sandbox, runs: int) -> None:
    cases = {
        "bare /bin/true": lambda: subprocess.run(["/bin/true"], check=True),
        "python3 -c pass (anchor: an interpreter start)": lambda: subprocess.run(
            [sys.executable, "-c", "pass"], check=True
        ),
        "bwrap, every namespace": lambda: subprocess.run(BWRAP, check=True),
        "engine, every namespace + limits + seccomp": lambda: engine_true(sandbox),
    }
    if not shutil.which("bwrap"):
        del cases["bwrap, every namespace"]
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(3):
        for action in cases.values():
            action()
    for _ in range(runs):
        for name, action in cases.items():
            samples[name].append(timed(action))
    print(f"start latency of /bin/true, {runs} runs each (ms)")
    print(f"  {'case':<48} {'p50':>7} {'p95':>7}")
    for name, values in samples.items():
        p50, p95 = summary(values)
        print(f"  {name:<48} {p50:7.2f} {p95:7.2f}")
    engine = summary(samples["engine, every namespace + limits + seccomp"])[0]
    if "bwrap, every namespace" in samples:
        print(
            f"  engine p50 / bwrap p50: {engine / summary(samples['bwrap, every namespace'])[0]:.2f}x (target <= 1.5x)"
        )
    print(f"  engine p50 / bare p50:  {engine / summary(samples['bare /bin/true'])[0]:.2f}x")


def cpu_overhead(sandbox: Sandbox, runs: int) -> None:
    """CPU time (not wall time) of a CPU-bound loop, bare and in the sandbox, in pairs whose order
    alternates, so that what else runs on this shared machine meanwhile (other programs, the engine's
    next standby being prepared just as a job starts) weighs on both alike. Printed: the median of
    the pairs' ratios (the target's figure) and the ratio of the best runs (the cost with no
    interference at all)."""
    bare, inside = [], []

    def run_bare() -> None:
        out = subprocess.run([sys.executable, "-c", CPU_LOOP], check=True, capture_output=True, text=True).stdout
        bare.append(float(out))

    def run_inside() -> None:
        inside.append(float(sandbox.run(LaunchSpec(["python3", "-c", CPU_LOOP])).stdout))

    for i in range(runs):
        for action in (run_bare, run_inside) if i % 2 == 0 else (run_inside, run_bare):
            action()
    ratio = statistics.median(i / b for b, i in zip(bare, inside, strict=True))
    print(
        f"CPU-bound loop, {runs} pairs (s of CPU time): bare {statistics.median(bare):.3f}, in the sandbox "
        f"{statistics.median(inside):.3f}; median of the pairs' ratios {ratio:.3f} (target <= 1.03), "
        f"best runs' ratio {min(inside) / min(bare):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the engine needs it)")
    with Sandbox() as sandbox:
        print(f"host: {os.uname().release}, cgroup {sandbox.info['cgroup_mode']}, {os.cpu_count()} CPUs")
        start_latency(sandbox, args.runs)
        cpu_overhead(sandbox, 11)


if __name__ == "__main__":
    main()
