"""cnitool (libcni's own test client, from the Go module proxy) drives the `calico` plugin:
ADD, CHECK and DEL of a pod namespace against the real calico-ipamd and calico-felix running in
a node namespace; then GC (the plugin exec'd as libcni does) collects a leaked allocation."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni_client import install
from cni_client.cni.jsonio import dumps
from cni_client.ipam_client import IpamClient
from tests.cni_runtimes.confine import missing_tools, with_private_var_lib
from tests.cni_runtimes.node import (
    NETNS_DIR,
    CalicoNode,
    calico_node,
    in_netns,
    missing_prerequisite,
    run,
)

REPO = Path(__file__).resolve().parents[2]
CNITOOL = REPO / ".venv" / "bin" / "cnitool"
HANDLE_PREFIX = "k8s-pod-network."


def _skip_reason() -> str:
    if not CNITOOL.exists():
        return f"cnitool not installed at {CNITOOL} (scripts/setup.sh installs it)"
    return missing_prerequisite() or missing_tools()


pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason())]


@pytest.fixture
def node() -> Iterator[CalicoNode]:
    with calico_node() as n:
        yield n


def cnitool(
    node: CalicoNode, command: str, netns: str, network: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_PATH": str(node.bin_dir),
        "NETCONFPATH": str(node.conf_dir),
        "CNI_IFNAME": "eth0",
    }
    argv = [str(CNITOOL), command, network or node.network, str(NETNS_DIR / netns)]
    return subprocess.run(
        with_private_var_lib(node.work / "var-lib", argv),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cnitool_container_id(netns: str) -> str:
    # cnitool names the attachment after the netns path: "cnitool-" + 10 bytes of SHA-512.
    return "cnitool-" + hashlib.sha512(str(NETNS_DIR / netns).encode()).hexdigest()[:20]


def handles(node: CalicoNode) -> dict[str, list[str]]:
    with IpamClient(node.ipam_socket) as client:
        return dict(client.list_handles(HANDLE_PREFIX))


def test_cnitool_add_check_del(node: CalicoNode) -> None:
    pod = node.add_pod_netns("pod")
    status = cnitool(node, "status", pod)
    assert status.returncode == 0, status.stdout + status.stderr

    added = cnitool(node, "add", pod)
    assert added.returncode == 0, added.stdout + added.stderr + node.logs()
    result = json.loads(added.stdout)
    (ip,) = result["ips"]
    address = ip["address"].split("/")[0]
    assert address.startswith("10.231.0."), result
    host, pod_if = result["interfaces"]
    assert host["name"].startswith("cali") and pod_if["name"] == "eth0"
    assert pod_if["sandbox"] == str(NETNS_DIR / pod)
    assert node.host_veths() == [host["name"]]
    in_pod = run(*in_netns(pod, "ip", "-o", "addr", "show", "eth0")).stdout
    assert f"{address}/32" in in_pod
    held = handles(node)
    assert [a.split("/")[0] for a in held[HANDLE_PREFIX + cnitool_container_id(pod)]] == [address]

    checked = cnitool(node, "check", pod)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    deleted = cnitool(node, "del", pod)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert node.host_veths() == []
    assert handles(node) == {}
    assert "eth0" not in run(*in_netns(pod, "ip", "-o", "link", "show")).stdout
    # DEL again (the runtime may retry): still success.
    again = cnitool(node, "del", pod)
    assert again.returncode == 0, again.stdout + again.stderr


def test_gc_collects_allocation_without_endpoint(node: CalicoNode, tmp_path: Path) -> None:
    """An ADD that died between calico-ipamd and calico-felix leaves an address with no
    endpoint; GC releases it because the runtime does not list its attachment."""
    pod = node.add_pod_netns("kept")
    added = cnitool(node, "add", pod)
    assert added.returncode == 0, added.stdout + added.stderr + node.logs()
    kept = HANDLE_PREFIX + cnitool_container_id(pod)
    with IpamClient(node.ipam_socket) as client:
        client.auto_assign(HANDLE_PREFIX + "leaked", 1, 0, {"node": node.name}, [], [])
        client.auto_assign("other-net.leaked", 1, 0, {"node": node.name}, [], [])
    assert set(handles(node)) == {kept, HANDLE_PREFIX + "leaked"}

    (plugin,) = install.install(tmp_path / "bin", ("calico",))
    conf = {
        **node.conflist()["plugins"][0],  # type: ignore[index]
        "name": node.network,
        "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": cnitool_container_id(pod), "ifname": "eth0"}],
    }
    env = {"CNI_COMMAND": "GC", "CNI_PATH": str(plugin.parent)}
    gc = subprocess.run([str(plugin)], input=dumps(conf), env=env, capture_output=True, text=True)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert set(handles(node)) == {kept}
    assert len(node.host_veths()) == 1
    with IpamClient(node.ipam_socket) as client:
        assert client.get_allocations("other-net.leaked"), "another network's handle stays"
        client.release_by_handle("other-net.leaked")
    deleted = cnitool(node, "del", pod)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert handles(node) == {} and node.host_veths() == []


def test_cleanup_leaves_nothing_behind() -> None:
    """The node fixture removes its namespaces and processes."""
    with calico_node() as node:
        names = [node.netns, node.add_pod_netns("x")]
        pids = [p.popen.pid for p in node.processes]
        work = node.work
    listed = run("ip", "netns", "list").stdout
    assert not [n for n in names if n in listed]
    assert not work.exists()
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_check_fails_after_the_pod_route_is_deleted_by_hand(node: CalicoNode) -> None:
    """Issue 4: CHECK passes on a healthy pod and fails, naming the route, once the pod's
    default route is gone; DEL still cleans up."""
    pod = node.add_pod_netns("pod")
    added = cnitool(node, "add", pod)
    assert added.returncode == 0, added.stdout + added.stderr + node.logs()
    checked = cnitool(node, "check", pod)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    routes = run(*in_netns(pod, "ip", "-4", "route", "show", "default")).stdout
    assert "default via 169.254.1.1 dev eth0" in routes, routes
    run(*in_netns(pod, "ip", "-4", "route", "del", "default"))

    broken = cnitool(node, "check", pod)
    assert broken.returncode != 0, broken.stdout
    # cnitool prints the plugin's error message (code 102 with Felix's problem line).
    text = broken.stdout + broken.stderr
    assert "endpoint differs from prevResult" in text, text
    assert "pod route 0.0.0.0/0 via 169.254.1.1 dev eth0 missing" in text, text

    deleted = cnitool(node, "del", pod)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert node.host_veths() == []
    assert handles(node) == {}
    assert "eth0" not in run(*in_netns(pod, "ip", "-o", "link", "show")).stdout


def veth_mtus(node: CalicoNode, pod: str, host_veth: str) -> tuple[int, int]:
    """(host end, pod end) MTUs as the kernel has them."""
    (host,) = json.loads(run(*in_netns(node.netns, "ip", "-j", "link", "show", host_veth)).stdout)
    (inside,) = json.loads(run(*in_netns(pod, "ip", "-j", "link", "show", "eth0")).stdout)
    return host["mtu"], inside["mtu"]


def test_result_reports_the_veth_mtu() -> None:
    """Issue 11: a 1.1.0 result's interfaces carry the MTU both veth ends really have: Felix's
    (here the uplink's 1450, no overlay) or the netconf's `mtu`; a 1.0.0 result has no `mtu`."""
    with calico_node(uplink_mtu=1450) as node:
        explicit = node.add_network("mtu", mtu=1300)
        old = node.add_network("v100", cni_version="1.0.0")
        cases = [(node.network, "felix", 1450, True), (explicit, "conf", 1300, True)]
        cases.append((old, "old", 1450, False))
        for network, role, want, reported in cases:
            pod = node.add_pod_netns(role)
            added = cnitool(node, "add", pod, network)
            assert added.returncode == 0, added.stdout + added.stderr + node.logs()
            result = json.loads(added.stdout)
            host, pod_if = result["interfaces"]
            assert veth_mtus(node, pod, host["name"]) == (want, want), role
            if reported:
                assert (host["mtu"], pod_if["mtu"]) == (want, want), result
            else:
                assert result["cniVersion"] == "1.0.0"
                assert "mtu" not in host and "mtu" not in pod_if, result
            checked = cnitool(node, "check", pod, network)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            deleted = cnitool(node, "del", pod, network)
            assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        assert node.host_veths() == [] and handles(node) == {}
