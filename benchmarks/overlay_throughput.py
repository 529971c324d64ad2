"""Part (a) of the overlay benchmark: single-stream TCP throughput over four paths, one run.

- veth: two bare namespaces joined by one veth pair; the floor every other path builds on.
- node-to-node: between two nodes of the plain-routed lab, over the lab bridge (node veth ->
  bridge -> node veth): the fairest reference for pod traffic, which crosses that too.
- direct: pod -> pod across nodes of a lab with `--encap none --bgp mesh` (BGP routes).
- vxlan: pod -> pod across nodes of a lab with `--encap vxlan --bgp none`.

Each measurement is one `iperf3 -c` of `seconds` (the first second of slow start omitted) into
an `iperf3 -s` running in the receiving namespace; rounds go through the paths in turn, the
order rotating each round, so load from elsewhere on the machine hits all of them alike.
The labs are driven through the calico-lab CLI; every server is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bgp_topology import LabRun
from lab import netns
from lab.processes import ProcessRecord, is_alive, start_detached, stop

IPERF_PORT = 5201
PROBE_PORT = 80  # the lab's pod server; a TCP connect there proves the path before iperf3
SETTLE_S = 60.0
VETH_ADDRESSES = ("10.67.0.1", "10.67.0.2")  # away from the lab's 10.66.0.0/24
PATHS = ("veth", "node-to-node", "direct", "vxlan")


def iperf3_missing() -> str:
    """ "" when iperf3 is installed, else what to do about it."""
    if shutil.which("iperf3") is None:
        return "iperf3 is not installed (apt-get install iperf3, or run scripts/setup.sh)"
    return ""


@dataclass
class Endpoint:
    """Where a path's client runs and the address of its server."""

    client_ns: str
    server_ns: str
    server_ip: str


@dataclass
class Throughput:
    bits: dict[str, list[float]] = field(default_factory=dict)  # path -> bits/s per round
    retransmits: dict[str, list[int]] = field(default_factory=dict)
    mtu: dict[str, int] = field(default_factory=dict)  # path -> the client interface's MTU
    notes: list[str] = field(default_factory=list)

    def median(self, path: str) -> float:
        return statistics.median(self.bits[path])


class VethPair:
    """Two namespaces joined by a veth pair, addresses on a /30."""

    def __init__(self, suffix: str) -> None:
        self.names = (f"ovt-{suffix}-a", f"ovt-{suffix}-b")

    def up(self) -> Endpoint:
        a, b = self.names
        for name in self.names:
            netns.create(name)
            netns.run_ip(["link", "set", "lo", "up"], name)
        netns.run_ip(["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b], a)
        for name, address in zip(self.names, VETH_ADDRESSES, strict=True):
            netns.run_ip(["addr", "add", f"{address}/30", "dev", "eth0"], name)
            netns.run_ip(["link", "set", "eth0", "up"], name)
        return Endpoint(a, b, VETH_ADDRESSES[1])

    def close(self) -> list[str]:
        problems = []
        for name in self.names:
            with contextlib.suppress(netns.NetnsError):
                netns.delete(name)
            if netns.exists(name):
                problems.append(f"namespace {name} left")
        return problems


class PodLab(LabRun):
    """A 2-node calico-lab with one pod per node (x/a on node-1, x/b on node-2)."""

    def up_with(self, *options: str) -> PodLab:
        self.started = True
        self.cli("up", "--nodes", "2", *options)
        self.cli("pod", "run", "x/a", "--node", "node-1")
        self.cli("pod", "run", "x/b", "--node", "node-2")
        deadline = time.monotonic() + SETTLE_S
        # Both directions: the BGP routes (or the VXLAN routes) of each block must be in.
        while not (self._probe("x/a", "x/b") and self._probe("x/b", "x/a")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"pods of {self.state_dir.name} not connected after {SETTLE_S}s")
            time.sleep(0.5)
        return self

    def _probe(self, source: str, target: str) -> bool:
        try:
            self.cli("probe", source, target, "--port", str(PROBE_PORT), timeout=30)
        except RuntimeError:
            return False
        return True

    def pod(self, key: str) -> dict[str, Any]:
        return dict(self.state()["pods"][key])

    def pods(self) -> Endpoint:
        a, b = self.pod("x/a"), self.pod("x/b")
        return Endpoint(a["netns"], b["netns"], b["ips"][0])

    def nodes(self) -> Endpoint:
        return Endpoint(
            self.node("node-1")["netns"], self.node("node-2")["netns"], "10.66.0.12"
        )  # lab/network.py: node-2 is the second host from 10.66.0.11


class Servers:
    """iperf3 servers, one per receiving namespace, each stopped by its PID."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.records: dict[str, ProcessRecord] = {}

    def ensure(self, namespace: str) -> None:
        if namespace in self.records and is_alive(self.records[namespace]):
            return
        argv = ["nsenter", f"--net={netns.netns_path(namespace)}", "iperf3", "-s", "-p",
                str(IPERF_PORT)]  # fmt: skip
        self.records[namespace] = start_detached(
            "iperf3", argv, self.work / f"iperf3-{namespace}.log"
        )

    def close(self) -> list[str]:
        return [
            f"iperf3 in {ns} (pid {record.pid}) still running"
            for ns, record in self.records.items()
            if not stop(record)
        ]


def run_client(endpoint: Endpoint, seconds: int) -> dict[str, Any]:
    """One iperf3 client run; retried while the fresh server is not listening yet."""
    argv = ["ip", "netns", "exec", endpoint.client_ns, "iperf3", "-c", endpoint.server_ip,
            "-p", str(IPERF_PORT), "-t", str(seconds), "-O", "1", "-J",
            "--connect-timeout", "2000"]  # fmt: skip
    last = ""
    for _ in range(20):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        try:
            report: dict[str, Any] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            report = {"error": proc.stderr.strip() or proc.stdout.strip()}
        if proc.returncode == 0 and "error" not in report:
            return report
        last = str(report.get("error"))
        time.sleep(0.5)  # "unable to connect" while the server starts, or "server is busy"
    raise RuntimeError(f"iperf3 {endpoint.client_ns} -> {endpoint.server_ip}: {last}")


def interface_mtu(namespace: str, server_ip: str) -> int:
    """The MTU of the interface the client's route to `server_ip` leaves by."""
    route = json.loads(netns.run_ip(["-j", "route", "get", server_ip], namespace))[0]
    link = json.loads(netns.run_ip(["-j", "link", "show", route["dev"]], namespace))[0]
    return int(link["mtu"])


def measure(endpoints: dict[str, Endpoint], seconds: int, rounds: int, work: Path) -> Throughput:
    figures = Throughput()
    servers = Servers(work)
    names = [p for p in PATHS if p in endpoints]
    try:
        for path in names:
            servers.ensure(endpoints[path].server_ns)
            figures.mtu[path] = interface_mtu(endpoints[path].client_ns, endpoints[path].server_ip)
        for rnd in range(rounds):
            shift = rnd % len(names)
            for path in names[shift:] + names[:shift]:
                servers.ensure(endpoints[path].server_ns)  # one may have died: start anew
                report = run_client(endpoints[path], seconds)
                end = report["end"]
                bits = float(end["sum_received"]["bits_per_second"])
                figures.bits.setdefault(path, []).append(bits)
                figures.retransmits.setdefault(path, []).append(int(end["sum_sent"].get(
                    "retransmits", 0)))  # fmt: skip
                print(f"  round {rnd + 1} {path}: {bits / 1e9:.2f} Gbit/s", flush=True)
    finally:
        figures.notes += servers.close()
    return figures


def offloads(namespace: str, device: str) -> dict[str, str]:
    """The offload features of one device that matter for throughput (ethtool -k)."""
    if shutil.which("ethtool") is None:
        return {"ethtool": "not installed"}
    proc = subprocess.run(
        ["ip", "netns", "exec", namespace, "ethtool", "-k", device],
        capture_output=True,
        text=True,
        timeout=30,
    )
    wanted = (
        "tx-checksumming",
        "tcp-segmentation-offload",
        "generic-segmentation-offload",
        "generic-receive-offload",
        "rx-udp-gro-forwarding",
        "tx-udp_tnl-segmentation",
    )
    out = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key in wanted:
            out[key] = value.split()[0] if value else ""
    return out
