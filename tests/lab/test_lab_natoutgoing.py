"""Outgoing NAT (issue 11): a pod in a pool with `natOutgoing: true` reaches a server outside
every pool, which sees the node's address; with natOutgoing off it does not reach it (the
outside has no route back to the pools); pod-to-pod traffic across nodes is never
masqueraded. On nftables and on iptables, over the VXLAN overlay without BGP.

The "outside" is a namespace this test hangs off the lab network's namespace (198.51.100.1,
routed back only to the node subnet), removed in every case.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.lab.labkit import LabCli, make_cli

pytestmark = pytest.mark.netns

OUTSIDE = "198.51.100.1"
OUTSIDE_GW = "198.51.100.254"
NODE_SUBNET = "10.66.0.0/24"
SETTLE_S = 15.0
# Accept connections and answer each with the address it came from.
PEER_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, (ip, _) = s.accept()
    c.sendall(ip.encode())
    c.close()
"""
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
    print(c.recv(100).decode())
except OSError as exc:
    print(f"unreachable ({exc})")
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def _server(netns: str, port: int) -> Iterator[None]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", PEER_SERVER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def _outside(lab_netns: str) -> Iterator[str]:
    """A namespace at 198.51.100.1 behind the lab network's namespace."""
    name = f"vxout-{os.getpid()}-{secrets.token_hex(3)}"
    port = f"vxo{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        veth = ["type", "veth", "peer", "name", "eth0", "netns", name]
        _ip("-n", lab_netns, "link", "add", port, *veth)
        _ip("-n", lab_netns, "addr", "add", f"{OUTSIDE_GW}/24", "dev", port)
        _ip("-n", lab_netns, "link", "set", port, "up")
        subprocess.run(
            ["ip", "netns", "exec", lab_netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
        )
        _ip("-n", name, "addr", "add", f"{OUTSIDE}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        # Back to the nodes only: a packet from a pod address finds no way home.
        _ip("-n", name, "route", "add", NODE_SUBNET, "via", OUTSIDE_GW)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _connect(pod_netns: str, address: str, port: int) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", pod_netns, sys.executable, "-c", CLIENT, address, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout.strip() or proc.stderr.strip()


def _set_nat_outgoing(cli: LabCli, lab_dir: Path, on: bool) -> None:
    pool = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": "lab-pool"},
        "spec": {
            "cidr": "10.65.0.0/16",
            "blockSize": 26,
            "vxlanMode": "Always",
            "natOutgoing": on,
        },
    }
    path = lab_dir.parent / f"{lab_dir.name}-pool.json"
    path.write_text(json.dumps(pool))
    try:
        cli("calicoctl", "apply", "-f", str(path))
    finally:
        path.unlink()


@pytest.mark.parametrize("dataplane", ["nftables", "iptables"])
def test_nat_outgoing(
    needs_services: None, lab_dir: Path, monkeypatch: pytest.MonkeyPatch, dataplane: str
) -> None:
    monkeypatch.setenv("FELIX_REFRESHINTERVAL", "1")
    cli = make_cli(lab_dir)
    cli("up", "--nodes", "2", "--encap", "vxlan", "--dataplane", dataplane, timeout=180)
    cli("pod", "run", "x/a", "--node", "node-1", "--serve", "tcp:80")
    cli("pod", "run", "x/b", "--node", "node-2", "--serve", "tcp:80")
    state = json.loads((lab_dir / "state.json").read_text())
    a, b = state["pods"]["x/a"], state["pods"]["x/b"]

    with _outside(state["network_netns"]) as outside, _server(outside, 8080):
        off = _connect(a["netns"], OUTSIDE, 8080)
        assert off.startswith("unreachable"), f"reached the outside without natOutgoing: {off}"

        _set_nat_outgoing(cli, lab_dir, True)
        deadline = time.monotonic() + SETTLE_S
        while (seen := _connect(a["netns"], OUTSIDE, 8080)) != "10.66.0.11":
            assert time.monotonic() < deadline, f"outside saw {seen!r}, not node-1's address"
        print(f"{dataplane}: the outside saw {seen} (node-1)")

        with _server(b["netns"], 8081):
            assert _connect(a["netns"], b["ips"][0], 8081) == a["ips"][0]
    cli("down")
