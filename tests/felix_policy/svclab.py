"""A node namespace with workload "pods" and an "outside" host, for Service tests and benchmarks.

```
 outside ns (198.18.0.2) ──ext0── node ns (198.18.0.1, forwarding) ──cali veths── pods
```
The node's default route points at the outside namespace (so proxy ARP answers the pods'
gateway 169.254.1.1, as on a real host, and masquerade picks the node address 198.18.0.1);
the outside namespace routes the pod, service and external-IP ranges to the node. Nothing
is routed out of the test's namespaces.

Every pod (and the outside host) runs servers on one shared thread that answer each TCP
connection and each UDP datagram with ``"<pod name> <client address seen>"``; probes run on
a thread inside the source's namespace ("outside", "node" for host processes, or a pod) and
report what answered, with the lab's outcomes (lab/prober.py): "connected", "refused" (a
TCP reset or an ICMP error; its errno kept) or "no-answer".
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from lab.prober import CONNECTED, NO_ANSWER, REFUSED
from services.felix.dataplane.netns import NetnsWorker
from tests.felix_policy.netlab import sh

__all__ = ["CONNECTED", "NO_ANSWER", "REFUSED", "Answer", "ServiceLab", "sh"]

NODE_IP = "198.18.0.1"
OUTSIDE_IP = "198.18.0.2"
OUTSIDE = "outside"
NODE = "node"  # a process on the node itself (host network)
POD_CIDR = "10.65.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
EXTERNAL_CIDR = "203.0.113.0/24"
DEFAULT_PORTS = (
    *[("TCP", port) for port in (*range(80, 86), 8080)],
    ("UDP", 53),
    ("UDP", 80),
)


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: str  # CONNECTED | REFUSED | NO_ANSWER
    server: str | None = None  # the pod that answered
    client: str | None = None  # the client address it saw
    errno: int | None = None  # why it was refused


class NamedServers:
    """TCP: send "<name> <peer>" and close; UDP: answer each datagram the same way."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._stop_r, self._stop_w = os.pipe()
        self._sel.register(self._stop_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def add(self, name: str, sock: socket.socket) -> None:
        sock.setblocking(False)
        with self._lock:
            self._socks.append(sock)
            self._sel.register(sock, selectors.EVENT_READ, (name, sock.type))

    def _loop(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    return
                name, kind = key.data
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if kind == socket.SOCK_STREAM:
                        while True:
                            conn, peer = sock.accept()
                            with conn:
                                conn.setblocking(True)
                                conn.settimeout(1.0)
                                conn.sendall(f"{name} {peer[0]}".encode())
                    else:
                        while True:
                            _, peer = sock.recvfrom(2048)
                            sock.sendto(f"{name} {peer[0]}".encode(), peer)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for sock in self._socks:
            sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


def _listen(ports: Iterable[tuple[str, int]]) -> list[socket.socket]:
    out = []
    for proto, port in ports:
        kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        out.append(sock)
    return out


def _answer(data: bytes) -> Answer:
    if not data:
        return Answer(NO_ANSWER)  # opened, but nothing said
    server, _, client = data.decode().partition(" ")
    return Answer(CONNECTED, server, client)


def _error(exc: OSError) -> Answer:
    if isinstance(exc, socket.timeout | TimeoutError):
        return Answer(NO_ANSWER)
    return Answer(REFUSED, errno=exc.errno)  # RST, ICMP port/host unreachable, ...


def tcp_request(dst: str, port: int, timeout: float) -> Answer:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            data = b""
            while chunk := sock.recv(256):
                data += chunk
            return _answer(data)
        except OSError as exc:
            return _error(exc)


def udp_request(dst: str, port: int, timeout: float, sock: socket.socket | None = None) -> Answer:
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        if own:
            s.connect((dst, port))  # connected: an ICMP port unreachable is ECONNREFUSED
        s.send(b"q")
        return _answer(s.recv(256))
    except OSError as exc:
        return _error(exc)
    finally:
        if own:
            s.close()


def _batch(netns: str, *commands: str) -> None:
    """``ip -batch`` in ``netns``, loopback up first."""
    sh("ip", "-n", netns, "-batch", "-", input_text="\n".join(["link set lo up", *commands, ""]))


@dataclass
class Host:
    name: str
    netns: str
    ip: str
    iface: str  # host-side interface in the node namespace ("" for outside and node)
    worker: NetnsWorker


class ServiceLab:
    def __init__(self, ports: Iterable[tuple[str, int]] = DEFAULT_PORTS) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.node_ns = f"sv-{self.tag}-node"
        self.ports = list(ports)
        self.servers = NamedServers()
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        try:
            self._setup_node()
        except BaseException:
            self.close()
            raise

    @property
    def node_path(self) -> str:
        return f"/run/netns/{self.node_ns}"

    @staticmethod
    def iface(pod: str) -> str:
        """The host-side interface ``add_pod`` gives pod ``pod``."""
        return f"calisv{pod}"[:15]

    def _netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self._namespaces.append(name)
        return name

    def _setup_node(self) -> None:
        self._netns(self.node_ns)
        outside = self._netns(f"sv-{self.tag}-out")
        sh(
            "ip", "link", "add", "ext0", "netns", self.node_ns, "type", "veth",
            "peer", "name", "eth0", "netns", outside,
        )  # fmt: skip
        _batch(
            self.node_ns,
            "link set ext0 up",
            f"addr add {NODE_IP}/24 dev ext0",
            f"route add default via {OUTSIDE_IP}",
        )
        sh("ip", "netns", "exec", self.node_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _batch(
            outside,
            "link set eth0 up",
            f"addr add {OUTSIDE_IP}/24 dev eth0",
            *(f"route add {net} via {NODE_IP}" for net in (POD_CIDR, SERVICE_CIDR, EXTERNAL_CIDR)),
        )
        self._add_host(OUTSIDE, outside, OUTSIDE_IP, "")
        self._add_host(NODE, self.node_ns, NODE_IP, "", serve=False)  # host processes

    def _add_host(self, name: str, netns: str, ip: str, iface: str, serve: bool = True) -> Host:
        host = Host(name, netns, ip, iface, NetnsWorker(f"/run/netns/{netns}", "svclab"))
        for sock in host.worker.call(lambda: _listen(self.ports)) if serve else ():
            self.servers.add(name, sock)
        self.hosts[name] = host
        return host

    def add_pod(self, name: str, ip: str) -> Host:
        netns = self._netns(f"sv-{self.tag}-{name}")
        iface = self.iface(name)
        sh(
            "ip", "link", "add", iface, "netns", self.node_ns, "type", "veth",
            "peer", "name", "eth0", "netns", netns,
        )  # fmt: skip
        _batch(
            netns,
            "link set eth0 up",
            f"addr add {ip}/32 dev eth0",
            "route add 169.254.1.1 dev eth0 scope link",
            "route add default via 169.254.1.1 dev eth0",
        )
        _batch(self.node_ns, f"link set {iface} up", f"route add {ip}/32 dev {iface} scope link")
        sh(
            "ip", "netns", "exec", self.node_ns, "sysctl", "-qw",
            f"net.ipv4.conf.{iface}.proxy_arp=1", f"net.ipv4.neigh.{iface}.proxy_delay=0",
        )  # fmt: skip
        return self._add_host(name, netns, ip, iface)

    def tcp(self, src: str, dst: str, port: int, timeout: float = 1.5) -> Answer:
        """Long enough for one SYN retransmission (1 s): a probe expected to get no answer
        passes a short ``timeout``."""
        return self.hosts[src].worker.call(lambda: tcp_request(dst, port, timeout))

    def udp(self, src: str, dst: str, port: int, timeout: float = 0.5) -> Answer:
        return self.hosts[src].worker.call(lambda: udp_request(dst, port, timeout))

    def probe(
        self,
        src: str,
        dst: str,
        port: int,
        proto: str = "TCP",
        tries: int = 1,
        timeout: float | None = None,
    ) -> list[Answer]:
        """``tries`` new flows, one after the other, from ``src``."""
        one = self.tcp if proto == "TCP" else self.udp
        if timeout is None:
            return [one(src, dst, port) for _ in range(tries)]
        return [one(src, dst, port, timeout) for _ in range(tries)]

    def udp_socket(self, src: str, dst: str, port: int) -> socket.socket:
        """A connected UDP socket in ``src``'s namespace (one flow: one source port)."""

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((dst, port))
            return s

        return self.hosts[src].worker.call(make)

    def udp_on(self, src: str, sock: socket.socket, timeout: float = 0.5) -> Answer:
        return self.hosts[src].worker.call(lambda: udp_request("", 0, timeout, sock))

    def nft(self, *args: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.node_ns, "nft", *args, check=check)

    def ipt(self, *args: str, legacy: bool, check: bool = True) -> str:
        binary = "iptables-legacy" if legacy else "iptables-nft"
        return sh("ip", "netns", "exec", self.node_ns, binary, *args, check=check)

    def clean_rules(self) -> None:
        """Remove every rule, set and flow of either iptables flavour and of nftables from
        the node namespace."""
        for binary in ("iptables-legacy", "iptables-nft"):
            for table in ("nat", "filter"):
                for flag in ("-F", "-X"):
                    sh("ip", "netns", "exec", self.node_ns, binary, "-t", table, flag, check=False)
        self.nft("flush", "ruleset", check=False)
        sh("ip", "netns", "exec", self.node_ns, "ipset", "destroy", check=False)
        sh("ip", "netns", "exec", self.node_ns, "conntrack", "-F", check=False)

    def close(self) -> None:
        self.servers.close()
        for host in self.hosts.values():
            host.worker.close()
        for netns in reversed(self._namespaces):
            sh("ip", "netns", "del", netns, check=False)
