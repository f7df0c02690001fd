"""REST and websocket figures of the server extension, beside the executor socket's, same run.

    python bench/server.py [--quick]      (as root)

- submit to COMPLETED of /bin/true through REST (POST, then GET until terminal) beside the same
  through the executor socket;
- reading a 256 MiB job log of text lines through the websocket beside following it through the
  executor socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_worker.client import Client

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

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


async def rest_to_end(server: JupyterServer, http: AsyncHTTPClient) -> None:
    job = json.loads((await http.fetch(server.request("jobs", "POST", {"command": ["/bin/true"]}))).body)
    while job["status"] in ("QUEUED", "RUNNING"):
        job = json.loads((await http.fetch(server.request(f"jobs/{job['id']}"))).body)
    assert job["status"] == "COMPLETED", job


async def latency(server: JupyterServer, daemon: Daemon, runs: int) -> None:
    http = AsyncHTTPClient()
    client = Client(daemon.socket)
    rest, sock = [], []
    for _ in range(runs):
        start = time.perf_counter()
        await rest_to_end(server, http)
        rest.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        run_to_end(client, {"command": ["/bin/true"], "python_prefixes": []})
        sock.append((time.perf_counter() - start) * 1000)
    print(f"submit to COMPLETED of /bin/true, {runs} runs each (ms)")
    for name, values in (("REST (POST + GET until done)", rest), ("executor socket (run + follow)", sock)):
        p50, p95 = summary(values)
        print(f"  {name:<32} p50 {p50:7.2f}  p95 {p95:7.2f}")
    print("  target: REST p50 <= 20 ms")


async def log_throughput(server: JupyterServer, daemon: Daemon, mib: int) -> None:
    size = mib << 20
    client = Client(daemon.socket)
    script = f"yes 'a line of log text, as a job would print it' | head -c {size}"
    job = run_to_end(client, {"command": ["sh", "-c", script], "python_prefixes": []})
    start = time.perf_counter()
    got = sum(len(e["data"]) for e in client.follow(job.id) if e["event"] == "log")
    socket_rate = got / (time.perf_counter() - start) / 1e6
    request = server.request(f"jobs/{job.id}/stream?offset=0").url.replace("http:", "ws:")
    ws = await websocket_connect(
        HTTPRequest(request, headers={"Authorization": f"token {TOKEN}"}), max_message_size=64 << 20
    )
    start, received = time.perf_counter(), 0
    while True:
        message = json.loads(await ws.read_message())
        if message["type"] == "log":
            received += message["size"]
        elif message["type"] == "end":
            break
    ws.close()
    rate = received / (time.perf_counter() - start) / 1e6
    print(
        f"{mib} MiB job log: websocket {rate:.0f} MB/s ({received} bytes; target >= 100 MB/s) beside the "
        f"executor socket's follow {socket_rate:.0f} MB/s ({got} bytes)"
    )


async def main_async(quick: bool) -> None:
    folder = tempfile.mkdtemp(prefix="jupyter-worker-bench-")
    daemon = Daemon(folder, f"--Policy.log_max_bytes={1 << 30}")
    server = JupyterServer(daemon.socket, folder)
    try:
        await server.ready()
        await latency(server, daemon, 10 if quick else 50)
        await log_throughput(server, daemon, 32 if quick else 256)
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
