"""BGP between nodes on two lab subnets (issue 11): `calico-lab up --nodes 3 --subnets 2
--bgp mesh|rr` (encap none). node-1 and node-3 sit on 10.66.0.0/24, node-2 on 10.66.1.0/24,
the lab network routes between them and each node has a default route to its subnet's
gateway. A block on the other subnet has the owner's address as its BGP next hop; BIRD
resolves it recursively through the default route it learned from the kernel and installs
the block via the gateway. Nothing BIRD learned from the kernel is ever advertised.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.labkit import (
    LabCli,
    host_snapshot,
    ip_json,
    lab_namespaces,
    make_cli,
    wait_all_pairs_connect,
)

pytestmark = pytest.mark.netns

BLOCK_PREFIX = 26  # the lab pool's block size
POOL = ipaddress.IPv4Network("10.65.0.0/16")  # the lab's default pool
NODE_ADDRESS = {"node-1": "10.66.0.11", "node-2": "10.66.1.12", "node-3": "10.66.0.13"}
GATEWAY = {"node-1": "10.66.0.1", "node-2": "10.66.1.1", "node-3": "10.66.0.1"}
PODS = {"x/a": "node-1", "x/b": "node-2", "x/c": "node-3"}
CONVERGE = 30.0
BIRDC = "birdc"


def _state(lab_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((lab_dir / "state.json").read_text())
    return data


def _birdc(lab_dir: Path, node: str, *command: str) -> str:
    ctl = lab_dir / "nodes" / node / "bird" / "bird.ctl"
    return subprocess.run(
        [BIRDC, "-s", str(ctl), *command], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def _same_subnet(a: str, b: str) -> bool:
    return ipaddress.ip_network(f"{a}/24", strict=False) == ipaddress.ip_network(
        f"{b}/24", strict=False
    )


def _bird_routes(netns: str) -> dict[str, dict[str, Any]]:
    """Prefix -> `ip -j route` entry, for the routes BIRD put in a node's kernel."""
    return {r["dst"]: r for r in ip_json(netns, "-4", "route", "show", "proto", "bird")}


def _wait_for_routes(lab_dir: Path, blocks: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every node routes every other node's block: directly via the owner on its own subnet,
    via its gateway (the recursively resolved next hop) for an owner on the other subnet."""
    node_netns = {n["name"]: n["netns"] for n in _state(lab_dir)["nodes"]}
    want = {
        node: {
            blocks[pod]: owner_address if _same_subnet(owner_address, NODE_ADDRESS[node]) else gw
            for pod, owner in PODS.items()
            if owner != node
            for owner_address in [NODE_ADDRESS[owner]]
        }
        for node, gw in GATEWAY.items()
    }
    deadline = time.monotonic() + CONVERGE
    while True:
        seen = {node: _bird_routes(netns) for node, netns in node_netns.items()}
        wrong = {
            node: (routes, {b: seen[node].get(b) for b in routes})
            for node, routes in want.items()
            if any(
                (seen[node].get(block) or {}).get("gateway") != hop
                or (seen[node].get(block) or {}).get("dev") != "eth0"
                or (seen[node].get(block) or {}).get("type", "unicast") != "unicast"
                for block, hop in routes.items()
            )
        }
        if not wrong:
            return seen
        assert time.monotonic() < deadline, f"routes (wanted, seen) per node: {wrong}"
        time.sleep(0.3)


def _sessions(cli: LabCli) -> dict[str, dict[str, str]]:
    """Node -> peer address -> BGP state, from `calico-lab status --json`."""
    status = json.loads(cli("status", "--json").stdout)
    out = {}
    for entry in status["bgp_sessions"]:
        assert not entry["error"], entry
        out[entry["node"]] = {p["address"]: p["state"] for p in entry["peers"]}
    return out


def _bgp_protocols(lab_dir: Path, node: str) -> list[str]:
    out = _birdc(lab_dir, node, "show", "protocols")
    return [line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["BGP"]]


def _prefixes(birdc_output: str) -> set[str]:
    """The prefixes in a `show route` listing (continuation lines start with blanks)."""
    found = set()
    for line in birdc_output.splitlines():
        first = line.split()[0] if line.strip() and not line[0].isspace() else ""
        if "/" in first:
            found.add(first)
    return found


def _in_pool(prefix: str) -> bool:
    net = ipaddress.ip_network(prefix)
    return isinstance(net, ipaddress.IPv4Network) and net.subnet_of(POOL)


def _nothing_from_the_kernel_is_advertised(lab_dir: Path) -> None:
    """Each BIRD learned the default route from the kernel (no route within the pool), and
    exports to its peers only prefixes within the pool (blocks); the peers' tables hold no
    default route either."""
    for node in NODE_ADDRESS:
        learned = _prefixes(_birdc(lab_dir, node, "show", "route", "protocol", "calico_kernel"))
        print(f"{node}: learned from the kernel: {sorted(learned)}")
        assert "0.0.0.0/0" in learned, learned
        assert not any(_in_pool(p) for p in learned), learned
        protocols = _bgp_protocols(lab_dir, node)
        assert protocols, node
        for protocol in protocols:
            exported = _prefixes(_birdc(lab_dir, node, "show", "route", "export", protocol))
            assert exported, (node, protocol)
            outside = [p for p in exported if not _in_pool(p)]
            assert not outside, (node, protocol, sorted(exported))
        from_bgp = _prefixes(_birdc(lab_dir, node, "show", "route", "where", "source = RTS_BGP"))
        assert from_bgp and all(_in_pool(p) for p in from_bgp)


def _router_knows_the_blocks(router_netns: str, blocks: dict[str, str]) -> None:
    """The fabric's part: a packet between subnets crosses the lab router, which must know
    where each block lives. In a real cluster the router learns that over BGP (peering with
    the nodes); the lab's ToR stays on one subnet, so the test installs those routes in the
    router's namespace (removed with it at `down`)."""
    for pod, owner in PODS.items():
        subprocess.run(
            ["ip", "-n", router_netns, "route", "replace", blocks[pod], "via", NODE_ADDRESS[owner]],
            check=True,
        )


@pytest.mark.parametrize("mode", ["mesh", "rr"])
def test_bgp_across_two_subnets(needs_bgp: None, lab_dir: Path, mode: str) -> None:
    before = host_snapshot()
    cli = make_cli(lab_dir)
    started = time.monotonic()
    cli("up", "--nodes", "3", "--subnets", "2", "--bgp", mode, timeout=240)
    print(f"3 nodes on 2 subnets, BGP {mode}, up (converged): {time.monotonic() - started:.1f}s")
    state = _state(lab_dir)
    assert [n["address"] for n in state["nodes"]] == list(NODE_ADDRESS.values())
    assert state["bgp"] == mode and state["subnets"] == 2

    sessions = _sessions(cli)
    want_peers = {
        node: set(NODE_ADDRESS.values()) - {address}
        if mode == "mesh" or node == "node-1"
        else {NODE_ADDRESS["node-1"]}  # rr: node-1 reflects, the others peer with it only
        for node, address in NODE_ADDRESS.items()
    }
    assert {n: set(p) for n, p in sessions.items()} == want_peers, sessions
    assert all(s == "Established" for peers in sessions.values() for s in peers.values())

    for pod, node in PODS.items():
        out = cli("pod", "run", pod, "--node", node, "--serve", "tcp:80,udp:80").stdout
        assert out.split()[-1] == node, out
    pods = _state(lab_dir)["pods"]
    blocks = {
        key: str(ipaddress.ip_network(f"{pods[key]['ips'][0]}/{BLOCK_PREFIX}", strict=False))
        for key in PODS
    }
    seen = _wait_for_routes(lab_dir, blocks)
    print("node-2's BIRD routes:", json.dumps(seen["node-2"], sort_keys=True))
    _router_knows_the_blocks(state["network_netns"], blocks)
    wait_all_pairs_connect(cli, pods=3, within=CONVERGE)
    _nothing_from_the_kernel_is_advertised(lab_dir)
    # BIRD left the routes it did not install alone: each node's default route is still there.
    for node in state["nodes"]:
        defaults = ip_json(node["netns"], "-4", "route", "show", "default")
        assert [r.get("gateway") for r in defaults] == [GATEWAY[node["name"]]], defaults
        assert all(r.get("protocol") != "bird" for r in defaults), defaults

    cli("down")
    assert not lab_dir.exists()
    assert lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
