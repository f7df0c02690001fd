"""Executor figures, each beside its anchor from the same run (run as root, bubblewrap installed).

    python bench/executor.py [--quick]

- submit to terminal state of /bin/true through the socket, beside a bare subprocess and bwrap;
- sustained jobs per second with 8 concurrent clients;
- a job writing 1 GiB to stdout: capture rate, every byte reaching a follower, daemon RSS growth;
- 1,000 concurrently running sleep jobs: daemon RSS and the supervisors' PSS;
- the first page of 50 out of 100,000 stored jobs;
- a held job's end after its holder (a Jupyter server's hold) is killed, beside a stop request;
- the daemon's CPU time with 300 idle follow streams of a quiet job, and 300 watch streams, for 10 s,
  beside none.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

from jupyter_worker.client import Client, ExecutorUnavailable
from jupyter_worker.executor.store import JobStore
from jupyter_worker.limits import Limits
from jupyter_worker.spec import JobRecord, JobStatus

sys.path.insert(0, os.path.dirname(__file__))
from start_latency import BWRAP, summary


class Daemon:
    def __init__(self, folder: str, *flags: str):
        self.socket = os.path.join(folder, "executor.sock")
        self.state_dir = os.path.join(folder, "state")
        command = [sys.executable, "-m", "jupyter_worker.cli", "executor", "--socket", self.socket, *flags]
        command += ["--state-dir", self.state_dir]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                Client(self.socket).capabilities()
                return
            except ExecutorUnavailable:
                time.sleep(0.05)
        raise SystemExit("executor did not start")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) / 1024

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait()


def run_to_end(client: Client, job: dict) -> JobRecord:
    record = client.run(job)
    for event in client.follow(record.id):
        if event["event"] == "end":
            return event["job"]
    raise RuntimeError("no end")


def submit_latency(daemon: Daemon, runs: int) -> None:
    client = Client(daemon.socket)
    cases = {
        "bare subprocess /bin/true": lambda: subprocess.run(["/bin/true"], check=True),
        "bwrap /bin/true": lambda: subprocess.run(BWRAP, check=True),
        "executor: submit to COMPLETED": lambda: run_to_end(client, {"command": ["/bin/true"], "python_prefixes": []}),
    }
    samples = {name: [] for name in cases}
    for _ in range(runs):
        for name, action in cases.items():
            start = time.perf_counter()
            action()
            samples[name].append((time.perf_counter() - start) * 1000)
    print(f"submit to terminal state, {runs} runs each, interleaved (ms)")
    bwrap = summary(samples["bwrap /bin/true"])[0]
    for name, values in samples.items():
        p50, p95 = summary(values)
        print(f"  {name:<34} p50 {p50:7.2f}  p95 {p95:7.2f}  ({p50 / bwrap:.2f}x bwrap)")
    print("  target: executor p50 <= 1.5x bwrap (the anchor above, same run)")


def throughput(daemon: Daemon, seconds: float, clients: int = 8) -> None:
    done = [0] * clients
    stop_at = time.monotonic() + seconds

    def worker(index: int) -> None:
        client = Client(daemon.socket)
        while time.monotonic() < stop_at:
            run_to_end(client, {"command": ["/bin/true"], "python_prefixes": []})
            done[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start, daemon_cpu, host_busy = time.monotonic(), cpu_seconds(daemon.process.pid), busy_seconds()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    jobs = max(1, sum(done))
    daemon_ms = (cpu_seconds(daemon.process.pid) - daemon_cpu) * 1000 / jobs
    host_ms = (busy_seconds() - host_busy) * 1000 / jobs
    bare, bare_end = 0, time.monotonic() + 1
    while time.monotonic() < bare_end:
        subprocess.run(["/bin/true"], check=True)
        bare += 1
    bwrap_rate = _bwrap_rate(seconds, clients)
    print(
        f"sustained: {sum(done) / elapsed:.1f} jobs/s with {clients} clients over {elapsed:.1f} s "
        f"(target >= 150; anchors: bwrap'd /bin/true in {clients} loops {bwrap_rate:.1f}/s, a bare subprocess "
        f"loop {bare} /bin/true a second); CPU a job: the daemon {daemon_ms:.2f} ms of the host's {host_ms:.1f} ms "
        "(every process, other users' too)"
    )


def _bwrap_rate(seconds: float, loops: int) -> float:
    """bwrap (as in bench/start_latency.py: namespaces and a root, no cgroup) of /bin/true, run by
    `loops` threads at once for `seconds`: a sandbox's throughput on this host, beside ours."""
    done = [0] * loops
    stop_at = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < stop_at:
            subprocess.run(BWRAP, check=True)
            done[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(loops)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - start)


def busy_seconds() -> float:
    """CPU seconds the whole host has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def big_output(daemon: Daemon, gib: float) -> None:
    size = int(gib * (1 << 30))
    client = Client(daemon.socket)
    rss_before = daemon.rss_mib()
    start = time.perf_counter()
    record = client.run({"command": ["head", "-c", str(size), "/dev/zero"], "python_prefixes": []})
    received = 0
    for event in client.follow(record.id):
        if event["event"] == "log" and event["stream"] == "stdout":
            received += len(event["data"])
        elif event["event"] == "end":
            final = event["job"]
    elapsed = time.perf_counter() - start
    log_path = os.path.join(daemon.state_dir, "jobs", record.id, "log")
    captured = os.path.getsize(log_path)
    wall = final.metrics["wall_seconds"]
    anchor_start = time.perf_counter()
    subprocess.run(f"head -c {size} /dev/zero > {log_path}.anchor", shell=True, check=True)
    anchor = size / (time.perf_counter() - anchor_start) / 1e6
    os.unlink(log_path + ".anchor")
    print(
        f"{gib:g} GiB to stdout: captured at {size / wall / 1e6:.0f} MB/s (job wall {wall:.2f} s; "
        f"anchor: head straight to a file {anchor:.0f} MB/s; target >= 300 MB/s); follower got "
        f"{received} of {size} bytes in {elapsed:.2f} s; log {captured} bytes; daemon RSS "
        f"{rss_before:.0f} -> {daemon.rss_mib():.0f} MiB (target growth < 50 MiB)"
    )


def _pss_kib(pid: int) -> int:
    """A process's proportional share of memory (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return int(next(line for line in f if line.startswith("Pss:")).split()[1])
    except (OSError, StopIteration, ValueError):
        return 0


def _process_tree() -> dict[int, list[int]]:
    """Every process's children, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def _descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _spawner_pid(daemon_pid: int, children: dict[int, list[int]]) -> int:
    for pid in _descendants(daemon_pid, children):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"jupyter_worker.sandbox.spawner" in f.read():
                    return pid
        except OSError:
            pass
    raise RuntimeError("no spawner under the daemon")


def job_pss_kib(daemon_pid: int) -> tuple[list[dict[str, int]], list[int]]:
    """Per running job, the PSS (KiB) of every one of its processes: its share of the monitor (the
    one process that follows every running job: its PSS over the jobs it follows), the job's init
    (adopted by the spawner once its standby handed the job over) and the job's own processes
    (every descendant of the init, so a daemonized orphan counts too). Also the standbys' PSS (a
    Python supervisor with its Python init: no job yet). PSS charges each shared page to its
    sharers, so the per-job sum is each job's share of the host memory its processes use."""
    children = _process_tree()
    spawner = _spawner_pid(daemon_pid, children)
    python = _exe(spawner)
    monitor, inits, standbys = 0, [], []
    for child in children.get(spawner, []):
        if _comm(child) == "jw-monitor":
            monitor = _pss_kib(child)
        elif _exe(child) == python:
            standbys.append(sum(map(_pss_kib, [child, *_descendants(child, children)])))
        else:
            inits.append(child)
    jobs = [
        {"supervisor": 0, "init": _pss_kib(init), "job": sum(map(_pss_kib, _descendants(init, children)))}
        for init in inits
        if _descendants(init, children)
    ]
    for job in jobs:
        job["supervisor"] = monitor // len(jobs)
    return jobs, standbys


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def bwrap_sleepers_pss_kib(count: int) -> float:
    """The anchor: `count` bwrap'd sleeps (bwrap as in bench/start_latency.py), each one's PSS
    (KiB, every process of it), measured together as the jobs are."""
    command = [*BWRAP[:-1], "sleep", "600"]
    sleepers = [subprocess.Popen(command) for _ in range(count)]
    try:
        deadline, running, children = time.monotonic() + 30, 0, {}
        while running < count and time.monotonic() < deadline:
            time.sleep(0.5)  # a loaded host takes a while to start them all
            children = _process_tree()
            running = sum(
                1 for p in sleepers if any(_exe(pid).endswith("/sleep") for pid in _descendants(p.pid, children))
            )
        total = sum(_pss_kib(pid) for p in sleepers for pid in [p.pid, *_descendants(p.pid, children)])
        if running != count:
            raise RuntimeError(f"only {running} of {count} bwrap'd sleeps are running")
        return total / count
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


def many_sleepers(daemon: Daemon, count: int) -> None:
    client = Client(daemon.socket)
    start = time.perf_counter()
    ids = [client.run({"command": ["sleep", "600"], "python_prefixes": []}).id for _ in range(count)]
    while client.list(status=["QUEUED"], limit=1)[0]:
        time.sleep(0.2)
    deadline = time.monotonic() + 60
    while len(job_pss_kib(daemon.process.pid)[0]) < count and time.monotonic() < deadline:
        time.sleep(0.2)  # a run is answered once handed over: wait until every command runs
    started = time.perf_counter() - start
    time.sleep(1.0)  # the last jobs' inits settle into their running form
    jobs, standbys = job_pss_kib(daemon.process.pid)
    anchor = bwrap_sleepers_pss_kib(count)
    per_job = sum(sum(job.values()) for job in jobs) / max(len(jobs), 1) / 1024
    parts = {role: sum(job[role] for job in jobs) / max(len(jobs), 1) / 1024 for role in ("supervisor", "init", "job")}
    print(
        f"{count} running sleep jobs (all started in {started:.1f} s): daemon RSS {daemon.rss_mib():.0f} MiB "
        f"(target < 300); {len(jobs)} jobs measured"
    )
    print(
        f"  PSS a job, every process of it: {per_job:.2f} MiB (monitor's share {parts['supervisor']:.2f}, init "
        f"{parts['init']:.2f}, the job's own {parts['job']:.2f}); target <= 2 MiB; a bwrap'd sleep "
        f"{anchor / 1024:.2f} MiB ({per_job * 1024 / anchor:.1f}x); {len(standbys)} standbys "
        f"{sum(standbys) / 1024:.1f} MiB in all"
    )
    for job_id in ids:
        client.stop(job_id, grace_s=0)
    while client.list(status=["RUNNING"], limit=1)[0]:
        time.sleep(0.2)


HOLDER = """
import asyncio, sys
from jupyter_worker.client import AsyncClient

async def main():
    hold = await AsyncClient(sys.argv[1]).hold("bench-holder")
    print("held", flush=True)
    await hold.lost()

asyncio.run(main())
"""


def time_to_end(client: Client, job_id: str, ending: Callable[[], None]) -> float:
    """Milliseconds from ending() to the end event of the running job."""
    events = client.follow(job_id)
    for event in events:
        if event["event"] == "status" and event["job"].status == "RUNNING":
            break
    start = time.perf_counter()
    ending()
    for event in events:
        if event["event"] == "end":
            return (time.perf_counter() - start) * 1000
    raise RuntimeError("no end")


def held_stop(daemon: Daemon, runs: int) -> None:
    client = Client(daemon.socket)
    sleeper = {"command": ["sleep", "600"], "python_prefixes": []}
    held, requested = [], []
    for _ in range(runs):
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, daemon.socket], stdout=subprocess.PIPE)
        holder.stdout.readline()
        job = client.run({**sleeper, "holder": "bench-holder"})
        held.append(time_to_end(client, job.id, holder.kill))
        holder.wait()
        job = client.run(sleeper)
        requested.append(time_to_end(client, job.id, lambda job=job: client.stop(job.id)))
    print(f"a running job's end, {runs} runs each (ms)")
    for name, values in (("its holder SIGKILLed", held), ("anchor: a stop request", requested)):
        p50, p95 = summary(values)
        print(f"  {name:<34} p50 {p50:7.2f}  p95 {p95:7.2f}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_streams(daemon: Daemon, streams: int, seconds: float) -> None:
    """Followers of a job that prints nothing, and list watchers while nothing changes, cost the
    daemon nothing: its CPU time over the same span with none, then with the streams open."""
    client = Client(daemon.socket)
    job = client.run({"command": ["sleep", "600"], "python_prefixes": []})
    while client.get(job.id).status != "RUNNING":
        time.sleep(0.05)

    def used(open_streams: Callable[[], list]) -> float:
        opened = open_streams()
        time.sleep(1)  # the streams' first events are sent and read
        before = cpu_seconds(daemon.process.pid)
        time.sleep(seconds)
        spent = cpu_seconds(daemon.process.pid) - before
        opened.clear()  # the streams' sockets close with them (a generator never iterated has no finally to run)
        return spent

    def follows() -> list:
        return [Client(daemon.socket).follow(job.id) for _ in range(streams)]

    def watches() -> list:
        return [Client(daemon.socket).watch() for _ in range(streams)]

    anchor = used(list)
    following, watching = used(follows), used(watches)
    print(
        f"daemon CPU over {seconds:.0f} s with a quiet running job: no streams {anchor * 1000:.0f} ms; "
        f"{streams} follow streams {following * 1000:.0f} ms; {streams} watch streams {watching * 1000:.0f} ms "
        f"(target: streams add < 1% of a core)"
    )
    client.stop(job.id, grace_s=0)


def listing(folder: str, count: int) -> None:
    state = os.path.join(folder, "state")
    os.makedirs(state, exist_ok=True)
    store = JobStore(os.path.join(state, "jobs.db"))
    now = time.time()
    with store.db:
        store.db.execute("BEGIN")
        for _ in range(count):
            job_id = str(uuid.uuid4())
            record = JobRecord(
                job_id, "true", "root", 0, ["true"], JobStatus.COMPLETED, Limits(), "none", now, finished_at=now
            )
            store.add(record, {})
    store.close()
    daemon = Daemon(folder, "--Policy.retention_days=0", f"--Policy.retention_max_bytes={1 << 50}")
    try:
        client = Client(daemon.socket)
        client.list(limit=50)
        samples = []
        for _ in range(20):
            start = time.perf_counter()
            jobs, _ = client.list(limit=50)
            samples.append((time.perf_counter() - start) * 1000)
        assert len(jobs) == 50
        p50, p95 = summary(samples)
        print(f"first page of 50 of {count} stored jobs: p50 {p50:.2f} ms, p95 {p95:.2f} ms (target < 50 ms)")
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller figures, for a smoke run")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("bwrap"):
        sys.exit("bench: run as root with bubblewrap installed")
    folder = tempfile.mkdtemp(prefix="jupyter-worker-bench-")
    try:
        daemon = Daemon(
            folder,
            "--Policy.max_concurrent_jobs=1100",
            f"--Policy.log_max_bytes={2 << 30}",
            "--Policy.default_memory_limit=256",
            "--Policy.max_jobs_per_user=0",  # root's 1,000 sleepers all run at once
            "--Policy.max_queued_per_user=0",
            "--Policy.default_disk_limit=None",  # the engine's own figures; bench/disk.py prices the disk limit
        )
        try:
            submit_latency(daemon, 10 if args.quick else 50)
            throughput(daemon, 3 if args.quick else 10)
            big_output(daemon, 0.1 if args.quick else 1)
            many_sleepers(daemon, 50 if args.quick else 1000)
            held_stop(daemon, 5 if args.quick else 20)
            idle_streams(daemon, 300, 3 if args.quick else 10)
        finally:
            daemon.stop()
        listing(os.path.join(folder, "listing"), 2_000 if args.quick else 100_000)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
