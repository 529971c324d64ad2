"""Helpers for tests of the real node: bringing it up with timings, kubectl, pods, checks."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apiserver import ApiServer
from lab.kubenode import hostroutes, layout, lifecycle, tools
from lab.kubenode.lifecycle import DownReport
from lab.kubenode.state import KubeState
from lab.processes import is_alive

NO_BUILD_ENV = "CALICO_KUBE_NO_BUILD"
OTHER_NODE_WAIT = 600.0


@dataclass
class KubeNode:
    state: KubeState
    server: ApiServer
    before: dict[str, Any]  # hostsnap of the host before up
    down: DownReport | None = None

    def kubectl(self, *args: str, timeout: float = 120) -> str:
        proc = self.server.kubectl(list(args), timeout=timeout)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def apply(self, docs: list[dict[str, Any]]) -> None:
        proc = self.server.kubectl(["apply", "-f", "-"], input=yaml.safe_dump_all(docs), timeout=60)
        assert proc.returncode == 0, proc.stderr

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            self.kubectl("get", "pod", "-n", namespace, name, "-o", "json")
        )
        return data


def bring_up(directory: Path) -> KubeNode:
    lacking = tools.missing()
    if lacking and os.environ.get(NO_BUILD_ENV):
        reason = (
            f"{NO_BUILD_ENV} is set and the node's tools are not built "
            f"(cold build ~8 min): {'; '.join(lacking)}"
        )
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    wait_for_other_node()
    # kubectl's caches go with the state directory, not into ~/.kube/cache.
    os.environ["KUBECACHEDIR"] = str(directory / "kubectl-cache")
    started = time.monotonic()
    build_seconds = tools.build()
    print(f"tools: {'built' if lacking else 'cached'} in {build_seconds:.1f} s")
    state = lifecycle.up(directory, lifecycle.UpOptions(build=False), say=print)
    server = lifecycle.server_of(state)
    assert server is not None
    before = state.snapshot()
    assert before is not None
    print(
        f"up to Ready {state.timings['up_to_ready']:.1f} s "
        f"(whole up with build check {time.monotonic() - started:.1f} s)"
    )
    return KubeNode(state, server, before)


def wait_for_other_node(timeout: float = OTHER_NODE_WAIT) -> None:
    """One node per host (its link, /var/lib/kubelet, containerd's socket, port 6443 are
    fixed): while another run's node is up, wait for its `down` rather than fail."""
    deadline = time.monotonic() + timeout
    if hostroutes.link_exists(layout.NODE_LINK):
        print(f"another node is up ({layout.NODE_LINK} exists): waiting up to {timeout:.0f} s")
    while hostroutes.link_exists(layout.NODE_LINK) and time.monotonic() < deadline:
        time.sleep(1)


def take_down(node: KubeNode) -> DownReport:
    if node.down is None:
        node.down = lifecycle.down(node.state.directory, say=print)
    return node.down


def busybox_pod(
    name: str, namespace: str = "default", host_network: bool = False, command: str = ""
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "hostNetwork": host_network,
            "terminationGracePeriodSeconds": 1,  # busybox as PID 1 ignores SIGTERM
            "containers": [
                {
                    "name": "main",
                    "image": layout.BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", command or "exec sleep 3600"],
                }
            ],
        },
    }


def wait_running(node: KubeNode, namespace: str, name: str, timeout: float = 60) -> float:
    """Seconds until the pod is Ready."""
    started = time.monotonic()
    node.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", f"pod/{name}",
        f"--timeout={timeout:.0f}s", timeout=timeout + 30,
    )  # fmt: skip
    return time.monotonic() - started


def node_processes(node: KubeNode) -> list[str]:
    """Processes still running whose executable is one of the node's binaries."""
    found = tools.find()
    binaries = {
        found.kubelet,
        found.kube_controller_manager,
        found.kube_scheduler,
        found.containerd,
        str(Path(found.containerd_bin_dir) / "containerd-shim-runc-v2"),
    }
    running = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exe = os.readlink(f"/proc/{entry}/exe")
            except OSError:
                continue
            if exe in binaries:
                running.append(f"{entry} {exe}")
    running += [f"{r.pid} {r.name}" for r in node.state.processes.values() if is_alive(r)]
    return running


def ip_routes() -> str:
    return subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
