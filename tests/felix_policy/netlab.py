"""A throwaway node namespace with pod namespaces on cali* veths, and in-process probes.

Each pod gets a worker thread that has entered the pod's namespace: sockets it creates live
there, so servers and probes run inside this test process without forking. Everything is
removed by ``close()`` (namespaces by name, which also removes their veths).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from services.felix.dataplane.netns import NetnsWorker

PROBE_TIMEOUT_S = 0.3


def sh(*argv: str, check: bool = True, input_text: str | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input_text, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Pod:
    name: str  # "x/a"
    netns: str
    ip: str
    iface: str
    worker: NetnsWorker | None = None


class Servers:
    """TCP accept-and-close and UDP echo on the given ports, for sockets of many netns."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._stop_r, self._stop_w = os.pipe()
        self._sel.register(self._stop_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._socks.append(sock)
        self._sel.register(sock, selectors.EVENT_READ, sock.type)

    def _loop(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    return
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if key.data == socket.SOCK_STREAM:
                        while True:  # drain the backlog: a burst must not overflow it
                            conn, _ = sock.accept()
                            conn.close()
                    else:
                        data, peer = sock.recvfrom(2048)
                        sock.sendto(data, peer)

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


def _probe(dst: str, proto: str, port: int, timeout: float) -> bool:
    if proto == "TCP":
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect((dst, port))
                return True
            except OSError:
                return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"probe", (dst, port))
            data, _ = sock.recvfrom(64)
            return data == b"probe"
        except OSError:
            return False


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ping(dst: str, timeout: float) -> bool:
    """One ICMP echo over a raw socket (no ping binary here); True when the reply comes."""
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"calico-probe"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (dst, 0))
        try:
            while True:
                data, peer = sock.recvfrom(2048)
                icmp = data[(data[0] & 0x0F) * 4 :]
                if peer[0] == dst and icmp[0] == 0 and icmp[4:6] == header[4:6]:
                    return True
        except OSError:
            return False


class NetLab:
    def __init__(self, ports: Iterable[tuple[str, int]] = ()) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.node_ns = f"fp-{self.tag}-node"
        self.pods: dict[str, Pod] = {}
        self.ports = list(ports) or [("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81)]
        self.servers = Servers()
        sh("ip", "netns", "add", self.node_ns)
        self._namespaces = [self.node_ns]
        sh(
            "ip",
            "netns",
            "exec",
            self.node_ns,
            "sh",
            "-c",
            # The pods' gateway 169.254.1.1 as a local address: the node answers its ARP
            # (a real host answers by proxy ARP thanks to its default route).
            "ip link set lo up && sysctl -qw net.ipv4.ip_forward=1"
            " && ip addr add 169.254.1.1/32 dev lo",
        )

    @property
    def node_path(self) -> str:
        return f"/run/netns/{self.node_ns}"

    def add_pod(self, name: str, ip: str, iface: str) -> Pod:
        netns = f"fp-{self.tag}-{name.replace('/', '-')}"
        sh("ip", "netns", "add", netns)
        self._namespaces.append(netns)
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
            netns,
        )
        sh(
            "ip",
            "-n",
            netns,
            "-batch",
            "-",
            input_text="\n".join(
                [
                    "link set lo up",
                    "link set eth0 up",
                    f"addr add {ip}/32 dev eth0",
                    "route add 169.254.1.1 dev eth0 scope link",
                    "route add default via 169.254.1.1 dev eth0",
                ]
            )
            + "\n",
        )
        sh(
            "ip",
            "-n",
            self.node_ns,
            "-batch",
            "-",
            input_text="\n".join(
                [
                    f"link set {iface} address ee:ee:ee:ee:ee:ee",
                    f"link set {iface} up",
                    f"route add {ip}/32 dev {iface} scope link",
                ]
            )
            + "\n",
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
        pod = Pod(name, netns, ip, iface, NetnsWorker(f"/run/netns/{netns}", "pod"))
        assert pod.worker is not None
        for sock in pod.worker.call(lambda: _listen(self.ports)):
            self.servers.add(sock)
        self.pods[name] = pod
        return pod

    def probe_async(
        self, src: str, dst_ip: str, proto: str, port: int, timeout: float = PROBE_TIMEOUT_S
    ) -> Future[bool]:
        worker = self.pods[src].worker
        assert worker is not None
        return worker.submit(lambda: _probe(dst_ip, proto, port, timeout))

    def ping(self, src: str, dst: str, timeout: float = 0.5) -> bool:
        worker = self.pods[src].worker
        assert worker is not None
        return worker.call(lambda: _ping(self.pods[dst].ip, timeout))

    def probe(self, src: str, dst: str, proto: str, port: int) -> bool:
        return self.probe_async(src, self.pods[dst].ip, proto, port).result()

    def matrix(self, proto: str, port: int) -> dict[tuple[str, str], bool]:
        """Every ordered pair of distinct pods, probed (pods in parallel)."""
        futures = {
            (s, d): self.probe_async(s, self.pods[d].ip, proto, port)
            for s in self.pods
            for d in self.pods
            if s != d
        }
        return {pair: f.result() for pair, f in futures.items()}

    def nft(self, *args: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.node_ns, "nft", *args, check=check)

    def close(self) -> None:
        self.servers.close()
        for pod in self.pods.values():
            if pod.worker is not None:
                pod.worker.close()
        for netns in reversed(self._namespaces):
            sh("ip", "netns", "del", netns, check=False)
