"""VXLAN CrossSubnet on two lab subnets (issue 11): `calico-lab up --nodes 3 --subnets 2
--encap vxlan-crosssubnet` puts node-1 and node-3 on 10.66.0.0/24 and node-2 on 10.66.1.0/24,
routed by the lab network. Felix routes the blocks of a node on its own subnet via that
node's address on eth0 (plain routing, nothing encapsulated) and the blocks of a node on the
other subnet through vxlan.calico; real traffic shows it in the device's counters. Across
VXLAN a 1,400-byte TCP payload is echoed both ways and a don't-fragment datagram at the
computed MTU crosses while one byte more is refused at the sender. Nothing is masqueraded
between pods. `down` leaves nothing.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.labkit import (
    BLOCK_PREFIX,
    PODS,
    VXLAN_MTU,
    LabCli,
    connect_from,
    df_udp,
    host_snapshot,
    ip_json,
    lab_namespaces,
    make_cli,
    tcp_exchange,
    tx_packets,
    wait_all_pairs_connect,
    whoami_server,
)

pytestmark = pytest.mark.netns

NODE_CIDR = {"node-1": "10.66.0.11/24", "node-2": "10.66.1.12/24", "node-3": "10.66.0.13/24"}
SETTLE_S = 15.0
PAYLOAD = 1400


def _block(ip: str) -> str:
    return str(ipaddress.ip_network(f"{ip}/{BLOCK_PREFIX}", strict=False))


def _node_specs(cli: LabCli) -> dict[str, dict[str, Any]]:
    out = json.loads(cli("calicoctl", "get", "nodes", "-o", "json").stdout)
    items = out["items"] if isinstance(out, dict) and "items" in out else out
    return {n["metadata"]["name"]: n["spec"] for n in items}


def _routes(netns: str) -> dict[str, tuple[str, str]]:
    """Felix's routes (proto 80) in a node: destination -> (device, gateway)."""
    return {
        r["dst"]: (r["dev"], r.get("gateway", ""))
        for r in ip_json(netns, "-4", "route", "show", "proto", "80")
    }


def _wanted_routes(
    blocks: dict[str, str], vteps: dict[str, str]
) -> dict[str, dict[str, tuple[str, str]]]:
    """Per node: the other nodes' blocks via eth0 on the same subnet, else via VXLAN."""
    subnet = {n: ipaddress.ip_interface(c).network for n, c in NODE_CIDR.items()}
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for node in NODE_CIDR:
        out[node] = {}
        for block, owner in blocks.items():
            if owner == node:
                continue
            if subnet[owner] == subnet[node]:
                out[node][block] = ("eth0", str(ipaddress.ip_interface(NODE_CIDR[owner]).ip))
            else:
                out[node][block] = ("vxlan.calico", vteps[owner])
    return out


def test_crosssubnet_encapsulates_only_between_subnets(
    needs_services: None, lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FELIX_REFRESHINTERVAL", "1")
    before = host_snapshot()
    cli = make_cli(lab_dir)
    started = time.monotonic()
    options = ("--nodes", "3", "--subnets", "2", "--encap", "vxlan-crosssubnet")
    up = cli("up", *options, timeout=180).stdout
    print(f"3 nodes on 2 subnets (CrossSubnet) up: {time.monotonic() - started:.1f}s")
    assert "on 2 subnet(s)" in up and "BGP none" in up and "encap vxlan-crosssubnet" in up, up
    state: dict[str, Any] = json.loads((lab_dir / "state.json").read_text())
    netns = {n["name"]: n["netns"] for n in state["nodes"]}
    assert state["subnets"] == 2
    for node, cidr in NODE_CIDR.items():
        addrs = ip_json(netns[node], "-4", "addr", "show", "dev", "eth0")[0]["addr_info"]
        assert [f"{a['local']}/{a['prefixlen']}" for a in addrs] == [cidr]

    pool = json.loads(cli("calicoctl", "get", "ippool", "lab-pool", "-o", "json").stdout)
    assert pool["spec"]["vxlanMode"] == "CrossSubnet"
    specs = _node_specs(cli)
    assert {n: s["bgp"]["ipv4Address"] for n, s in specs.items()} == NODE_CIDR

    # Every node has a VTEP (a node on the other subnet needs it) before pods start, so the
    # pods get the overlay's MTU.
    deadline = time.monotonic() + SETTLE_S
    while not all(ip_json(ns, "link", "show", "type", "vxlan") for ns in netns.values()):
        assert time.monotonic() < deadline, "vxlan.calico did not appear on every node"
        time.sleep(0.1)
    for pod, node in PODS.items():
        cli("pod", "run", pod, "--node", node, "--serve", "tcp:80,udp:80")
    pods = json.loads((lab_dir / "state.json").read_text())["pods"]
    for pod in pods.values():
        assert ip_json(pod["netns"], "link", "show", "eth0")[0]["mtu"] == VXLAN_MTU
    blocks = {_block(pods[p]["ips"][0]): node for p, node in PODS.items()}

    specs = _node_specs(cli)
    vteps = {n: specs[n]["ipv4VXLANTunnelAddr"] for n in NODE_CIDR}
    wanted = _wanted_routes(blocks, vteps)
    deadline = time.monotonic() + SETTLE_S
    while (seen := {n: _routes(ns) for n, ns in netns.items()}) != wanted:
        assert time.monotonic() < deadline, f"routes (wanted, seen): {wanted}, {seen}"
        time.sleep(0.1)
    wait_all_pairs_connect(cli, len(PODS), SETTLE_S)
    a, b, c = pods["x/a"], pods["x/b"], pods["x/c"]
    time.sleep(0.5)  # the matrix's last FIN/ACKs are through

    # Same subnet (node-1 <-> node-3): a full-size exchange both ways, nothing through VXLAN.
    tx = {node: tx_packets(ns) for node, ns in netns.items()}
    eth0 = tx_packets(netns["node-1"], "eth0")
    assert tcp_exchange(a["netns"], c["ips"][0], 80, PAYLOAD) == "echoed"
    assert tcp_exchange(c["netns"], a["ips"][0], 80, PAYLOAD) == "echoed"
    assert df_udp(a["netns"], c["ips"][0], VXLAN_MTU - 28) == "echoed"
    assert tx_packets(netns["node-1"]) == tx["node-1"], "node-1 encapsulated for node-3"
    assert tx_packets(netns["node-3"]) == tx["node-3"], "node-3 encapsulated for node-1"
    assert tx_packets(netns["node-1"], "eth0") - eth0 >= 6  # plain on the uplink instead

    # Across subnets (node-1 <-> node-2): the same exchange goes through vxlan.calico.
    tx = {node: tx_packets(ns) for node, ns in netns.items()}
    assert tcp_exchange(a["netns"], b["ips"][0], 80, PAYLOAD) == "echoed"
    assert tcp_exchange(b["netns"], a["ips"][0], 80, PAYLOAD) == "echoed"
    for node in ("node-1", "node-2"):
        assert tx_packets(netns[node]) - tx[node] >= 6, f"{node} did not encapsulate"
    assert tx_packets(netns["node-3"]) == tx["node-3"]  # not on the path

    # At the computed MTU a don't-fragment datagram crosses VXLAN and is echoed; one byte
    # more is refused at the sender, not fragmented.
    largest = VXLAN_MTU - 28  # IPv4 20 + UDP 8
    assert df_udp(a["netns"], b["ips"][0], largest) == "echoed"
    assert df_udp(a["netns"], b["ips"][0], largest + 1) == "EMSGSIZE"

    # Pod to pod keeps the pod's address on either path.
    with whoami_server(a["netns"], 8081, lab_dir.parent):
        assert connect_from(c["netns"], a["ips"][0], 8081) == c["ips"][0]
        assert connect_from(b["netns"], a["ips"][0], 8081) == b["ips"][0]

    # Each Felix reports its overlay: node-1 reaches node-3 directly, node-2 by VXLAN; IPIP is
    # unsupported by this kernel (no ipip module) and says so.
    overlay = {o["node"]: o for o in json.loads(cli("status", "--json").stdout)["overlay"]}
    assert overlay["node-1"]["vxlan_device"] and overlay["node-1"]["vxlan_mtu"] == VXLAN_MTU
    assert overlay["node-1"]["direct_routes"] >= 1 and overlay["node-1"]["vxlan_routes"] >= 1
    assert overlay["node-1"]["pod_mtu"] == VXLAN_MTU
    assert overlay["node-1"]["ipip"].startswith("unsupported"), overlay["node-1"]
    text = cli("status").stdout
    assert "OVERLAY" in text and overlay["node-1"]["vtep"] in text, text

    cli("down")
    assert not lab_dir.exists() and lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
