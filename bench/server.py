"""REST and websocket figures of the server extension, beside the executor socket's, same run.

    python bench/server.py [--quick]      (as root)

- submit to COMPLETED of /bin/true through REST (POST, then a GET ?wait_s= that answers once it has
  ended; POST, then GETs polling; and POST, then the job's stream websocket until its end, as the
  panel does) beside the same job through the
  executor socket (run + follow), interleaved; one GET of a job beside the socket's get;
- reading a 256 MiB job log of text lines through the stream websocket (binary frames, the panel's;
  and the older text frames) beside following it through the executor socket, interleaved.
Each figure is printed beside its anchor from the same run, with the ratio and the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from jupyter_worker.client import Client
from jupyter_worker.server.handlers import LOG_FRAME

sys.path.insert(0, os.path.dirname(__file__))
from executor import Daemon, run_to_end
from start_latency import summary

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterServer:
    def __init__(self, executor_socket: str, root: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/api/worker/"
        command = [sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser", f"--port={self.port}"]
        command += [f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={root}"]
        command += [f"--JupyterWorker.socket={executor_socket}", "--JupyterWorker.embedded_executor=False"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self) -> None:
        client = AsyncHTTPClient()
        for _ in range(300):
            try:
                await client.fetch(self.request("capabilities"))
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise SystemExit("jupyter server did not start")

    def request(self, path: str, method: str = "GET", body: dict | None = None) -> HTTPRequest:
        data = json.dumps(body) if body is not None else None
        return HTTPRequest(self.base + path, method=method, body=data, headers={"Authorization": f"token {TOKEN}"})

    async def websocket(self, path: str) -> WebSocketClientConnection:
        url = (self.base + path).replace("http:", "ws:")
        request = HTTPRequest(url, headers={"Authorization": f"token {TOKEN}"})
        return await websocket_connect(request, max_message_size=64 << 20)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


JOB = {"command": ["/bin/true"], "python_prefixes": []}  # the same job on each path


async def rest_to_end(server: JupyterServer, http: AsyncHTTPClient, wait: str = "") -> None:
    """POST, then GET until it has ended (wait="?wait_s=30": each GET answers once it has ended)."""
    job = json.loads((await http.fetch(server.request("jobs", "POST", JOB))).body)
    while job["status"] in ("QUEUED", "RUNNING"):
        job = json.loads((await http.fetch(server.request(f"jobs/{job['id']}{wait}"))).body)
    assert job["status"] == "COMPLETED", job


async def rest_stream_to_end(server: JupyterServer, http: AsyncHTTPClient) -> None:
    """POST, then the job's stream websocket until its end message: what the panel does."""
    job = json.loads((await http.fetch(server.request("jobs", "POST", JOB))).body)
    ws = await server.websocket(f"jobs/{job['id']}/stream?frames=binary")
    while True:
        message = await ws.read_message()
        if isinstance(message, str) and json.loads(message)["type"] == "end":
            break
    ws.close()
    assert json.loads(message)["job"]["status"] == "COMPLETED", message


def line(label: str, values: list[float], anchor: tuple[float, float] | None, target: str = "") -> None:
    p50, p95 = summary(values)
    ratio = f"  {p50 / anchor[0]:.2f}x the anchor{target}" if anchor else "  (anchor)"
    print(f"  {label:<44} p50 {p50:7.2f}  p95 {p95:7.2f}{ratio}")


async def latency(server: JupyterServer, daemon: Daemon, runs: int) -> None:
    """Interleaved samples, each path one run in turn, so load on the machine falls on all alike."""
    http = AsyncHTTPClient()
    client = Client(daemon.socket)
    samples: dict[str, list[float]] = {name: [] for name in ("socket", "poll", "wait", "stream", "get", "socket get")}
    record = run_to_end(client, JOB)
    for _ in range(runs):
        for name, action in (
            ("socket", lambda: asyncio.to_thread(run_to_end, client, JOB)),
            ("poll", lambda: rest_to_end(server, http)),
            ("wait", lambda: rest_to_end(server, http, "?wait_s=30")),
            ("stream", lambda: rest_stream_to_end(server, http)),
            ("get", lambda: http.fetch(server.request(f"jobs/{record.id}"))),
            ("socket get", lambda: asyncio.to_thread(client.get, record.id)),
        ):
            start = time.perf_counter()
            await action()
            samples[name].append((time.perf_counter() - start) * 1000)
    anchor = summary(samples["socket"])
    print(f"submit to COMPLETED of /bin/true, {runs} runs each, interleaved (ms)")
    line("executor socket (run + follow)", samples["socket"], None)
    line("REST (POST + GET ?wait_s=30)", samples["wait"], anchor, "; target <= 1.3x")
    line("REST (POST + GET, polling until done)", samples["poll"], anchor, "; target <= 1.3x")
    line("REST + websocket (POST + stream until end)", samples["stream"], anchor, "; target <= 1.3x")
    print("one request for a job's record (ms)")
    line("executor socket get", samples["socket get"], None)
    line("REST GET jobs/{id}", samples["get"], summary(samples["socket get"]))


def socket_follow(client: Client, job_id: str) -> int:
    return sum(len(e["data"]) for e in client.follow(job_id) if e["event"] == "log")


async def websocket_read(server: JupyterServer, job_id: str, frames: str) -> int:
    ws = await server.websocket(f"jobs/{job_id}/stream?offset=0&frames={frames}")
    received = 0
    while True:
        message = await ws.read_message()
        if isinstance(message, bytes):
            received += len(message) - LOG_FRAME.size
            continue
        event = json.loads(message)
        if event["type"] == "log":
            received += event["size"]
        elif event["type"] == "end":
            break
    ws.close()
    return received


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def log_throughput(server: JupyterServer, daemon: Daemon, mib: int, rounds: int) -> None:
    """The whole log of an ended job, each way in turn, `rounds` times; MB/s (10^6 bytes). Also the
    CPU each way costs outside the executor (the reader's, and the Jupyter server's), per MiB: a
    figure the machine's load moves far less than the rate."""
    size = mib << 20
    client = Client(daemon.socket)
    script = f"yes 'a line of log text, as a job would print it' | head -c {size}"
    job = run_to_end(client, {"command": ["sh", "-c", script], "python_prefixes": []})
    rates: dict[str, list[float]] = {"socket": [], "binary": [], "text": []}
    cpu: dict[str, list[float]] = {name: [] for name in rates}
    for _ in range(rounds):
        for name, samples in rates.items():
            start, reader, relay = time.perf_counter(), time.process_time(), cpu_s(server.process.pid)
            if name == "socket":
                got = await asyncio.to_thread(socket_follow, client, job.id)
            else:
                got = await websocket_read(server, job.id, name)
            assert got == size, (name, got)
            samples.append(size / (time.perf_counter() - start) / 1e6)
            used = time.process_time() - reader + cpu_s(server.process.pid) - relay
            cpu[name].append(used * 1000 / mib)
    anchor = statistics.median(rates["socket"])
    print(f"reading a {mib} MiB job log, {rounds} rounds each, interleaved (MB/s, median; CPU outside the executor)")
    print(f"  {'executor socket follow':<44} {anchor:7.0f}  (anchor)  {statistics.median(cpu['socket']):5.1f} ms/MiB")
    for name, label in (("binary", "websocket, binary frames (the panel's)"), ("text", "websocket, text frames")):
        rate = statistics.median(rates[name])
        print(
            f"  {label:<44} {rate:7.0f}  {rate / anchor:.2f}x the anchor; target >= 1.0x"
            f"  {statistics.median(cpu[name]):5.1f} ms/MiB"
        )


async def main_async(quick: bool) -> None:
    folder = tempfile.mkdtemp(prefix="jupyter-worker-bench-")
    daemon = Daemon(folder, f"--Policy.log_max_bytes={1 << 30}")
    server = JupyterServer(daemon.socket, folder)
    try:
        await server.ready()
        await latency(server, daemon, 10 if quick else 50)
        await log_throughput(server, daemon, 32 if quick else 256, 3 if quick else 5)
    finally:
        server.stop()
        daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    main()
