"""A 3-node lab with the VXLAN overlay and no BGP (issue 11): Felix allocates each node's VTEP,
publishes it on the Node, and programs vxlan.calico with onlink routes, permanent neighbours
and FDB entries for the other nodes' blocks; pods get the overlay's MTU and their traffic
between nodes crosses as VXLAN (a don't-fragment datagram at the MTU and a 1,400-byte TCP
exchange included). A route flushed by hand comes back within the refresh
interval; a restarted Felix adopts the device and keeps its VTEP; a Node deleted from the
datastore takes its routes, neighbour and FDB entry off the other nodes; with the pool back
to vxlanMode Never the devices go and the VTEP addresses are released. `down` leaves
nothing."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.labkit import (
    BLOCK_PREFIX,
    NODE_ADDRESS,
    PODS,
    POOL,
    VXLAN_MTU,
    LabCli,
    apply_pool,
    df_udp,
    host_snapshot,
    ip_json,
    lab_namespaces,
    make_cli,
    tcp_exchange,
    tx_packets,
    wait_all_pairs_connect,
)

pytestmark = pytest.mark.netns

REFRESH_S = 1.0
SETTLE_S = 15.0


def _fdb(netns: str) -> dict[str, str]:
    out = subprocess.run(
        ["bridge", "-n", netns, "-j", "fdb", "show", "dev", "vxlan.calico"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {e["mac"]: e["dst"] for e in json.loads(out or "[]") if e.get("dst")}


def _overlay(netns: str) -> dict[str, Any]:
    """The overlay state of one node's kernel: routes, permanent neighbours, FDB entries."""
    routes = {
        r["dst"]: r.get("gateway")
        for r in ip_json(netns, "-4", "route", "show", "dev", "vxlan.calico")
        if r.get("protocol") == "80" and "onlink" in r.get("flags", [])
    }
    neigh = {
        n["dst"]: n.get("lladdr")
        for n in ip_json(netns, "-4", "neigh", "show", "dev", "vxlan.calico")
        if "PERMANENT" in n.get("state", [])
    }
    return {"routes": routes, "neigh": neigh, "fdb": _fdb(netns)}


def _nodes(cli: LabCli) -> dict[str, dict[str, Any]]:
    out = json.loads(cli("calicoctl", "get", "nodes", "-o", "json").stdout)
    items = out["items"] if isinstance(out, dict) and "items" in out else out
    return {n["metadata"]["name"]: n["spec"] for n in items}


def _wanted(
    vteps: dict[str, tuple[str, str]], blocks: dict[str, str], nodes: list[str]
) -> dict[str, dict[str, Any]]:
    """Per node among `nodes`: the overlay state the other nodes in `nodes` call for."""
    out = {}
    for node in nodes:
        others = [n for n in nodes if n != node]
        out[node] = {
            "routes": {b: vteps[owner][0] for b, owner in blocks.items() if owner in others},
            "neigh": {vteps[n][0]: vteps[n][1] for n in others},
            "fdb": {vteps[n][1]: NODE_ADDRESS[n] for n in others},
        }
    return out


def _wait_overlay(netns: dict[str, str], wanted: dict[str, dict[str, Any]], within: float) -> float:
    started = time.monotonic()
    while True:
        seen = {node: _overlay(netns[node]) for node in wanted}
        if seen == wanted:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"overlay (wanted, seen): {wanted}, {seen}"
        time.sleep(0.1)


def test_three_nodes_vxlan_without_bgp(
    needs_services: None, lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FELIX_REFRESHINTERVAL", str(REFRESH_S))  # the daemons inherit it
    before = host_snapshot()
    cli = make_cli(lab_dir)
    started = time.monotonic()
    up = cli("up", "--nodes", "3", "--encap", "vxlan", timeout=180).stdout
    print(f"3-node VXLAN lab up: {time.monotonic() - started:.1f}s")
    assert "BGP none" in up and "encap vxlan" in up, up
    state = json.loads((lab_dir / "state.json").read_text())
    netns = {n["name"]: n["netns"] for n in state["nodes"]}
    assert all("calico-bgpd" not in n["processes"] for n in state["nodes"])

    # Pods created once the overlay exists get its MTU on their veths.
    deadline = time.monotonic() + SETTLE_S
    while not all(ip_json(ns, "link", "show", "type", "vxlan") for ns in netns.values()):
        assert time.monotonic() < deadline, "vxlan.calico did not appear on every node"
        time.sleep(0.1)
    for pod, node in PODS.items():
        cli("pod", "run", pod, "--node", node, "--serve", "tcp:80,udp:80")
    pods = json.loads((lab_dir / "state.json").read_text())["pods"]
    for pod in pods.values():
        eth0 = ip_json(pod["netns"], "link", "show", "eth0")[0]
        host = ip_json(netns[pod["node"]], "link", "show", pod["host_interface"])[0]
        assert eth0["mtu"] == host["mtu"] == VXLAN_MTU, (eth0, host)
    blocks = {
        str(ipaddress.ip_network(f"{pods[p]['ips'][0]}/{BLOCK_PREFIX}", strict=False)): node
        for p, node in PODS.items()
    }

    # Every Node carries its VTEP: an address in the pool, a locally administered MAC.
    specs = _nodes(cli)
    vteps = {n: (specs[n]["ipv4VXLANTunnelAddr"], specs[n]["vxlanTunnelMACAddr"]) for n in netns}
    assert len({ip for ip, _ in vteps.values()}) == 3 and len({m for _, m in vteps.values()}) == 3
    for ip, mac in vteps.values():
        assert ipaddress.ip_address(ip) in POOL
        assert int(mac.split(":")[0], 16) & 0x03 == 0x02
    # ... allocated through IPAM under Calico's handle.
    held = {
        parts[0]: parts[1]
        for line in cli("calicoctl", "ipam", "show", "--show-blocks").stdout.splitlines()
        if len(parts := line.split()) >= 2 and parts[1].startswith("vxlan-tunnel-addr-")
    }
    assert held == {ip: f"vxlan-tunnel-addr-{n}" for n, (ip, _) in vteps.items()}, held

    for node, ns in netns.items():
        link = ip_json(ns, "-d", "link", "show", "vxlan.calico")[0]
        info = link["linkinfo"]["info_data"]
        assert (info["id"], info["port"], info["learning"]) == (4096, 4789, False), info
        assert info["local"] == NODE_ADDRESS[node]
        assert link["mtu"] == 1450 and link["address"] == vteps[node][1]
        addrs = ip_json(ns, "-4", "addr", "show", "vxlan.calico")[0]["addr_info"]
        assert [(a["local"], a["prefixlen"]) for a in addrs] == [(vteps[node][0], 32)]

    wanted = _wanted(vteps, blocks, list(netns))
    _wait_overlay(netns, wanted, SETTLE_S)

    tx_before = {node: tx_packets(ns) for node, ns in netns.items()}
    wait_all_pairs_connect(cli, len(PODS), SETTLE_S)
    for node, ns in netns.items():
        # Each node sent to two others over TCP and UDP: all of it left through vxlan.calico.
        assert tx_packets(ns) - tx_before[node] >= 8, node

    # At the computed MTU a don't-fragment UDP datagram crosses and comes back (the pod
    # server echoes); one byte more is refused at the sender, not fragmented.
    a, b = pods["x/a"], pods["x/b"]
    largest = VXLAN_MTU - 28  # IPv4 20 + UDP 8
    for size, expect in ((largest, "echoed"), (largest + 1, "EMSGSIZE")):
        assert df_udp(a["netns"], b["ips"][0], size) == expect, size
    # A 1,400-byte payload over TCP crosses in one segment (MSS 1410) and is echoed back.
    assert tcp_exchange(a["netns"], b["ips"][0], 80, 1400) == "echoed"

    # Drift: the routes flushed by hand are back within the refresh interval.
    flush = ["ip", "-n", netns["node-1"], "route", "flush", "dev", "vxlan.calico"]
    subprocess.run(flush, check=True)
    assert _overlay(netns["node-1"])["routes"] == {}
    repaired = _wait_overlay(netns, wanted, REFRESH_S + 4.0)
    print(f"flushed routes repaired in {repaired:.2f}s (refresh interval {REFRESH_S}s)")

    # A restarted Felix adopts the device as it is and keeps its VTEP.
    index = ip_json(netns["node-1"], "link", "show", "vxlan.calico")[0]["ifindex"]
    cli("node", "restart", "node-1", "calico-felix")
    _wait_overlay(netns, wanted, SETTLE_S)
    assert ip_json(netns["node-1"], "link", "show", "vxlan.calico")[0]["ifindex"] == index
    assert _nodes(cli)["node-1"]["ipv4VXLANTunnelAddr"] == vteps["node-1"][0]

    # A Node deleted from the datastore leaves the others' kernels.
    cli("calicoctl", "delete", "node", "node-3")
    gone = _wait_overlay(netns, _wanted(vteps, blocks, ["node-1", "node-2"]), SETTLE_S)
    print(f"node-3's routes, neighbour and FDB entry gone from the others in {gone:.2f}s")

    # The pool back to vxlanMode Never: the devices go, the VTEPs are released and cleared.
    apply_pool(cli, lab_dir, vxlanMode="Never")
    deadline = time.monotonic() + SETTLE_S
    while True:
        devices = [n for n, ns in netns.items() if ip_json(ns, "link", "show", "type", "vxlan")]
        specs = _nodes(cli)
        published = [n for n, spec in specs.items() if spec.get("ipv4VXLANTunnelAddr")]
        if not devices and not published:
            break
        assert time.monotonic() < deadline, f"still there: devices {devices}, VTEPs {published}"
        time.sleep(0.2)
    ipam = cli("calicoctl", "ipam", "show", "--show-blocks").stdout
    assert "vxlan-tunnel-addr-node-1" not in ipam and "vxlan-tunnel-addr-node-2" not in ipam

    cli("down")
    assert not lab_dir.exists() and lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
