"""A stand-in for "the internet": a network namespace of the test's own, routed through the host,
with an HTTP server and a DNS server, so isolated jobs' NAT path is exercised for real without a
packet leaving this machine. It also holds addresses in ranges a job must not reach (a special-purpose
range, the metadata address), routed to it, so a broken filter would show without touching the LAN.
Every address is a documentation or special-purpose one (never 10/8, 172.16/12 or 192.168/16, which
the machine's own networks may use): the special range 192.0.0.0/24 is in the filter's one set of
blocked ranges with RFC 1918's, so reaching it tests that set.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.request

from pyroute2 import IPRoute

from jupyter_worker.sandbox.network import delete_links

HOST_SIDE, FAR_SIDE = "jwt-inet0", "jwt-inet1"
HOST_ADDRESS, SERVER = "203.0.113.1", "203.0.113.2"
SPECIAL, METADATA = "192.0.0.200", "169.254.169.254"
NAME = "internet.test"
PORT = 8080
SINK_PORT = PORT + 1

_SERVER = textwrap.dedent(
    """
    import http.server, os, socket, socketserver, struct, sys, threading
    from pyroute2 import IPRoute
    from jupyter_worker.sandbox import libc
    libc.unshare(libc.CLONE_NEWNET)
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        eth = ipr.link_lookup(ifname=sys.argv[1])[0]
        ipr.addr("add", index=eth, address=sys.argv[2], prefixlen=24)
        for extra in sys.argv[4:6]:
            ipr.addr("add", index=lo, address=extra, prefixlen=32)
        ipr.link("set", index=eth, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=sys.argv[3])
    payload = os.urandom(1 << 20)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            size = int(self.path.strip("/") or 0) or 13
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if size == 13:
                self.wfile.write(b"hello, world\\n")
                return
            while size > 0:
                chunk = payload[: min(size, len(payload))]
                self.wfile.write(chunk)
                size -= len(chunk)

        def log_message(self, *args):
            pass

    def dns():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 53))
        while True:
            query, peer = sock.recvfrom(512)
            end = query.index(b"\\0", 12) + 5
            header = query[:2] + b"\\x81\\x80" + query[4:6] + b"\\x00\\x01\\x00\\x00\\x00\\x00"
            answer = b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04" + socket.inet_aton(sys.argv[2])
            sock.sendto(header + query[12:end] + answer, peer)

    def sink():
        listener = socket.create_server(("0.0.0.0", int(sys.argv[6]) + 1))
        while True:
            conn, _ = listener.accept()
            size = 0
            while chunk := conn.recv(1 << 16):
                size += len(chunk)
            conn.sendall(str(size).encode())
            conn.close()

    threading.Thread(target=dns, daemon=True).start()
    threading.Thread(target=sink, daemon=True).start()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[6])), Handler)
    print("serving", flush=True)
    server.serve_forever()
    """
)


class Internet:
    """Start with start(); stop() removes the namespace (with its process) and the host's veth."""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, FAR_SIDE, SERVER, HOST_ADDRESS, SPECIAL, METADATA, str(PORT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        pid = int(self.process.stdout.readline())
        with IPRoute() as ipr:
            ipr.link("add", ifname=HOST_SIDE, kind="veth", peer=FAR_SIDE)
            ipr.link("set", index=ipr.link_lookup(ifname=FAR_SIDE)[0], net_ns_pid=pid)
            host = ipr.link_lookup(ifname=HOST_SIDE)[0]
            ipr.addr("add", index=host, address=HOST_ADDRESS, prefixlen=24)
            ipr.link("set", index=host, state="up")
            for far in (SPECIAL, METADATA):
                ipr.route("add", dst=f"{far}/32", gateway=SERVER)
        with open(f"/proc/sys/net/ipv4/conf/{HOST_SIDE}/forwarding", "w") as f:
            f.write("1")
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "serving"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        delete_links([HOST_SIDE])


def reachable_from_here(address: str, timeout: float = 3.0) -> bool:
    """The control: a host-side request to address:PORT (proves a refusal in a job is the filter)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{PORT}/", timeout=timeout) as response:
            return response.read() == b"hello, world\n"
    except OSError:
        return False
