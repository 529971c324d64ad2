"""A throwaway node with pods on cali* veths and an "outside" client, for Service tests.

    outside ns (10.99.0.2, routes 192.0.2.0/24 via the node) ── veth ── node ns (10.99.0.1,
    default via outside, forwarding) ── cali veths ── pod namespaces (one /32 each)

Every pod answers each TCP connection and UDP datagram on its ports with "<name> <client
address it saw>", so a probe tells which backend served and whether the source was kept.
Probes run in worker threads that joined the client's namespace. ``close()`` removes the
namespaces (and with them every veth and rule made inside).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import uuid
from dataclasses import dataclass

from services.felix.dataplane.netns import NetnsWorker
from tests.felix_policy.netlab import sh

NODE_IP = "10.99.0.1"
OUTSIDE_IP = "10.99.0.2"
OUTSIDE = "@outside"
NODE = "@node"  # a process on the node itself (host network)
PORTS = (("TCP", 80), ("TCP", 8080), ("UDP", 80))


@dataclass(frozen=True)
class Answer:
    outcome: str  # "connected" | "refused" | "no-answer"
    served_by: str | None = None
    client: str | None = None
    errno: int | None = None


class _Servers:
    """Name-and-client answering servers for sockets of many namespaces, on one thread."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._stop_r, self._stop_w = os.pipe()
        self._sel.register(self._stop_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket, name: str) -> None:
        sock.setblocking(False)
        self._socks.append(sock)
        self._sel.register(sock, selectors.EVENT_READ, name)

    def _loop(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    return
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if sock.type == socket.SOCK_STREAM:
                        while True:
                            conn, peer = sock.accept()
                            with conn:
                                conn.sendall(f"{key.data} {peer[0]}".encode())
                    else:
                        _, peer = sock.recvfrom(2048)
                        sock.sendto(f"{key.data} {peer[0]}".encode(), peer)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for sock in self._socks:
            sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


def _listen() -> list[socket.socket]:
    out = []
    for proto, port in PORTS:
        kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        out.append(sock)
    return out


def _answer(data: bytes) -> Answer:
    name, _, client = data.decode().partition(" ")
    return Answer("connected", name, client)


def _probe(dst: str, proto: str, port: int, timeout: float) -> Answer:
    kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            if kind == socket.SOCK_DGRAM:
                sock.send(b"probe")
            data = sock.recv(256)
        except TimeoutError:
            return Answer("no-answer")
        except OSError as exc:  # RST / ICMP unreachable
            return Answer("refused", errno=exc.errno)
        return _answer(data) if data else Answer("no-answer")


class SvcLab:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.node_ns = f"svc-{self.tag}-node"
        self.outside_ns = f"svc-{self.tag}-out"
        self.pods: dict[str, tuple[str, NetnsWorker]] = {}  # name -> (ip, worker)
        self._namespaces: list[str] = []
        self._servers = _Servers()
        for ns in (self.node_ns, self.outside_ns):
            sh("ip", "netns", "add", ns)
            self._namespaces.append(ns)
        sh(
            "ip",
            "link",
            "add",
            "up0",
            "netns",
            self.node_ns,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.outside_ns,
        )
        self._batch(
            self.node_ns,
            "link set lo up",
            "link set up0 up",
            f"addr add {NODE_IP}/24 dev up0",
            f"route add default via {OUTSIDE_IP}",
        )
        self._batch(
            self.outside_ns,
            "link set lo up",
            "link set eth0 up",
            f"addr add {OUTSIDE_IP}/24 dev eth0",
            f"route add 192.0.2.0/24 via {NODE_IP}",
        )
        sh("ip", "netns", "exec", self.node_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.outside = NetnsWorker(f"/run/netns/{self.outside_ns}", "outside")
        self.node = NetnsWorker(f"/run/netns/{self.node_ns}", "node")

    @property
    def node_path(self) -> str:
        return f"/run/netns/{self.node_ns}"

    @staticmethod
    def _batch(ns: str, *cmds: str) -> None:
        sh("ip", "-n", ns, "-batch", "-", input_text="\n".join(cmds) + "\n")

    def add_pod(self, name: str, ip: str, iface: str) -> None:
        ns = f"svc-{self.tag}-{name}"
        sh("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        sh(
            "ip",
            "link",
            "add",
            iface,
            "netns",
            self.node_ns,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        self._batch(
            ns,
            "link set lo up",
            "link set eth0 up",
            f"addr add {ip}/32 dev eth0",
            "route add 169.254.1.1 dev eth0 scope link",
            "route add default via 169.254.1.1 dev eth0",
        )
        self._batch(
            self.node_ns,
            f"link set {iface} address ee:ee:ee:ee:ee:ee",
            f"link set {iface} up",
            f"route add {ip}/32 dev {iface} scope link",
        )
        sh(
            "ip",
            "netns",
            "exec",
            self.node_ns,
            "sysctl",
            "-qw",
            f"net.ipv4.conf.{iface}.proxy_arp=1",
            f"net.ipv4.neigh.{iface}.proxy_delay=0",
        )
        worker = NetnsWorker(f"/run/netns/{ns}", "pod")
        for sock in worker.call(_listen):
            self._servers.add(sock, name)
        self.pods[name] = (ip, worker)

    def ip(self, name: str) -> str:
        return OUTSIDE_IP if name == OUTSIDE else self.pods[name][0]

    def probe(
        self, src: str, dst: str, port: int, proto: str = "TCP", tries: int = 1, timeout: float = 1
    ) -> list[Answer]:
        """``tries`` new flows (one after the other) from ``src``: a pod, OUTSIDE or NODE."""
        worker = {OUTSIDE: self.outside, NODE: self.node}.get(src) or self.pods[src][1]
        futures = [worker.submit(lambda: _probe(dst, proto, port, timeout)) for _ in range(tries)]
        return [f.result() for f in futures]

    def ipt(self, *args: str, legacy: bool, check: bool = True) -> str:
        binary = "iptables-legacy" if legacy else "iptables-nft"
        return sh("ip", "netns", "exec", self.node_ns, binary, *args, check=check)

    def clean_rules(self) -> None:
        """Remove every rule and set of either iptables flavour from the node namespace."""
        for binary in ("iptables-legacy", "iptables-nft"):
            for table in ("nat", "filter"):
                for flag in ("-F", "-X"):
                    sh("ip", "netns", "exec", self.node_ns, binary, "-t", table, flag, check=False)
        sh("ip", "netns", "exec", self.node_ns, "nft", "flush", "ruleset", check=False)
        sh("ip", "netns", "exec", self.node_ns, "ipset", "destroy", check=False)
        sh("ip", "netns", "exec", self.node_ns, "conntrack", "-F", check=False)

    def close(self) -> None:
        self._servers.close()
        self.outside.close()
        self.node.close()
        for _, worker in self.pods.values():
            worker.close()
        for ns in reversed(self._namespaces):
            sh("ip", "netns", "del", ns, check=False)


ECONNREFUSED = errno.ECONNREFUSED
