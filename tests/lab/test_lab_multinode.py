"""A multi-node lab (issue 10): three nodes, each with calico-ipamd, calico-felix and
calico-bgpd driving a real BIRD; pods on different nodes reach each other by plain routing
over the routes BGP put into each node's kernel. Mesh and route-reflector modes; a real
top-of-rack router (GoBGP) learning every node's blocks. `down` leaves nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.labkit import (
    BLOCK_PREFIX,
    NODE_ADDRESS,
    PODS,
    LabCli,
    host_snapshot,
    lab_namespaces,
    make_cli,
)

pytestmark = pytest.mark.netns

CONVERGE = 15.0


def _state(lab_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((lab_dir / "state.json").read_text())
    return data


def _run_pods(cli: LabCli, lab_dir: Path) -> dict[str, str]:
    """x/a, x/b, x/c on node-1..3; returns pod -> its block."""
    for pod, node in PODS.items():
        out = cli("pod", "run", pod, "--node", node, "--serve", "tcp:80,udp:80").stdout
        assert out.split()[-1] == node, out
    pods = _state(lab_dir)["pods"]
    return {
        key: str(ipaddress.ip_network(f"{pods[key]['ips'][0]}/{BLOCK_PREFIX}", strict=False))
        for key in PODS
    }


def _routes_via(netns: str) -> dict[str, str]:
    """Block -> next hop of the routes BGP installed in a node's kernel."""
    out = subprocess.run(
        ["ip", "-n", netns, "-4", "route", "show"], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in out.splitlines():
        match = re.match(rf"(\S+/{BLOCK_PREFIX}) via (\S+) dev eth0", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _wait_for_routes(lab_dir: Path, blocks: dict[str, str]) -> None:
    """Every node routes every other node's block via that node's address."""
    node_netns = {n["name"]: n["netns"] for n in _state(lab_dir)["nodes"]}
    want = {
        node: {blocks[pod]: NODE_ADDRESS[owner] for pod, owner in PODS.items() if owner != node}
        for node in NODE_ADDRESS
    }
    deadline = time.monotonic() + CONVERGE
    while True:
        seen = {node: _routes_via(netns) for node, netns in node_netns.items()}
        wrong = {
            node: (routes, seen[node])
            for node, routes in want.items()
            if any(seen[node].get(block) != hop for block, hop in routes.items())
        }
        if not wrong:
            return
        assert time.monotonic() < deadline, f"routes (wanted, seen) per node: {wrong}"
        time.sleep(0.2)


def _all_pairs_connect(cli: LabCli) -> None:
    """TCP and UDP between every pair of pods (all on different nodes), polled while routes
    settle."""
    deadline = time.monotonic() + CONVERGE
    while True:
        table = json.loads(cli("matrix", "--port", "80", "--protocol", "tcp,udp", "--json").stdout)
        blocked = [(proto, s, d) for proto, rows in table.items() for s, d, ok in rows if not ok]
        pairs = sum(len(rows) for rows in table.values())
        if not blocked and pairs == 12:
            return
        assert time.monotonic() < deadline, f"blocked: {blocked}"
        time.sleep(0.3)


def _sessions(cli: LabCli) -> dict[str, dict[str, tuple[str, str]]]:
    """Node -> peer address -> (type, state), from `calico-lab status --json`."""
    status = json.loads(cli("status", "--json").stdout)
    out = {}
    for entry in status["bgp_sessions"]:
        assert not entry["error"], entry
        out[entry["node"]] = {p["address"]: (p["type"], p["state"]) for p in entry["peers"]}
    return out


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (init reaps the lab's orphans when it gets to it)."""
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True


def _down_leaves_nothing(cli: LabCli, lab_dir: Path, before: dict[str, str]) -> None:
    state = _state(lab_dir)
    pids = [p["pid"] for n in state["nodes"] for p in n["processes"].values()]
    pids += [p["pid"] for p in state["infra"].values()]
    birds = [n["processes"]["bird"]["pid"] for n in state["nodes"]]
    assert len(birds) == 3
    cli("down")
    assert not lab_dir.exists()
    assert lab_namespaces(lab_dir) == []
    for pid in pids:
        assert _gone(pid), f"pid {pid} survived"
    assert host_snapshot() == before


def test_three_nodes_full_mesh(needs_bgp: None, lab_dir: Path) -> None:
    before = host_snapshot()
    cli = make_cli(lab_dir)
    started = time.monotonic()
    up = cli("up", "--nodes", "3", "--bgp", "mesh", "--dataplane", "nftables", timeout=180)
    print(f"3-node mesh up (converged): {time.monotonic() - started:.1f}s")
    assert "BGP mesh" in up.stdout
    state = _state(lab_dir)
    assert [n["address"] for n in state["nodes"]] == list(NODE_ADDRESS.values())
    assert all(
        set(n["processes"]) == {"calico-ipamd", "calico-felix", "calico-bgpd", "bird"}
        for n in state["nodes"]
    )
    sessions = _sessions(cli)
    for node, address in NODE_ADDRESS.items():
        others = set(NODE_ADDRESS.values()) - {address}
        assert set(sessions[node]) == others, sessions[node]
        assert all(state == "Established" for _, state in sessions[node].values())

    node_status = cli("node", "status", "node-2").stdout
    mesh_up = [
        line
        for line in node_status.splitlines()
        if "node-to-node mesh" in line and "Established" in line
    ]
    assert len(mesh_up) == 2, node_status
    assert "10.66.0.11" in node_status and "10.66.0.13" in node_status

    blocks = _run_pods(cli, lab_dir)
    _wait_for_routes(lab_dir, blocks)
    _all_pairs_connect(cli)
    restarted = _bird_restarted_by_bgpd(lab_dir, "node-2")
    _down_leaves_nothing(cli, lab_dir, before)
    assert _gone(restarted), "the BIRD calico-bgpd restarted survived `down`"


def _bird_restarted_by_bgpd(lab_dir: Path, node: str) -> int:
    """Kill a node's BIRD; calico-bgpd starts another (a PID the lab never recorded, which
    `down` must find through bird.pid). Returns the new BIRD's PID."""
    recorded = next(n for n in _state(lab_dir)["nodes"] if n["name"] == node)
    old = recorded["processes"]["bird"]["pid"]
    pidfile = lab_dir / "nodes" / node / "bird" / "bird.pid"
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + CONVERGE
    while True:
        with contextlib.suppress(OSError, ValueError):
            new = int(pidfile.read_text().split()[0])
            if new != old and Path(f"/proc/{new}").exists():
                return new
        assert time.monotonic() < deadline, "calico-bgpd did not restart BIRD"
        time.sleep(0.1)


def test_three_nodes_route_reflector_tor_and_typha(needs_bgp: None, lab_dir: Path) -> None:
    before = host_snapshot()
    cli = make_cli(lab_dir)
    started = time.monotonic()
    up = ("--nodes", "3", "--bgp", "rr", "--tor", "gobgp", "--datastore", "etcdv3", "--typha")
    cli("up", *up, timeout=180)
    print(f"3-node rr + gobgp ToR + Typha up (converged): {time.monotonic() - started:.1f}s")
    sessions = _sessions(cli)
    tor = "10.66.0.1"
    # The clients peer with the reflector (and the ToR) only; the reflector with everyone.
    assert set(sessions["node-1"]) == {"10.66.0.12", "10.66.0.13", tor}, sessions
    assert set(sessions["node-2"]) == {"10.66.0.11", tor}, sessions
    assert set(sessions["node-3"]) == {"10.66.0.11", tor}, sessions
    assert all(s == "Established" for peers in sessions.values() for _, s in peers.values())

    blocks = _run_pods(cli, lab_dir)
    # node-2 and node-3 learn each other's blocks through the reflector.
    _wait_for_routes(lab_dir, blocks)
    _all_pairs_connect(cli)

    status = json.loads(cli("status", "--json").stdout)
    # Typha feeds every node's Felix and calico-bgpd, all in sync, from one datastore watch.
    clients = {(c["node"], c["syncer_type"]): c["in_sync"] for c in status["typha"]["clients"]}
    assert clients == {(n, t): True for n in NODE_ADDRESS for t in ("felix", "bgp")}, clients
    assert status["tor"]["alive"] and not status["tor"]["error"], status["tor"]
    assert status["tor"]["sessions"] == {a: "Established" for a in NODE_ADDRESS.values()}
    from lab import tor as lab_tor

    deadline = time.monotonic() + CONVERGE
    while True:
        learned = lab_tor.learned("gobgp", lab_dir)
        want = {blocks[pod]: NODE_ADDRESS[node] for pod, node in PODS.items()}
        if all(hop in learned.get(block, []) for block, hop in want.items()):
            break
        assert time.monotonic() < deadline, f"ToR learned {learned}, wanted {want}"
        time.sleep(0.3)
    _down_leaves_nothing(cli, lab_dir, before)


def test_demo_across_three_nodes(needs_bgp: None, lab_dir: Path) -> None:
    before = host_snapshot()
    result = make_cli(lab_dir)("demo", "--nodes", "3", check=False, timeout=180)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "BGP mesh: every session Established" in out
    for pod, node in (
        ("shop/web", "node-1"),
        ("shop/client", "node-2"),
        ("other/intruder", "node-3"),
    ):
        assert re.search(rf"{pod}\s+\S+\s+{node}\s", out), out
    assert "The policy is enforced" in out and "lab removed" in out
    assert lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
