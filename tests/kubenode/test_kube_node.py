"""The real node: up until Ready, a hostNetwork pod from the local busybox image runs, kubectl
exec and logs reach it through the kubelet, and `down` leaves the host as the snapshot taken
before `up` recorded it, with nothing of the node still running.

Order matters: the last test takes the node down and checks the host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.kubenode import hostsnap, images, layout, lifecycle, tools
from tests.kubenode.kubenodekit import (
    KubeNode,
    busybox_pod,
    ip_routes,
    node_processes,
    take_down,
    wait_running,
)

pytestmark = pytest.mark.timeout(2400)  # a cold build of the tools: 8-18 min on 2 cores
FIXTURES = Path(__file__).parent / "fixtures"


def calico_lab_kube(state_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.main", "kube", "--kube-state-dir", state_dir, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_node_is_ready_with_its_safety_routes(kube_node: KubeNode) -> None:
    nodes = kube_node.kubectl("get", "nodes", "-o", "wide")
    print(nodes)
    assert layout.NODE_NAME in nodes and " Ready " in nodes
    assert layout.NODE_ADDRESS in nodes  # InternalIP: the node's own link, not the uplink
    assert "containerd://2.4.2" in nodes
    routes = ip_routes()
    for cidr in layout.UNREACHABLE_RANGES:
        assert f"unreachable {cidr}" in routes, routes


def test_host_network_pod_runs_and_answers_exec_and_logs(kube_node: KubeNode) -> None:
    kube_node.apply(
        [busybox_pod("hostnet", host_network=True, command="echo started; exec sleep 3600")]
    )
    seconds = wait_running(kube_node, "default", "hostnet")
    print(f"hostNetwork pod create -> Ready {seconds:.2f} s")
    pod = kube_node.pod("default", "hostnet")
    assert pod["status"]["podIP"] == layout.NODE_ADDRESS
    assert kube_node.kubectl("logs", "hostnet").strip() == "started"
    # exec runs in the host's network namespace: it sees the node's link
    links = kube_node.kubectl("exec", "hostnet", "--", "ip", "-o", "addr", "show", layout.NODE_LINK)
    assert f"{layout.NODE_ADDRESS}/32" in links


def test_cli_status_and_kubectl(kube_node: KubeNode) -> None:
    state_dir = str(kube_node.state.directory)
    status = calico_lab_kube(state_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["ready"] is True
    assert data["api_server"] == f"https://{layout.NODE_ADDRESS}:{layout.APISERVER_PORT}"
    assert all(p["alive"] for p in data["processes"].values()), data
    nodes = calico_lab_kube(state_dir, "kubectl", "get", "nodes", "-o", "name")
    assert nodes.stdout.strip() == f"node/{layout.NODE_NAME}", nodes.stderr


def test_manifests_apply_as_a_user_would(kube_node: KubeNode) -> None:
    """A kustomization with a privileged hostNetwork DaemonSet (calico-node's shape) rolls
    out: the scheduler places it, the kubelet runs it."""
    started = time.monotonic()
    lifecycle.apply_manifests(kube_node.server, FIXTURES / "agent", say=print)
    kube_node.kubectl("rollout", "status", "-n", "kube-system", "ds/test-agent", "--timeout=90s")
    print(f"DaemonSet rolled out {time.monotonic() - started:.2f} s after apply")
    logs = kube_node.kubectl("logs", "-n", "kube-system", "ds/test-agent")
    assert logs.startswith("agent on "), logs


def test_an_image_from_podman_runs(kube_node: KubeNode, tmp_path: Path) -> None:
    """The path the project's images take (podman's store -> docker-archive -> containerd),
    with a small image this test makes and removes."""
    if shutil.which("podman") is None:
        print("SKIP: podman not installed")
        pytest.skip("podman not installed")
    ref = "localhost/calico-lab-test/podman-busybox:latest"
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tmp_path / "rootfs.tar"), "."], check=True)
    made = subprocess.run(
        ["podman", "import", "--change", 'CMD ["/bin/sh"]', str(tmp_path / "rootfs.tar"), ref],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    try:
        started = time.monotonic()
        archive = images.podman_save([ref], tmp_path / "podman.tar")
        names = images.import_archive(tools.find().ctr, archive)
        print(f"podman save + import {time.monotonic() - started:.2f} s")
        assert names == [ref]
    finally:
        subprocess.run(["podman", "rmi", ref], capture_output=True, check=False)
    pod = busybox_pod("frompodman", host_network=True, command="echo from podman; exec sleep 60")
    pod["spec"]["containers"][0]["image"] = ref
    kube_node.apply([pod])
    wait_running(kube_node, "default", "frompodman")
    assert kube_node.kubectl("logs", "frompodman").strip() == "from podman"


def test_down_restores_the_host(kube_node: KubeNode) -> None:
    report = take_down(kube_node)
    print(f"stopped: {', '.join(report.stopped)}")
    assert not report.problems, report.problems
    assert not report.differences, report.differences
    after = hostsnap.take(kube_node.before["ranges"])
    assert hostsnap.differences(kube_node.before, after) == []
    assert node_processes(kube_node) == []
    routes = ip_routes()
    assert "unreachable" not in routes or not any(c in routes for c in layout.UNREACHABLE_RANGES)
    assert not (kube_node.state.directory / "state.json").exists()
