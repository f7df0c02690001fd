"""The isolated network mode: a project bridge on the host, one veth pair per job, outbound NAT and
an egress filter.

The bridge is made with pyroute2 (netlink), a job's veth, address and route with a few bare
rtnetlink requests (no fork, no move between namespaces: they were most of an isolated start); the
rules are one `nft -f` transaction on the project's own table, whose chains match only traffic of
the project's bridge.
Jobs on the bridge cannot reach the host (input from the bridge is dropped), each other (bridged
frames between its ports are dropped), private, link-local and other special ranges, or IPv6;
admins widen or narrow that with allow and deny lists. A job's veth dies with its namespace.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import SpecError
from . import libc
from .launch_spec import JobLink

TABLE_PREFIX = "jupyter_worker_"
VETH_PREFIX = "jwv"
JOB_IFNAME = "eth0"
BLOCKED = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)

# rtnetlink, as much as a job's start needs (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h)
_NLMSG = struct.Struct("IHHII")
_IFINFO = struct.Struct("BxHiII")
_IFADDR = struct.Struct("BBBBI")
_RTMSG = struct.Struct("BBBBBBBBI")
_NETLINK_ROUTE = 0
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_NLMSG_ERROR = 2
_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_NEWROUTE = 16, 18, 20, 24
_IFLA_IFNAME, _IFLA_MASTER, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 3, 10, 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_GATEWAY, _RT_TABLE_MAIN, _RTPROT_BOOT, _RTN_UNICAST = 5, 254, 3, 1
_IFF_UP = 0x1


class NetworkError(Exception):
    """The isolated network cannot be set up here; the message says why."""


def parse_rule(text: str) -> tuple[ipaddress.IPv4Network, int | None]:
    """An allow/deny entry: a CIDR, optionally with a port (203.0.113.0/24:443)."""
    address, _, port = text.partition(":")
    try:
        network = ipaddress.IPv4Network(address, strict=False)
        number = int(port) if port else None
    except ValueError:
        raise SpecError(f"egress rule {text!r}: use an IPv4 CIDR, optionally :PORT (e.g. 203.0.113.0/24:443)") from None
    if number is not None and not 0 < number < 65536:
        raise SpecError(f"egress rule {text!r}: port out of range")
    return network, number


_PROBE = """
import ipaddress
from pyroute2 import IPRoute
from jupyter_worker.sandbox import libc
from jupyter_worker.sandbox.network import Bridge
libc.unshare(libc.CLONE_NEWNET)
Bridge("probe-br", ipaddress.IPv4Network("10.0.0.0/30")).up()
with IPRoute() as ipr:
    ipr.link("add", ifname="probe-v0", kind="veth", peer="probe-v1")
"""


@functools.lru_cache(maxsize=1)
def isolated_problem() -> str | None:
    """Why this host cannot offer the isolated mode, or None: tried for real (a bridge, a veth
    pair, a NAT rule) in a throwaway network namespace, so the host is not touched."""
    if shutil.which("nft") is None:
        return "nftables is not installed (apt-get install nftables)"
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tried = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": package},
    )
    if tried.returncode == 0:
        return None
    return f"the kernel cannot make it: {(tried.stderr.strip().splitlines() or ['unknown'])[-1]}"


def ipv4_forwarding() -> bool:
    """Whether the host routes IPv4 between interfaces (needed for isolated jobs to reach anything)."""
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's resolvers a job can reach (a loopback resolver is the host's own: not reachable)."""
    servers = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    servers.append(words[1])
    except OSError:
        return []
    return [s for s in servers if _is_ipv4(s) and not ipaddress.IPv4Address(s).is_loopback]


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Bridge:
    """The project's bridge and its rules; one per executor (the name and subnet are settings)."""

    name: str
    subnet: ipaddress.IPv4Network
    dns: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @property
    def table(self) -> str:
        return TABLE_PREFIX + self.name.replace("-", "_")

    def addresses(self) -> list[str]:
        """The job addresses the subnet holds (the first is the bridge's)."""
        return [f"{host}/{self.subnet.prefixlen}" for host in list(self.subnet.hosts())[1:]]

    def ruleset(self) -> str:
        bridge, dns = f'"{self.name}"', ", ".join(self.dns)
        forward = [
            f"oifname {bridge} ct state established,related accept",
            f"oifname {bridge} drop",
            f"iifname {bridge} meta nfproto ipv6 drop",
        ]
        if dns:
            forward.append(f"iifname {bridge} ip daddr {{ {dns} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
        forward += [_rule(bridge, entry, "drop") for entry in self.deny]
        forward += [_rule(bridge, entry, "accept") for entry in self.allow]
        forward.append(f"iifname {bridge} ip daddr {{ {', '.join(BLOCKED)} }} drop")
        lines = [
            f"table inet {self.table} {{",
            "  chain input {",
            "    type filter hook input priority filter; policy accept;",
            f"    iifname {bridge} ct state established,related accept",
            f"    iifname {bridge} drop",
            "  }",
            "  chain forward {",
            "    type filter hook forward priority filter; policy accept;",
            *(f"    {rule}" for rule in forward),
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f"    ip saddr {self.subnet} oifname != {bridge} masquerade",
            "  }",
            "}",
            f"table bridge {self.table} {{",
            "  chain forward {",
            "    type filter hook forward priority filter; policy accept;",
            f'    iifname "{VETH_PREFIX}*" oifname "{VETH_PREFIX}*" drop',
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def up(self) -> None:
        """Make the bridge (if missing), its address and rules; safe to repeat."""
        if shutil.which("nft") is None:
            raise NetworkError("nft (nftables) is not installed: apt-get install nftables")
        try:
            with IPRoute() as ipr:
                if not ipr.link_lookup(ifname=self.name):
                    ipr.link("add", ifname=self.name, kind="bridge")
                index = ipr.link_lookup(ifname=self.name)[0]
                gateway = str(self.gateway)
                if not any(a.get_attr("IFA_ADDRESS") == gateway for a in ipr.get_addr(index=index)):
                    ipr.addr("add", index=index, address=gateway, prefixlen=self.subnet.prefixlen)
                ipr.link("set", index=index, state="up")
        except Exception as exc:
            raise NetworkError(f"bridge {self.name}: {exc}") from None
        _write(f"/proc/sys/net/ipv4/conf/{self.name}/forwarding", "1")
        _nft(self._delete_tables() + self.ruleset())

    def down(self) -> None:
        """Remove the rules and the bridge (jobs' veths go with their namespaces, leftovers here)."""
        if shutil.which("nft") is not None:
            _nft(self._delete_tables(), check=False)
        self.remove_links([*self.leftovers(set()), self.name])

    def exists(self) -> bool:
        with IPRoute() as ipr:
            return self._index(ipr) is not None

    def leftovers(self, keep: set[str]) -> list[str]:
        """Job veths on the bridge that belong to no job in keep (a crash's remains)."""
        with IPRoute() as ipr:
            master = self._index(ipr)
            names = [
                link.get_attr("IFLA_IFNAME")
                for link in ipr.get_links()
                if master is not None and link.get_attr("IFLA_MASTER") == master
            ]
        return [name for name in names if name.startswith(VETH_PREFIX) and name not in keep]

    def remove_links(self, names: list[str]) -> None:
        delete_links(names)

    def _index(self, ipr: IPRoute) -> int | None:
        found = ipr.link_lookup(ifname=self.name)
        return found[0] if found else None

    def _delete_tables(self) -> str:
        listed = subprocess.run(["nft", "list", "tables"], check=False, capture_output=True, text=True)
        existing = listed.stdout.split("\n")
        return "".join(
            f"delete table {family} {self.table}\n"
            for family in ("inet", "bridge")
            if f"table {family} {self.table}" in existing
        )


def _rule(bridge: str, entry: str, verdict: str) -> str:
    network, port = parse_rule(entry)
    ports = f" meta l4proto {{ tcp, udp }} th dport {port}" if port else ""
    return f"iifname {bridge} ip daddr {network}{ports} {verdict}"


def _nft(script: str, check: bool = True) -> None:
    if not script:
        return
    done = subprocess.run(["nft", "-f", "-"], check=False, input=script, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetworkError(f"nft: {done.stderr.strip()}")


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise NetworkError(f"{path}: {exc.strerror}") from None


def attach(link: JobLink | None, init_pid: int, rate_bps: int | None = None) -> None:
    """Give the namespace of init_pid an eth0 on the bridge: the veth pair made with its far end
    already in that namespace (a move costs the kernel an RCU grace period: tens of milliseconds),
    the host end enslaved and up, then eth0's address and default route set from inside."""
    if link is None:
        raise NetworkError("network 'isolated' needs a place on the executor's bridge; run it through the executor")
    try:
        _attach(link, init_pid, rate_bps)
    except NetworkError:
        raise
    except Exception as exc:
        raise NetworkError(f"attaching the job to {link.bridge}: {exc}") from None


def _attach(link: JobLink, init_pid: int, rate_bps: int | None) -> None:
    target = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _Rtnl() as rtnl:
            master = rtnl.index(link.bridge)
            if master is None:
                raise NetworkError(f"bridge {link.bridge} is missing (is the executor's isolated network up?)")
            rtnl.add_veth(link.veth, JOB_IFNAME, target, master)
            try:
                if rate_bps is not None:
                    with IPRoute() as ipr:
                        _shape(ipr, rtnl.index(link.veth), rate_bps)
                _inside(target, lambda: _configure_peer(link, rate_bps))
            except BaseException:
                delete_links([link.veth])
                raise
    finally:
        os.close(target)


class _Rtnl:
    """A bare rtnetlink socket for the few requests a job's start makes (pyroute2's synchronous API
    runs an event loop per request: its overhead was most of the start's cost). Made in the
    namespace it is to act on; requests are answered in order, each acknowledged or refused."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
        self.sock.settimeout(10.0)  # the kernel answers at once; no answer refuses the job, never hangs it
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> _Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> bytes:
        """Send one request; the first answer's body (an ACK's is empty); a refusal raises OSError."""
        self.seq += 1
        self.sock.send(
            _NLMSG.pack(_NLMSG.size + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK | flags, self.seq, 0) + body
        )
        answer = b""
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, kind_in, _, seq, _ = _NLMSG.unpack_from(data, offset)
                payload = data[offset + _NLMSG.size : offset + length]
                offset += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if kind_in == _NLMSG_ERROR:
                    code = -struct.unpack_from("i", payload)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return answer
                answer = answer or payload

    def index(self, name: str) -> int | None:
        """A link's index by name, or None."""
        try:
            reply = self.request(_RTM_GETLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0) + _attr(_IFLA_IFNAME, _name(name)))
        except OSError as error:
            if error.errno == errno.ENODEV:
                return None
            raise
        return _IFINFO.unpack_from(reply)[2]

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, master: int) -> None:
        """A veth pair: name here, enslaved to master and up; peer made in the namespace of the fd."""
        peer_info = (
            _IFINFO.pack(0, 0, 0, 0, 0)
            + _attr(_IFLA_IFNAME, _name(peer))
            + _attr(_IFLA_NET_NS_FD, struct.pack("I", peer_netns_fd))
        )
        linkinfo = _attr(_IFLA_INFO_KIND, b"veth\0") + _attr(_IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer_info))
        body = (
            _IFINFO.pack(0, 0, 0, _IFF_UP, _IFF_UP)
            + _attr(_IFLA_IFNAME, _name(name))
            + _attr(_IFLA_MASTER, struct.pack("I", master))
            + _attr(_IFLA_LINKINFO, linkinfo)
        )
        self.request(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def up(self, index: int) -> None:
        self.request(_RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, _IFF_UP, _IFF_UP))

    def add_address(self, index: int, interface: ipaddress.IPv4Interface) -> None:
        packed = interface.ip.packed
        body = _IFADDR.pack(socket.AF_INET, interface.network.prefixlen, 0, 0, index)
        self.request(
            _RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, body + _attr(_IFA_LOCAL, packed) + _attr(_IFA_ADDRESS, packed)
        )

    def add_default_route(self, gateway: ipaddress.IPv4Address) -> None:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, _RT_TABLE_MAIN, _RTPROT_BOOT, 0, _RTN_UNICAST, 0)
        self.request(_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL, body + _attr(_RTA_GATEWAY, gateway.packed))


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * (-length % 4)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def delete_links(names: list[str]) -> None:
    """Delete these links where they still exist."""
    # A veth pair goes when either end's namespace goes, in the kernel's own time: a link found
    # here may be gone before the delete reaches it, which is what was wanted.
    with IPRoute() as ipr:
        for name in names:
            _delete(ipr, name)


def _delete(ipr: IPRoute, name: str) -> None:
    for index in ipr.link_lookup(ifname=name):
        try:
            ipr.link("del", index=index)
        except NetlinkError as error:
            if error.code != errno.ENODEV:
                raise


def _shape(ipr: IPRoute, index: int, rate_bps: int) -> None:
    """What leaves this link goes at most rate_bps (HTB: one class, everything in it)."""
    rate = f"{rate_bps * 8}bit"
    ipr.tc("add", "htb", index, 0x10000, default=0x10)
    ipr.tc("add-class", "htb", index, 0x10010, parent=0x10000, rate=rate, ceil=rate)


def _configure_peer(link: JobLink, rate_bps: int | None) -> None:
    """In the job's namespace: eth0 with its address and default route; the job's uploads shaped
    there, its downloads on the host end."""
    with _Rtnl() as rtnl:
        index = rtnl.index(JOB_IFNAME)
        if index is None:
            raise NetworkError(f"the job's {JOB_IFNAME} is missing from its namespace")
        if rate_bps is not None:
            with IPRoute() as ipr:
                _shape(ipr, index, rate_bps)
        rtnl.add_address(index, ipaddress.IPv4Interface(link.address))
        rtnl.up(index)
        rtnl.add_default_route(ipaddress.IPv4Address(link.gateway))


def _inside(target: int, action: Callable[[], None]) -> None:
    """Run action with this thread in the network namespace target, then come back: a netlink
    socket belongs to the namespace it was made in, and setns is per thread, so no fork is needed
    (the supervisor is single-threaded; nothing else runs meanwhile). Not coming back refuses the
    job (whose namespace, and this process's hold on it, end with it)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(target, libc.CLONE_NEWNET)
        try:
            action()
        finally:
            _come_back(home)
    finally:
        os.close(home)


def _come_back(home: int) -> None:
    try:
        libc.setns(home, libc.CLONE_NEWNET)
    except OSError as exc:
        raise NetworkError(f"returning to the host's network namespace: {exc}") from None
