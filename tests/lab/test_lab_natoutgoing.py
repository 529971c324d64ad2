"""Outgoing NAT (issue 11): a pod in a pool with `natOutgoing: true` reaches a server outside
every pool, which sees the node's address; with natOutgoing off it does not reach it (the
outside has no route back to the pools); pod-to-pod traffic across nodes is never
masqueraded. On nftables and on iptables, over the VXLAN overlay without BGP.

The outside is the lab's own (`calico-lab up --internet`): a namespace at 198.51.100.1 beyond
the lab network, routed back only to the node subnets, whose server answers each connection
with the source address it saw; `down` removes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.lab.labkit import apply_pool, connect_from, lab_namespaces, make_cli, whoami_server

pytestmark = pytest.mark.netns

SETTLE_S = 15.0


@pytest.mark.parametrize("dataplane", ["nftables", "iptables"])
def test_nat_outgoing(
    needs_services: None, lab_dir: Path, monkeypatch: pytest.MonkeyPatch, dataplane: str
) -> None:
    monkeypatch.setenv("FELIX_REFRESHINTERVAL", "1")
    cli = make_cli(lab_dir)
    options = ("--nodes", "2", "--encap", "vxlan", "--dataplane", dataplane, "--internet")
    cli("up", *options, timeout=180)
    cli("pod", "run", "x/a", "--node", "node-1", "--serve", "tcp:80")
    cli("pod", "run", "x/b", "--node", "node-2", "--serve", "tcp:80")
    state = json.loads((lab_dir / "state.json").read_text())
    a, b = state["pods"]["x/a"], state["pods"]["x/b"]
    outside = state["outside"]
    assert outside["address"] == "198.51.100.1" and outside["netns"] in lab_namespaces(lab_dir)
    address, port = outside["address"], int(outside["port"])

    off = connect_from(a["netns"], address, port)
    assert off.startswith("unreachable"), f"reached the outside without natOutgoing: {off}"

    apply_pool(cli, lab_dir, vxlanMode="Always", natOutgoing=True)
    deadline = time.monotonic() + SETTLE_S
    while (seen := connect_from(a["netns"], address, port)) != "10.66.0.11":
        assert time.monotonic() < deadline, f"outside saw {seen!r}, not node-1's address"
    print(f"{dataplane}: the outside saw {seen} (node-1)")

    with whoami_server(b["netns"], 8081, lab_dir.parent):
        assert connect_from(a["netns"], b["ips"][0], 8081) == a["ips"][0]
    cli("down")
    assert lab_namespaces(lab_dir) == []
