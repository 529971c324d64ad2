"""Part (b) of the overlay benchmark: programming the overlay for N remote blocks.

Project: an embedded datastore seeded with N remote Nodes (address, VTEP address and MAC) and
N /26 blocks in a VXLAN pool, each affine to one of them, plus this node's Node. Each run
makes a fresh namespace holding this node's address, starts calico-ipamd there, then execs
calico-felix and times exec -> every block's route on vxlan.calico (a netlink route watcher
opened before the exec stamps each route as it arrives); then it counts the permanent
neighbours and FDB entries. Run 1 is a first boot (Felix asks calico-ipamd for a VTEP, which
claims a block); later runs find the VTEP already held, as after a reboot.

Between the two, Felix's kernel layer alone: services/felix/vxlan/kernel.py's VxlanKernel
given the finished intent in this process, in a fresh namespace (no start-up, no syncer): what
programming through pyroute2, one netlink request per object, costs.

Reference: the same device, N routes, N neighbours and N FDB entries written by `ip -batch`
and `bridge -batch` into a fresh namespace: what the kernel and iproute2 cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.route_watch import RouteWatcher
from lab import netns
from lab.daemons import find_program, wait_listening
from lab.processes import ProcessRecord, start_detached, stop

POOL = ipaddress.IPv4Network("10.96.0.0/14")  # 16,384 blocks of /26: room for this node's
BLOCK_PREFIX = 26
NODE_NET = ipaddress.IPv4Network("10.68.0.0/16")  # remote node addresses, and this node's
LOCAL_ADDRESS = NODE_NET.broadcast_address - 1
LOCAL_NODE = "ovb-local"
# This node's VTEP where Felix is not the one allocating it (the kernel layer, the reference).
LOCAL_VTEP = POOL.broadcast_address - 1
LOCAL_MAC = "02:0b:ff:ff:ff:fe"
DEVICE = "vxlan.calico"
VNI = 4096
PORT = 4789
WAIT_S = 300.0


def block_cidrs(count: int) -> list[ipaddress.IPv4Network]:
    blocks = POOL.subnets(new_prefix=BLOCK_PREFIX)
    return [next(blocks) for _ in range(count)]


def remote_node(i: int) -> tuple[str, str, str, str]:
    """(name, address, VTEP address, VTEP MAC) of remote node i: its VTEP is the first address
    of its block, its MAC locally administered."""
    address = NODE_NET.network_address + 1 + i
    vtep = POOL.network_address + i * 2 ** (32 - BLOCK_PREFIX)  # block i's first address
    mac = f"02:0b:00:00:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"
    return f"ovb-node-{i:05d}", str(address), str(vtep), mac


@dataclass
class Counts:
    routes: int = 0
    neighbours: int = 0
    fdb: int = 0


@dataclass
class RouteFigures:
    to_routes_s: list[float] = field(default_factory=list)  # exec -> last route
    to_listen_s: list[float] = field(default_factory=list)  # exec -> API socket answers
    counts: list[Counts] = field(default_factory=list)
    kernel_layer_s: list[float] = field(default_factory=list)  # VxlanKernel.reconcile alone
    reference_s: list[float] = field(default_factory=list)  # ip -batch + bridge -batch, wall
    reference_counts: list[Counts] = field(default_factory=list)

    @staticmethod
    def median(values: list[float]) -> float:
        return statistics.median(values)


async def seed(db: Path, count: int) -> None:
    """The datastore Felix reads: a VXLAN pool, this node, N remote nodes and their blocks."""
    from lab import objects
    from libcalico.datastore import connect
    from libcalico.ipam import keys as ipam_keys
    from libcalico.ipam.model import Block, BlockAffinity

    store = {"type": "embedded", "path": str(db)}
    nodes = [objects.node(LOCAL_NODE, f"{LOCAL_ADDRESS}/{NODE_NET.prefixlen}")]
    for i in range(count):
        name, address, vtep, mac = remote_node(i)
        obj = objects.node(name, f"{address}/{NODE_NET.prefixlen}")
        obj["spec"]["ipv4VXLANTunnelAddr"] = vtep
        obj["spec"]["vxlanTunnelMACAddr"] = mac
        nodes.append(obj)
    pool = objects.ippool("ovb-pool", str(POOL), BLOCK_PREFIX, vxlan_mode="Always")
    async with objects.resource_client(store) as client:
        await client.apply_all([pool, *nodes], "apply")
    async with await connect(objects.datastore_config(store)) as datastore:
        for i, cidr in enumerate(block_cidrs(count)):
            name = remote_node(i)[0]
            block = Block(cidr, affinity=f"host:{name}")
            # The VTEP address is held in the node's own block, as IPAM would have it.
            block.assign(1, f"vxlan-tunnel-addr-{name}", {"type": "vxlanTunnelAddress"})
            await datastore.create(ipam_keys.block_key(cidr), block.to_bytes())
            affinity = BlockAffinity(name, cidr)
            await datastore.create(ipam_keys.affinity_key(name, cidr), affinity.to_bytes())


def make_node_namespace(name: str) -> None:
    """A namespace standing in for this node: loopback and an uplink holding its address."""
    netns.create(name)
    netns.run_ip(["link", "set", "lo", "up"], name)
    netns.run_ip(["link", "add", "br0", "type", "bridge"], name)
    netns.run_ip(["addr", "add", f"{LOCAL_ADDRESS}/{NODE_NET.prefixlen}", "dev", "br0"], name)
    netns.run_ip(["link", "set", "br0", "up"], name)


def count_overlay(namespace: str) -> Counts:
    def lines(argv: list[str]) -> list[dict[str, object]]:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        data: list[dict[str, object]] = json.loads(out or "[]")
        return data

    routes = lines(["ip", "-n", namespace, "-j", "-4", "route", "show", "dev", DEVICE,
                    "proto", "80"])  # fmt: skip
    neigh = lines(["ip", "-n", namespace, "-j", "-4", "neigh", "show", "dev", DEVICE,
                   "nud", "permanent"])  # fmt: skip
    fdb = lines(["bridge", "-n", namespace, "-j", "fdb", "show", "dev", DEVICE])
    return Counts(len(routes), len(neigh), sum(1 for e in fdb if e.get("dst")))


def _daemon_env(db: Path, work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATASTORE_TYPE": "embedded",
        "CALICO_DATASTORE_PATH": str(db),
        "NODENAME": LOCAL_NODE,
        "CALICO_IPAM_SOCKET": str(work / "ipamd.sock"),
        "CALICO_FELIX_SOCKET": str(work / "felix.sock"),
    }


def felix_run(db: Path, work: Path, namespace: str, count: int, figures: RouteFigures) -> None:
    """One project run in a fresh namespace: calico-ipamd up first, then Felix timed."""
    wanted = [str(c) for c in block_cidrs(count)]
    env = _daemon_env(db, work)
    enter = ["nsenter", f"--net={netns.netns_path(namespace)}"]
    records: list[ProcessRecord] = []
    make_node_namespace(namespace)
    try:
        with RouteWatcher(namespace) as watcher:
            ipamd_sock = work / "ipamd.sock"
            ipamd_sock.unlink(missing_ok=True)
            ipamd_argv = [*enter, find_program("calico-ipamd"), "--socket", str(ipamd_sock),
                          "--nodename", LOCAL_NODE]  # fmt: skip
            ipamd = start_detached("calico-ipamd", ipamd_argv, work / "ipamd.log", env=env)
            records.append(ipamd)
            wait_listening(ipamd, ipamd_sock)
            felix_sock = work / "felix.sock"
            felix_sock.unlink(missing_ok=True)
            argv = [*enter, find_program("calico-felix"), "--socket", str(felix_sock),
                    "--nodename", LOCAL_NODE]  # fmt: skip
            started = time.perf_counter()
            felix = start_detached("calico-felix", argv, work / "felix.log", env=env)
            records.append(felix)
            wait_listening(felix, felix_sock, timeout=WAIT_S)
            listening = time.perf_counter()
            done = watcher.wait(wanted, True, WAIT_S)
        figures.to_listen_s.append(listening - started)
        figures.to_routes_s.append(done - started)
        figures.counts.append(count_overlay(namespace))
    finally:
        for record in reversed(records):  # Felix first: it may still be asking IPAM
            stop(record)
        with contextlib.suppress(netns.NetnsError):
            netns.delete(namespace)


def kernel_layer_run(namespace: str, count: int, figures: RouteFigures) -> None:
    """Felix's VxlanKernel.reconcile of the whole intent, timed alone in this process."""
    from services.felix.vxlan.intent import (
        DEVICE,
        OVERHEAD,
        DeviceIntent,
        OverlayIntent,
        RouteIntent,
    )
    from services.felix.vxlan.kernel import VxlanKernel

    device = DeviceIntent(str(LOCAL_ADDRESS), str(LOCAL_VTEP), LOCAL_MAC, 1500 - OVERHEAD)
    intent = OverlayIntent(local=str(LOCAL_ADDRESS), device=device)
    for i, cidr in enumerate(block_cidrs(count)):
        _name, address, vtep, mac = remote_node(i)
        intent.routes[str(cidr)] = RouteIntent(vtep, DEVICE)
        intent.neighbours[vtep] = mac
        intent.fdb[mac] = address

    async def program() -> float:
        kernel = VxlanKernel()
        try:
            started = time.perf_counter()
            changes = await kernel.reconcile(intent)
            elapsed = time.perf_counter() - started
        finally:
            await kernel.close()
        if changes < 3 * count:
            raise RuntimeError(f"VxlanKernel made {changes} changes for {count} blocks")
        return elapsed

    make_node_namespace(namespace)
    try:
        with netns.inside(netns.netns_path(namespace)):  # its netlink socket is made here
            figures.kernel_layer_s.append(asyncio.run(program()))
        counts = count_overlay(namespace)
        if (counts.routes, counts.neighbours, counts.fdb) != (count,) * 3:
            raise RuntimeError(f"VxlanKernel left {counts} for {count} blocks")
    finally:
        with contextlib.suppress(netns.NetnsError):
            netns.delete(namespace)


def reference_run(work: Path, namespace: str, count: int, figures: RouteFigures) -> None:
    """The same kernel state by iproute2 batches: device, address, neighbours and routes with
    `ip -batch`, FDB entries with `bridge -batch`; wall time of both processes."""
    ip_lines = [
        f"link add {DEVICE} address {LOCAL_MAC} mtu 1450 type vxlan id {VNI}"
        f" dstport {PORT} local {LOCAL_ADDRESS} nolearning",
        f"addr add {LOCAL_VTEP}/32 dev {DEVICE}",
        f"link set {DEVICE} up",
    ]
    fdb_lines = []
    for i, cidr in enumerate(block_cidrs(count)):
        _name, address, vtep, mac = remote_node(i)
        ip_lines.append(f"neigh replace {vtep} lladdr {mac} dev {DEVICE} nud permanent")
        ip_lines.append(f"route replace {cidr} via {vtep} dev {DEVICE} onlink proto 80")
        fdb_lines.append(f"fdb replace {mac} dev {DEVICE} dst {address} self permanent")
    ip_file, fdb_file = work / "ref-ip.batch", work / "ref-fdb.batch"
    ip_file.write_text("\n".join(ip_lines) + "\n")
    fdb_file.write_text("\n".join(fdb_lines) + "\n")
    make_node_namespace(namespace)
    try:
        started = time.perf_counter()
        subprocess.run(["ip", "-n", namespace, "-batch", str(ip_file)], check=True)
        subprocess.run(["bridge", "-n", namespace, "-batch", str(fdb_file)], check=True)
        figures.reference_s.append(time.perf_counter() - started)
        figures.reference_counts.append(count_overlay(namespace))
    finally:
        with contextlib.suppress(netns.NetnsError):
            netns.delete(namespace)


def measure(count: int, runs: int, work: Path, suffix: str) -> RouteFigures:
    """Runs alternate between Felix, its kernel layer and the reference; Felix's first run
    is the first boot."""
    figures = RouteFigures()
    db = work / "calico.db"
    started = time.perf_counter()
    asyncio.run(seed(db, count))
    print(f"  seeded {count:,} nodes and blocks in {time.perf_counter() - started:.1f} s",
          flush=True)  # fmt: skip
    for run in range(runs):
        felix_run(db, work, f"ovb-{suffix}-f{run}", count, figures)
        kernel_layer_run(f"ovb-{suffix}-k{run}", count, figures)
        reference_run(work, f"ovb-{suffix}-r{run}", count, figures)
        print(
            f"  run {run + 1}: felix {figures.to_routes_s[-1]:.2f} s ({figures.counts[-1]}),"
            f" kernel layer {figures.kernel_layer_s[-1]:.2f} s,"
            f" ip -batch {figures.reference_s[-1]:.3f} s",
            flush=True,
        )
    return figures


def leftover_namespaces(suffix: str) -> list[str]:
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return sorted(n for n in names if n.startswith(f"ovb-{suffix}-"))
