"""The kubelet: its configuration for this host, starting it, waiting for the node's Ready.

What the configuration carries and why (KUBELET.md): `failCgroupV1: false` (this host is
cgroup v1; the kubelet refuses it by default since 1.35), the cgroupfs driver (no systemd),
no swap check, x509 client authentication against the node's CA (the API server's exec/logs
certificate) plus webhook token authentication and authorization, no read-only port, eviction
thresholds low enough for a small disk, and image GC off (the images here cannot be pulled
again). Its server listens on the node's address only; healthz on loopback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from lab.apiserver import ApiServer
from lab.kubenode import layout
from lab.kubenode.control_plane import KUBELET_USER, Pki
from lab.kubenode.tools import Tools
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached

READY_TIMEOUT = 120.0
HEALTHZ_PORT = 10248


class KubeletError(RuntimeError):
    pass


def config(pki: Pki) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{layout.CONTAINERD_SOCKET}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "address": layout.NODE_ADDRESS,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
    }


def start(tools: Tools, server: ApiServer, pki: Pki, work: Path) -> ProcessRecord:
    conf = work / "kubelet.yaml"
    conf.write_text(yaml.safe_dump(config(pki), sort_keys=False))
    kubeconfig = server.write_kubeconfig(work / "kubelet.kubeconfig", KUBELET_USER)
    argv = [
        "nice", "-n", "10", tools.kubelet,
        f"--config={conf}",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={layout.NODE_NAME}",
        f"--node-ip={layout.NODE_ADDRESS}",
        f"--root-dir={layout.KUBELET_ROOT}",
        "--v=2",
    ]  # fmt: skip
    return start_detached("kubelet", argv, work / "kubelet.log")


def ready(server: ApiServer) -> bool:
    proc = server.kubectl(["get", "node", layout.NODE_NAME, "-o", "json"], timeout=10)
    if proc.returncode != 0:
        return False
    conditions = json.loads(proc.stdout).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def wait_ready(server: ApiServer, record: ProcessRecord, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(server):
            return
        if not is_alive(record):
            raise KubeletError(f"kubelet exited while starting:\n{log_tail(record.log, 4000)}")
        time.sleep(0.3)
    raise KubeletError(
        f"node {layout.NODE_NAME} not Ready after {timeout:.0f} s:\n{log_tail(record.log, 4000)}"
    )
