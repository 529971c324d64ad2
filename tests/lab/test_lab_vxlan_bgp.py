"""A 3-node lab with the VXLAN overlay and a BGP full mesh at once (issue 11), as Calico runs
it: the blocks are still announced over BGP (every BIRD learns every other node's blocks), but
Felix owns the kernel routes inside the VXLAN pool, so each remote block has exactly one kernel
route, Felix's (protocol 80, dev vxlan.calico), and none from BIRD. Pod traffic between nodes
goes through vxlan.calico. With the pool switched to vxlanMode Never at run time, Felix's
routes go, calico-bgpd reconfigures BIRD, BIRD's plain routes via the node addresses come in,
and the pods still connect; back to Always, the reverse. The same with a route reflector
(clients learn each other's blocks through it). `down` leaves nothing."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lab.tor import parse_bird_routes
from tests.lab.labkit import (
    BLOCK_PREFIX,
    NODE_ADDRESS,
    PODS,
    LabCli,
    apply_pool,
    host_snapshot,
    ip_json,
    lab_namespaces,
    make_cli,
    tx_packets,
    wait_all_pairs_connect,
)

pytestmark = pytest.mark.netns

REFRESH_S = 1.0
SETTLE_S = 20.0
RTPROT_FELIX = "80"
RTPROT_BIRD = "bird"


def _state(lab_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((lab_dir / "state.json").read_text())
    return data


def _kernel_routes(netns: str) -> dict[str, list[tuple[str, str, str | None]]]:
    """Prefix -> every kernel route to it in the main table as (protocol, device, gateway)."""
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for route in ip_json(netns, "-4", "route", "show", "table", "main"):
        entry = (str(route.get("protocol", "")), str(route.get("dev", "")), route.get("gateway"))
        out.setdefault(route["dst"], []).append(entry)
    return out


def _bird_learned(lab_dir: Path, node: str) -> dict[str, list[str]]:
    """Prefix -> next hops of the routes a node's BIRD learned over BGP (`birdc show route`)."""
    ctl = lab_dir / "nodes" / node / "bird" / "bird.ctl"
    out = subprocess.run(
        ["birdc", "-s", str(ctl), "show", "route", "where", "source", "=", "RTS_BGP"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return parse_bird_routes(out)


def _vtep_addresses(cli: LabCli) -> dict[str, str]:
    out = json.loads(cli("calicoctl", "get", "nodes", "-o", "json").stdout)
    items = out["items"] if isinstance(out, dict) and "items" in out else out
    return {
        n["metadata"]["name"]: n["spec"]["ipv4VXLANTunnelAddr"]
        for n in items
        if n["spec"].get("ipv4VXLANTunnelAddr")
    }


def _wait_vteps(cli: LabCli) -> dict[str, str]:
    """Node -> its VTEP address, once all three nodes published one."""
    deadline = time.monotonic() + SETTLE_S
    while len(vteps := _vtep_addresses(cli)) < len(NODE_ADDRESS):
        assert time.monotonic() < deadline, f"VTEPs published: {vteps}"
        time.sleep(0.2)
    return vteps


def _vxlan_devices(netns: dict[str, str]) -> list[str]:
    return [node for node, ns in netns.items() if ip_json(ns, "link", "show", "type", "vxlan")]


def _remote_routes(
    netns: dict[str, str], blocks: dict[str, str]
) -> dict[str, dict[str, list[tuple[str, str, str | None]]]]:
    """Node -> every other node's block -> the kernel routes to it on this node."""
    out = {}
    for node, ns in netns.items():
        routes = _kernel_routes(ns)
        out[node] = {b: routes.get(b, []) for b, owner in blocks.items() if owner != node}
    return out


def _wait_routes(
    netns: dict[str, str],
    blocks: dict[str, str],
    want_route: Any,
    what: str,
) -> dict[str, dict[str, list[tuple[str, str, str | None]]]]:
    """Until every node has exactly one route per remote block, the one `want_route(node,
    block)` names."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        seen = _remote_routes(netns, blocks)
        wanted = {
            node: {block: [want_route(node, block)] for block in routes}
            for node, routes in seen.items()
        }
        if seen == wanted:
            return seen
        assert time.monotonic() < deadline, f"{what}: wanted {wanted}, seen {seen}"
        time.sleep(0.2)


def _new_pod_mtu(cli: LabCli, lab_dir: Path, pod: str) -> int:
    """The MTU a pod created now on node-1 gets on both veth ends (the pod is removed again,
    so the all-pairs matrix keeps its three pods)."""
    cli("pod", "run", pod, "--node", "node-1")
    try:
        state = _state(lab_dir)["pods"][pod]
        inside = ip_json(state["netns"], "link", "show", "eth0")[0]["mtu"]
        host_ns = {n["name"]: n["netns"] for n in _state(lab_dir)["nodes"]}["node-1"]
        outside = ip_json(host_ns, "link", "show", state["host_interface"])[0]["mtu"]
        assert inside == outside, (inside, outside)
        return int(inside)
    finally:
        cli("pod", "rm", pod)


def _sessions(cli: LabCli) -> dict[str, dict[str, str]]:
    """Node -> peer address -> BIRD's session state, from `calico-lab status --json`."""
    status = json.loads(cli("status", "--json").stdout)
    out = {}
    for entry in status["bgp_sessions"]:
        assert not entry["error"], entry
        out[entry["node"]] = {p["address"]: p["state"] for p in entry["peers"]}
    return out


def _run_pods(cli: LabCli, lab_dir: Path) -> dict[str, str]:
    """x/a, x/b, x/c on node-1..3; returns each pod's block -> its node."""
    for pod, node in PODS.items():
        cli("pod", "run", pod, "--node", node, "--serve", "tcp:80,udp:80")
    pods = _state(lab_dir)["pods"]
    return {
        str(ipaddress.ip_network(f"{pods[p]['ips'][0]}/{BLOCK_PREFIX}", strict=False)): node
        for p, node in PODS.items()
    }


def _only_felix_routes_in_kernel(
    lab_dir: Path, netns: dict[str, str], blocks: dict[str, str], cli: LabCli
) -> dict[str, str]:
    """Every node's kernel holds one route per remote block, Felix's (protocol 80, via the
    owner's VTEP on vxlan.calico), and from BIRD only its own blackholes, while its BIRD
    learned every remote block over BGP with the owner as next hop. Returns the VTEPs."""
    vteps = _wait_vteps(cli)
    settled = _wait_routes(
        netns,
        blocks,
        lambda node, block: (RTPROT_FELIX, "vxlan.calico", vteps[blocks[block]]),
        "Felix's VXLAN routes only",
    )
    print(f"remote block routes per node: {settled}")
    for node, ns in netns.items():
        from_bird = ip_json(ns, "-4", "route", "show", "proto", RTPROT_BIRD)
        assert all(r.get("type") == "blackhole" for r in from_bird), (node, from_bird)
        own = {b for b, owner in blocks.items() if owner == node}
        assert own <= {r["dst"] for r in from_bird}, (node, from_bird)
        learned = _bird_learned(lab_dir, node)
        for block, owner in blocks.items():
            if owner != node:
                assert learned.get(block) == [NODE_ADDRESS[owner]], (node, block, learned)
    return vteps


def test_three_nodes_vxlan_with_bgp_mesh(
    needs_bgp: None, lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FELIX_REFRESHINTERVAL", str(REFRESH_S))  # the daemons inherit it
    before = host_snapshot()
    cli = make_cli(lab_dir)
    started = time.monotonic()
    up = cli("up", "--nodes", "3", "--encap", "vxlan", "--bgp", "mesh", timeout=180).stdout
    print(f"3-node VXLAN + BGP mesh lab up (converged): {time.monotonic() - started:.1f}s")
    assert "BGP mesh" in up and "encap vxlan" in up, up
    state = _state(lab_dir)
    netns = {n["name"]: n["netns"] for n in state["nodes"]}
    assert all("calico-bgpd" in n["processes"] for n in state["nodes"])

    # Every mesh session is Established.
    sessions = _sessions(cli)
    for node, address in NODE_ADDRESS.items():
        others = set(NODE_ADDRESS.values()) - {address}
        assert sessions[node] == {peer: "Established" for peer in others}, sessions

    blocks = _run_pods(cli, lab_dir)
    _only_felix_routes_in_kernel(lab_dir, netns, blocks, cli)

    # Pod traffic between nodes crosses as VXLAN.
    tx_before = {node: tx_packets(ns) for node, ns in netns.items()}
    wait_all_pairs_connect(cli, len(PODS), SETTLE_S)
    for node, ns in netns.items():
        # Each node sent to two others over TCP and UDP: all of it left through vxlan.calico.
        assert tx_packets(ns) - tx_before[node] >= 8, node

    # The pool to vxlanMode Never at run time: Felix's routes and devices go, calico-bgpd
    # renders a kernel filter without the pool and BIRD's plain routes take over.
    apply_pool(cli, lab_dir, vxlanMode="Never")
    started = time.monotonic()
    _wait_routes(
        netns,
        blocks,
        lambda node, block: (RTPROT_BIRD, "eth0", NODE_ADDRESS[blocks[block]]),
        "BIRD's plain routes only",
    )
    print(f"vxlanMode Never: BIRD's routes replaced Felix's in {time.monotonic() - started:.2f}s")
    deadline = time.monotonic() + SETTLE_S
    while devices := _vxlan_devices(netns):
        assert time.monotonic() < deadline, f"vxlan.calico still on {devices}"
        time.sleep(0.2)
    for node, ns in netns.items():
        assert ip_json(ns, "-4", "route", "show", "proto", RTPROT_FELIX) == [], node
    wait_all_pairs_connect(cli, len(PODS), SETTLE_S)
    # New pods get the plain MTU now, without a restart (the running ones keep theirs).
    assert _new_pod_mtu(cli, lab_dir, "x/plain") == 1500

    # And back to Always: BIRD withdraws its kernel routes (reconfigured, its sessions stay
    # up) and Felix's, via the newly allocated VTEPs, are again the only ones.
    apply_pool(cli, lab_dir, vxlanMode="Always")
    started = time.monotonic()
    vteps = _wait_vteps(cli)
    _wait_routes(
        netns,
        blocks,
        lambda node, block: (RTPROT_FELIX, "vxlan.calico", vteps[blocks[block]]),
        "Felix's VXLAN routes again",
    )
    print(f"vxlanMode Always again: Felix's routes only in {time.monotonic() - started:.2f}s")
    tx_before = {node: tx_packets(ns) for node, ns in netns.items()}
    wait_all_pairs_connect(cli, len(PODS), SETTLE_S)
    for node, ns in netns.items():
        assert tx_packets(ns) - tx_before[node] >= 8, node
    assert _sessions(cli) == sessions
    assert _new_pod_mtu(cli, lab_dir, "x/overlay") == 1450

    cli("down")
    assert not lab_dir.exists() and lab_namespaces(lab_dir) == []
    assert host_snapshot() == before


def test_three_nodes_vxlan_with_a_route_reflector(
    needs_bgp: None, lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """node-1 reflects: node-2 and node-3 learn each other's blocks through it (next hop the
    owner), and still only Felix's VXLAN routes reach the kernels."""
    monkeypatch.setenv("FELIX_REFRESHINTERVAL", str(REFRESH_S))
    before = host_snapshot()
    cli = make_cli(lab_dir)
    up = cli("up", "--nodes", "3", "--encap", "vxlan", "--bgp", "rr", timeout=180).stdout
    assert "BGP rr" in up and "encap vxlan" in up, up
    netns = {n["name"]: n["netns"] for n in _state(lab_dir)["nodes"]}
    sessions = _sessions(cli)
    reflector, clients = NODE_ADDRESS["node-1"], ("node-2", "node-3")
    assert sessions["node-1"] == {NODE_ADDRESS[c]: "Established" for c in clients}, sessions
    for client in clients:
        assert sessions[client] == {reflector: "Established"}, sessions

    blocks = _run_pods(cli, lab_dir)
    _only_felix_routes_in_kernel(lab_dir, netns, blocks, cli)
    tx_before = {node: tx_packets(ns) for node, ns in netns.items()}
    wait_all_pairs_connect(cli, len(PODS), SETTLE_S)
    for node, ns in netns.items():
        assert tx_packets(ns) - tx_before[node] >= 8, node

    cli("down")
    assert not lab_dir.exists() and lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
