"""Namespaces on a bridge and bare BIRD speakers, for the ToR tests and the BGP benchmark.

A `Network` is one "net" namespace holding a bridge with the router's address (.1) and any
number of "host" namespaces, each with an eth0 on that bridge (.11, .12, ...). Names carry a
random suffix so parallel runs never collide; `close()` deletes everything it made.

A `BareBird` is BIRD 2 with a hand-written config, nothing of the project in it: it peers over
eBGP, originates static blackholes and installs what it learns into its namespace's kernel.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import netns
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop

BIRD = "/usr/sbin/bird"
BIRDC = "/usr/sbin/birdc"
RTPROT_BIRD = "bird"


def random_suffix() -> str:
    return secrets.token_hex(3)


@dataclass
class Network:
    """A bridge `br0` in namespace `net` with `<subnet>.1/24`, and hosts plugged into it."""

    prefix: str  # namespace name prefix, e.g. "h3t-1a2b3c"
    subnet: str  # first three octets, e.g. "10.77.0"
    net: str = ""
    hosts: dict[str, str] = field(default_factory=dict)  # namespace -> address
    _made: list[str] = field(default_factory=list)

    @property
    def router_address(self) -> str:
        return f"{self.subnet}.1"

    def create(self) -> Network:
        self.net = f"{self.prefix}-net"
        self._made.append(self.net)
        netns.create(self.net)
        netns.run_ip(["link", "add", "br0", "type", "bridge"], self.net)
        netns.run_ip(["addr", "add", f"{self.router_address}/24", "dev", "br0"], self.net)
        netns.run_ip(["link", "set", "br0", "up"], self.net)
        netns.sysctl(self.net, "net.ipv4.ip_forward", "1")
        return self

    def add_host(self, index: int) -> tuple[str, str]:
        """Namespace `<prefix>-h<index>` with eth0 `<subnet>.<10+index>`, default via .1."""
        name = f"{self.prefix}-h{index}"
        address = f"{self.subnet}.{10 + index}"
        self._made.append(name)
        netns.create(name)
        peer = f"v{index}-{self.prefix[-6:]}"
        netns.run_ip(
            ["link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", peer],
            self.net,
        )
        netns.run_ip(["link", "set", peer, "master", "br0", "up"], self.net)
        netns.run_ip(["addr", "add", f"{address}/24", "dev", "eth0"], name)
        netns.run_ip(["link", "set", "eth0", "up"], name)
        netns.run_ip(["route", "add", "default", "via", self.router_address], name)
        self.hosts[name] = address
        return name, address

    def close(self) -> list[str]:
        """Delete every namespace made; returns the ones that could not be deleted."""
        left = []
        for name in reversed(self._made):
            try:
                netns.delete(name)
            except netns.NetnsError:
                left.append(name)
        self._made.clear()
        return left


def kernel_routes(namespace: str, proto: str = RTPROT_BIRD) -> dict[str, list[str]]:
    """Prefix -> next hops of the IPv4 routes `proto` installed in a namespace's main table."""
    out = netns.run_ip(["-4", "route", "show", "proto", proto], namespace)
    routes: dict[str, list[str]] = {}
    prefix = ""
    for line in out.splitlines():
        fields = line.split()
        if not fields:
            continue
        if not line[0].isspace():
            prefix = fields[0] if "/" in fields[0] else f"{fields[0]}/32"
            routes[prefix] = []
        if "via" in fields:
            routes[prefix].append(fields[fields.index("via") + 1])
    return routes


def wait_for(
    what: str, check: Callable[[], object], timeout: float = 20.0, interval: float = 0.1
) -> None:
    """Poll `check()` until truthy; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class BareBird:
    """A plain BIRD 2 in `namespace`: eBGP peers, static originations, kernel install."""

    namespace: str
    directory: Path
    router_id: str
    asn: int
    peers: Sequence[tuple[str, int]]  # (address, AS)
    originate: Sequence[str] = ()
    record: ProcessRecord | None = None

    @property
    def ctl(self) -> Path:
        return self.directory / "bird.ctl"

    @property
    def static_file(self) -> Path:
        return self.directory / "static.conf"

    def config(self) -> str:
        lines = [
            f"router id {self.router_id};",
            "log stderr all;",
            "protocol device { scan time 10; }",
            "protocol kernel {",
            "  ipv4 { import none; export filter { if source = RTS_BGP then accept; reject; }; };",
            "  merge paths on;",
            "}",
            "protocol static originated {",
            "  ipv4;",
            f'  include "{self.static_file}";',
            "}",
            "filter from_peer { accept; }",
            "filter to_peer { if source = RTS_STATIC then accept; reject; }",
        ]
        for i, (address, asn) in enumerate(self.peers):
            lines += [
                f"protocol bgp peer{i} {{",
                f"  local as {self.asn};",
                f"  neighbor {address} as {asn};",
                "  ipv4 { import filter from_peer; export filter to_peer; };",
                "  connect delay time 1;",
                "  connect retry time 1;",
                "  error wait time 1, 10;",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def write_static(self, prefixes: Sequence[str]) -> None:
        text = "".join(f"route {ipaddress.IPv4Network(p)} blackhole;\n" for p in prefixes)
        tmp = self.static_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.static_file)

    def start(self) -> BareBird:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_static(self.originate)
        conf = self.directory / "bird.conf"
        conf.write_text(self.config())
        argv = [
            "nsenter",
            f"--net={netns.netns_path(self.namespace)}",
            BIRD,
            "-f",
            "-c",
            str(conf),
            "-s",
            str(self.ctl),
        ]
        # nsenter execs BIRD in place, so the recorded PID is BIRD's.
        self.record = start_detached(f"bird-{self.namespace}", argv, self.directory / "bird.log")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.birdc("show", "status", check=False).find("Daemon is up") >= 0:
                return self
            if not is_alive(self.record):
                break
            time.sleep(0.05)
        raise RuntimeError(f"bare BIRD in {self.namespace} did not start:\n{self.log()}")

    def birdc(self, *command: str, check: bool = True) -> str:
        proc = subprocess.run(
            [BIRDC, "-s", str(self.ctl), *command], capture_output=True, text=True, timeout=60
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"birdc {' '.join(command)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def reconfigure(self, prefixes: Sequence[str]) -> None:
        """Originate exactly `prefixes` from now on."""
        self.write_static(prefixes)
        out = self.birdc("configure")
        if "Reconfigur" not in out:
            raise RuntimeError(f"birdc configure: {out}")

    def established(self) -> bool:
        out = self.birdc("show", "protocols", check=False)
        rows = [line.split() for line in out.splitlines() if " BGP " in f" {line} "]
        return bool(rows) and all(row[-1] == "Established" for row in rows)

    def log(self) -> str:
        return log_tail(self.directory / "bird.log")

    def stop(self) -> bool:
        if self.record is None:
            return True
        return stop(self.record)
