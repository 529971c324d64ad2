"""No container of the install is privileged, and each names its capabilities.

Every container (init containers too) of every workload in k8s/ and in the k8s-etcd/ overlay
drops ALL capabilities and adds back only those in CAPABILITIES, which images/README.md and
k8s/README.md ("Privileges") justify; none mounts the host's whole /proc/sys (Felix gets the
net subtree only, where FELIX_PROCSYSNETPATH points). The module's API server runs with
`--allow-privileged=false` (conftest.py), so the server-side dry runs of the other tests prove
the install needs no privileged container; here it is shown refusing one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apiserver import ApiServer
from tests.k8s.k8skit import ETCD_OVERLAY_DIR, K8S_DIR, NAMESPACE, rendered

# (workload, container) -> the capabilities it adds; everything else is dropped.
CAPABILITIES: dict[tuple[str, str], set[str]] = {
    ("calico-node", "default-pool"): set(),
    ("calico-node", "install-cni"): set(),
    # Links, routes, nftables/iptables (NET_ADMIN); setns into pod namespaces (SYS_ADMIN).
    ("calico-node", "felix"): {"NET_ADMIN", "SYS_ADMIN"},
    ("calico-node", "ipamd"): set(),
    ("calico-node", "bgpd"): {"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"},
    ("calico-typha", "calico-typha"): set(),
    ("calico-kube-controllers", "calico-kube-controllers"): set(),
}
WORKLOAD_KINDS = ("DaemonSet", "Deployment", "StatefulSet", "Job", "CronJob", "Pod")


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return template.get("spec") if template else None


def _containers(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objects:
        spec = _pod_spec(obj)
        if obj.get("kind") not in WORKLOAD_KINDS or not spec:
            continue
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            found[(obj["metadata"]["name"], c["name"])] = {**c, "_pod": spec}
    return found


def _check_least_privilege(where: str, container: dict[str, Any]) -> None:
    sc = container.get("securityContext") or {}
    assert not sc.get("privileged"), f"{where}: privileged"
    caps = sc.get("capabilities") or {}
    assert caps.get("drop") == ["ALL"], f"{where}: must drop ALL, then add what it needs"
    added = set(caps.get("add") or [])
    assert added == CAPABILITIES[_key(where)], f"{where}: adds {sorted(added)}"
    pod = container["_pod"]
    assert not (pod.get("hostPID") or pod.get("hostIPC")), f"{where}: host PID/IPC namespace"
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        host = volumes[mount["name"]].get("hostPath", {}).get("path", "")
        # All of /proc/sys writable would expose the host's kernel.* and vm.* sysctls.
        assert host.rstrip("/") not in ("/proc", "/proc/sys", "/sys"), f"{where}: {host}"


def _key(where: str) -> tuple[str, str]:
    workload, container = where.split("/")
    return workload, container


def test_no_container_in_k8s_is_privileged(install: Path) -> None:
    containers = _containers(rendered(install))
    assert set(containers) == set(CAPABILITIES)
    for (workload, name), container in containers.items():
        _check_least_privilege(f"{workload}/{name}", container)


def test_felix_writes_sysctls_through_the_net_subtree_only(install: Path) -> None:
    felix = _containers(rendered(install))[("calico-node", "felix")]
    env = {e["name"]: e.get("value") for e in felix["env"]}
    volumes = {v["name"]: v for v in felix["_pod"]["volumes"]}
    mounts = {m["mountPath"]: m for m in felix["volumeMounts"]}
    where = env["FELIX_PROCSYSNETPATH"]
    assert where == "/host/proc/sys/net"
    assert not mounts[where].get("readOnly")
    host = volumes[mounts[where]["name"]]["hostPath"]
    assert host == {"path": "/proc/sys/net", "type": "Directory"}


def test_etcd_overlay_patches_grant_nothing() -> None:
    # The overlay's patches (k8s-etcd/*.yaml, strategic merges onto k8s/) add environment and
    # certificate mounts only: no securityContext of a container, no host path.
    patches = [
        doc
        for path in sorted(ETCD_OVERLAY_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") in WORKLOAD_KINDS
    ]
    assert patches, "no workload patch found in k8s-etcd/"
    for (workload, name), container in _containers(patches).items():
        assert "securityContext" not in container, f"k8s-etcd {workload}/{name}"
        for volume in container["_pod"].get("volumes", []):
            assert "hostPath" not in volume, f"k8s-etcd {workload}: {volume}"
    # The base files themselves: every container, not only the rendered ones.
    base = [
        doc
        for path in sorted(K8S_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert set(_containers(base)) == set(CAPABILITIES)


def test_the_api_server_refuses_privileged_and_admits_calico_node(
    kube_api: ApiServer, installed: Path
) -> None:
    # A calico-node pod through admission (its account exists once installed).
    node = next(o for o in rendered(installed) if o["kind"] == "DaemonSet")
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "calico-node-privileges", "namespace": NAMESPACE},
        "spec": node["spec"]["template"]["spec"],
    }
    admitted = kube_api.kubectl(["create", "--dry-run=server", "-f", "-"], input=json.dumps(pod))
    assert admitted.returncode == 0, admitted.stderr
    felix = next(c for c in pod["spec"]["containers"] if c["name"] == "felix")
    felix["securityContext"] = {"privileged": True}
    refused = kube_api.kubectl(["create", "--dry-run=server", "-f", "-"], input=json.dumps(pod))
    assert refused.returncode != 0
    assert "privileged" in refused.stderr, refused.stderr


@pytest.mark.parametrize("container", ["felix", "bgpd"])
def test_each_added_capability_is_explained_in_the_manifest(container: str) -> None:
    # A capability added without a comment saying why would be a silent grant: the comments
    # of the container's securityContext name each one it adds.
    text = (K8S_DIR / "calico-node.yaml").read_text()
    block = text.split(f"- name: {container}\n", 1)[1].split("capabilities:", 1)[0]
    block = block[block.index("securityContext:") :]
    for cap in CAPABILITIES[("calico-node", container)]:
        assert cap in block, f"calico-node/{container}: no comment explains {cap}"
