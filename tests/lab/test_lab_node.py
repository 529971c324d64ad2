"""calico-lab against the real daemons: up/down, pods, probes, matrix, pod rm.

Every test takes the host-namespace snapshot before it starts and compares it after `down`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from lab.lab import DEFAULT_POOL
from libcalico.config import DatastoreConfig
from libcalico.datastore import connect
from tests.lab.labkit import LabHandle, host_snapshot, lab_namespaces, make_cli

pytestmark = pytest.mark.netns


def _node_netns(handle: LabHandle) -> str:
    state = handle.state()
    nodes = state["nodes"]
    assert isinstance(nodes, list)
    return str(nodes[0]["netns"])


def _keys(db: Path, prefix: str) -> list[str]:
    async def read() -> list[str]:
        store = await connect(DatastoreConfig(type="embedded", path=str(db)))
        try:
            return [kv.key for kv in (await store.list(prefix)).items]
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.parametrize("datastore", ["embedded", "etcdv3"])
def test_up_status_down_leaves_host_untouched(
    needs_services: None, lab_dir: Path, datastore: str
) -> None:
    before = host_snapshot()
    cli = make_cli(lab_dir)
    cli("up", "--datastore", datastore)
    handle = LabHandle(lab_dir, cli)
    node_ns = _node_netns(handle)
    status = json.loads(cli("status", "--json").stdout)
    assert {s["name"] for s in status["services"]} >= {"calico-ipamd", "calico-felix"}
    assert all(s["alive"] for s in status["services"]), status["services"]
    assert status["nodes"][0]["netns_exists"]
    routes = subprocess.run(
        ["ip", "-n", node_ns, "route", "show", "type", "blackhole"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert DEFAULT_POOL in routes
    pids = [s["pid"] for s in status["services"]]
    assert len(lab_namespaces(lab_dir)) == 2  # the node and the lab network
    cli("down")
    assert not lab_dir.exists()
    assert lab_namespaces(lab_dir) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert host_snapshot() == before


def test_two_pods_exchange_tcp_and_udp(lab: LabHandle) -> None:
    assert lab.cli("up", check=False).returncode == 2  # a second `up` refuses, harmlessly
    lab.cli("pod", "run", "x/a", "--labels", "app=a,tier=web", "--serve", "tcp:80,udp:80")
    lab.cli("pod", "run", "y/b", "--labels", "app=b", "--serve", "tcp:80,udp:80,tcp:8080")
    state = lab.state()
    pods = state["pods"]
    assert isinstance(pods, dict)
    pool = ipaddress.ip_network(DEFAULT_POOL)
    for key in ("x/a", "y/b"):
        assert ipaddress.ip_address(pods[key]["ips"][0]) in pool, pods[key]
    for proto in ("tcp", "udp"):
        for src, dst in (("x/a", "y/b"), ("y/b", "x/a")):
            result = lab.cli("probe", src, dst, "--port", "80", "--protocol", proto, check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "connected" in result.stdout
    assert lab.cli("probe", "x/a", "y/b", "--port", "8080", "--protocol", "tcp").returncode == 0
    # Nothing serves 81: exit status 1, not an error.
    closed = lab.cli("probe", "x/a", "y/b", "--port", "81", "--protocol", "tcp", check=False)
    assert closed.returncode == 1 and "refused" in closed.stdout  # RST: nothing listens
    matrix = lab.cli("matrix", "--port", "80", "--protocol", "tcp,udp").stdout
    assert "TCP/80" in matrix and "UDP/80" in matrix
    rows = [line.split() for line in matrix.splitlines() if line.startswith(("x/a", "y/b"))]
    assert rows == [["x/a", "-", "."], ["y/b", ".", "-"]] * 2
    status = lab.cli("status").stdout
    assert "x/a" in status and "app=a" in status
    lab.cli("pod", "label", "x/a", "tier-,role=db")
    lab.cli("ns", "label", "x", "team=blue")
    assert lab.state()["pods"]["x/a"]["labels"] == {"app": "a", "role": "db"}  # type: ignore[index]
    lab.cli("down")
    assert lab_namespaces(lab.state_dir) == []
    assert host_snapshot() == lab.host_before


def test_pod_rm_leaves_nothing_behind(lab: LabHandle) -> None:
    # A pod the datastore refuses (invalid name) leaves nothing recorded or created.
    bad = lab.cli("pod", "run", "x/Not_A_Name", check=False)
    assert bad.returncode == 2 and "calico-lab:" in bad.stderr
    assert lab.state()["pods"] == {}
    lab.cli("pod", "run", "x/a")
    assert lab.cli("pod", "run", "x/a", check=False).returncode == 2  # exists already
    lab.cli("pod", "run", "x/b")
    node_ns = _node_netns(lab)
    state = lab.state()
    pods = state["pods"]
    assert isinstance(pods, dict)
    ip_a, iface_a = pods["x/a"]["ips"][0], pods["x/a"]["host_interface"]
    pod_netns = pods["x/a"]["netns"]
    db = lab.state_dir / "calico.db"
    assert len(_keys(db, "/calico/ipam/v2/handle/")) == 2
    assert len(_keys(db, "/calico/resources/v3/projectcalico.org/workloadendpoints/")) == 2
    links = subprocess.run(
        ["ip", "-n", node_ns, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    assert iface_a and iface_a in links
    lab.cli("pod", "rm", "x/a")
    links = subprocess.run(
        ["ip", "-n", node_ns, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    routes = subprocess.run(
        ["ip", "-n", node_ns, "route"], capture_output=True, text=True, check=True
    ).stdout
    assert iface_a not in links
    assert ip_a not in routes
    assert not Path(f"/run/netns/{pod_netns}").exists()
    weps = _keys(db, "/calico/resources/v3/projectcalico.org/workloadendpoints/")
    assert len(weps) == 1, weps  # only x/b's
    handles = _keys(db, "/calico/ipam/v2/handle/")
    assert len(handles) == 1, handles  # only x/b's
    lab.cli("pod", "rm", "x/b")
    assert _keys(db, "/calico/ipam/v2/handle/") == []
    assert _keys(db, "/calico/resources/v3/projectcalico.org/workloadendpoints/") == []
    assert _keys(db, "/calico/resources/v3/core/pods/") == []
    links = subprocess.run(
        ["ip", "-n", node_ns, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    assert names == ["lo", "eth0"]  # the node's uplink only: no veth left


def test_demo_runs_and_cleans_up(needs_services: None, lab_dir: Path) -> None:
    before = host_snapshot()
    result = make_cli(lab_dir)("demo", check=False, timeout=150)
    out = result.stdout
    assert "Reachability without policy" in out and "Reachability with the policy" in out, (
        out + result.stderr
    )
    assert "lab removed" in out
    assert not lab_dir.exists()
    assert lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
    assert result.returncode == 0, out + result.stderr  # needs Felix's policy engine
