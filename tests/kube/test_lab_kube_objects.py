"""What the lab does in place of a kubelet and a controller-manager (lab/kubeobjects.py), and
the rights of its daemon users (lab/rbac.py), against the real API server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import kubeobjects, objects, rbac
from lab.apiserver import ApiServer, install_calico_crds
from lab.kubeapi import apply_manifests
from lab.kubeobjects import KubeObjects


@pytest.fixture(scope="module")
def kubeconfig(kube_api: ApiServer) -> str:
    return str(kube_api.kubeconfig)


def _get(kube_api: ApiServer, *args: str) -> dict[str, Any]:
    proc = kube_api.kubectl(["get", *args, "-o", "json"])
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_namespace_gets_its_default_service_account_and_pods_run(
    kube_api: ApiServer, kubeconfig: str
) -> None:
    async def scenario() -> None:
        async with KubeObjects(kubeconfig) as kube:
            await kube.apply(objects.namespace("lab-x", {"ns": "x"}))
            pod = objects.pod("lab-x", "a", "node-1", {"pod": "a"}, [("tcp", 80)])
            await kube.apply(pod)  # refused without the default ServiceAccount
            await kube.set_pod_running("lab-x", "a", ["10.65.0.7"], "10.66.0.11")
            # Applying again replaces the labels only (a pod's spec is immutable).
            await kube.apply(objects.pod("lab-x", "a", "node-1", {"pod": "b"}, [("tcp", 80)]))

    asyncio.run(scenario())
    sa = _get(kube_api, "serviceaccount", "default", "-n", "lab-x")
    assert sa["metadata"]["name"] == "default"
    pod = _get(kube_api, "pod", "a", "-n", "lab-x")
    assert pod["spec"]["nodeName"] == "node-1"
    assert pod["metadata"]["labels"] == {"pod": "b"}
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"] == "10.65.0.7"
    assert pod["status"]["podIPs"] == [{"ip": "10.65.0.7"}]
    assert pod["status"]["hostIP"] == "10.66.0.11"
    ports = pod["spec"]["containers"][0]["ports"]
    assert ports == [{"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"}]


def test_deleting_a_namespace_frees_its_name_at_once(kube_api: ApiServer, kubeconfig: str) -> None:
    """No namespace controller runs: the lab empties and finalizes it itself."""
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "lab-y"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }

    async def scenario() -> tuple[bool, bool, bool]:
        async with KubeObjects(kubeconfig) as kube:
            await kube.apply(objects.namespace("lab-y", {"ns": "y"}))
            await kube.apply(objects.pod("lab-y", "a", "node-1", {}, [("udp", 81)]))
            await kube.apply(policy)
            first = await kube.delete(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab-y"}}
            )
            again = await kube.delete(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab-y"}}
            )
            # The same name again, empty: nothing of the old one survived.
            await kube.apply(objects.namespace("lab-y", {"ns": "y2"}))
            leftover = await kube.get(policy)
            return first, again, leftover is None

    first, again, empty = asyncio.run(scenario())
    assert (first, again, empty) == (True, False, True)
    ns = _get(kube_api, "namespace", "lab-y")
    assert ns["metadata"]["labels"]["ns"] == "y2"
    assert ns["status"]["phase"] == "Active"
    assert _get(kube_api, "pods", "-n", "lab-y")["items"] == []


def test_pod_delete_is_immediate_and_labels_are_compare_and_swapped(
    kube_api: ApiServer, kubeconfig: str
) -> None:
    ref = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "lab-z"}}

    async def scenario() -> tuple[dict[str, str], bool, bool]:
        async with KubeObjects(kubeconfig) as kube:
            await kube.apply(objects.namespace("lab-z"))
            await kube.apply(objects.pod("lab-z", "p", "node-2", {"a": "1"}, [("tcp", 80)]))
            await kube.set_labels(ref, {"b": "2"})
            labels = await kube.labels(ref)
            deleted = await kube.delete(ref)
            gone = await kube.get(ref) is None  # no kubelet to confirm a graceful delete
            return labels, deleted, gone

    assert asyncio.run(scenario()) == ({"b": "2"}, True, True)


def test_nodes_are_registered_with_addresses(kube_api: ApiServer, kubeconfig: str) -> None:
    async def scenario() -> None:
        async with KubeObjects(kubeconfig) as kube:
            await kube.apply(
                kubeobjects.node("lab-node-7", "10.66.0.17", {"route-reflector": "true"})
            )
            await kube.set_node_status("lab-node-7", "10.66.0.17")

    asyncio.run(scenario())
    node = _get(kube_api, "node", "lab-node-7")
    assert node["metadata"]["labels"]["route-reflector"] == "true"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "lab-node-7"
    assert {"type": "InternalIP", "address": "10.66.0.17"} in node["status"]["addresses"]
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"


def test_unknown_kind_is_refused_naming_it() -> None:
    with pytest.raises(kubeobjects.KubeObjectError, match="apps/v1 Deployment"):
        kubeobjects.path("apps/v1", "Deployment", "x", "d")
    with pytest.raises(kubeobjects.KubeObjectError, match=r"metadata\.namespace"):
        kubeobjects.path("v1", "Pod", "", "p")


def _can(kube_api: ApiServer, user: str, verb: str, resource: str, *extra: str) -> bool:
    proc = kube_api.kubectl(["auth", "can-i", verb, resource, f"--as={user}", *extra])
    return proc.stdout.strip() == "yes"


def test_daemon_users_have_calico_node_rights_not_more(kube_api: ApiServer, tmp_path: Path) -> None:
    install_calico_crds(kube_api)  # can-i answers "no" for a resource the server lacks
    apply_manifests(kube_api, rbac.manifests())
    node = rbac.NODE_USER
    for verb, resource in [
        ("watch", "pods"),
        ("list", "namespaces"),
        ("list", "serviceaccounts"),
        ("watch", "networkpolicies.networking.k8s.io"),
        ("update", "nodes"),
        ("patch", "pods"),
        ("create", "ipamblocks.crd.projectcalico.org"),
        ("update", "blockaffinities.crd.projectcalico.org"),
        ("watch", "felixconfigurations.crd.projectcalico.org"),
    ]:
        assert _can(kube_api, node, verb, resource, "-A"), (verb, resource)
    for verb, resource in [
        ("create", "pods"),
        ("delete", "namespaces"),
        ("create", "nodes"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("get", "secrets"),
    ]:
        assert not _can(kube_api, node, verb, resource, "-A"), (verb, resource)
    controllers = rbac.CONTROLLERS_USER
    assert _can(kube_api, controllers, "update", "leases.coordination.k8s.io", "-n", "kube-system")
    assert _can(kube_api, controllers, "delete", "ipamhandles.crd.projectcalico.org", "-A")
    assert not _can(kube_api, controllers, "delete", "pods", "-A")
    # The manifests are plain YAML kubectl accepts as they are.
    path = tmp_path / "rbac.yaml"
    path.write_text(yaml.safe_dump_all(rbac.manifests()))
    assert kube_api.kubectl(["apply", "--dry-run=server", "-f", str(path)]).returncode == 0
