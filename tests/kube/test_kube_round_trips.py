"""calicoctl <-> kubectl round trips of every kind in libcalico/resources/kinds.py, with the
kubernetes datastore against a real API server: what `calicoctl apply` writes, kubectl shows
(`<plural>.crd.projectcalico.org` for Calico's custom resources; the Node's annotations, the
Pod's annotations, the Kubernetes objects themselves for the rest), and what kubectl writes,
`calicoctl get` shows.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab import objects
from lab.apiserver import ApiServer
from libcalico.resources.crds import crd_for_kind
from libcalico.resources.kinds import KindInfo, all_kinds
from tests.kube.kubekit import calicoctl, kubectl, kubectl_apply, kubectl_create, kubectl_json

NS = "rt"
# Calico custom-resource kinds: (name, spec written by calicoctl, spec written by kubectl).
CUSTOM_RESOURCES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "IPPool": ("pool-rt", {"cidr": "10.124.0.0/16"}, {"cidr": "10.125.0.0/16"}),
    "IPAMConfiguration": (
        "default",
        {"strictAffinity": False, "autoAllocateBlocks": True},
        {"strictAffinity": True, "autoAllocateBlocks": True},
    ),
    "HostEndpoint": (
        "hep-rt",
        {"node": "n1", "interfaceName": "eth0"},
        {"node": "n1", "interfaceName": "eth1"},
    ),
    "NetworkPolicy": (
        "np-rt",
        {"selector": "app == 'a'", "types": ["Ingress"]},
        {"selector": "app == 'b'", "types": ["Ingress"]},
    ),
    "GlobalNetworkPolicy": ("gnp-rt", {"selector": "all()"}, {"selector": "has(x)"}),
    "NetworkSet": ("netset-rt", {"nets": ["10.1.0.0/16"]}, {"nets": ["10.3.0.0/16"]}),
    "GlobalNetworkSet": ("gns-rt", {"nets": ["10.2.0.0/16"]}, {"nets": ["10.4.0.0/16"]}),
    "Profile": ("prof-rt", {"labelsToApply": {"a": "1"}}, {"labelsToApply": {"a": "2"}}),
    "FelixConfiguration": (
        "default",
        {"logSeverityScreen": "Info"},
        {"logSeverityScreen": "Debug"},
    ),
    "BGPConfiguration": ("default", {"asNumber": 64512}, {"asNumber": 64600}),
    "BGPPeer": (
        "peer-rt",
        {"peerIP": "10.0.0.1", "asNumber": 64513},
        {"peerIP": "10.0.0.2", "asNumber": 64514},
    ),
    "BGPFilter": (
        "filter-rt",
        {"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "10.0.0.0/8"}]},
        {"exportV4": [{"action": "Accept", "matchOperator": "In", "cidr": "10.0.0.0/8"}]},
    ),
    "KubeControllersConfiguration": (
        "default",
        {"logSeverityScreen": "Info", "healthChecks": "Enabled"},
        {"logSeverityScreen": "Debug", "healthChecks": "Disabled"},
    ),
    "ClusterInformation": (
        "default",
        {"clusterGUID": "guid-1", "datastoreReady": True},
        {"clusterGUID": "guid-2", "datastoreReady": True},
    ),
}
ALL_KINDS = list(all_kinds())


@pytest.fixture(scope="module")
def cluster(crds: ApiServer) -> ApiServer:
    """A namespace with its default ServiceAccount, two Nodes and two pods on n1."""
    kubectl(crds, "create", "namespace", NS)
    kubectl(crds, "create", "serviceaccount", "-n", NS, "default")
    kubectl_create(
        crds,
        *({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in ("n1", "n2")),
    )
    kubectl_create(
        crds,
        objects.pod(NS, "p1", "n1", {"app": "a"}, []),
        objects.pod(NS, "p2", "n1", {"app": "b"}, []),
    )
    return crds


def _doc(info: KindInfo, name: str, spec: dict[str, Any], api_version: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if info.namespaced:
        metadata["namespace"] = NS
    return {"apiVersion": api_version, "kind": info.kind, "metadata": metadata, "spec": spec}


def _ns_args(info: KindInfo) -> list[str]:
    return ["-n", NS] if info.namespaced else []


def _assert_has(spec: dict[str, Any], wanted: dict[str, Any], what: str) -> None:
    for field, value in wanted.items():
        assert spec.get(field) == value, f"{what}: spec.{field} is {spec.get(field)!r}"


def _custom_resource_round_trip(server: ApiServer, info: KindInfo) -> None:
    name, by_calicoctl, by_kubectl = CUSTOM_RESOURCES[info.kind]
    crd = crd_for_kind(info.kind)
    applied = calicoctl(
        server,
        "apply",
        "-f",
        "-",
        stdin=json.dumps(_doc(info, name, by_calicoctl, "projectcalico.org/v3")),
        check=False,
    )
    assert "Successfully applied" in applied, applied
    stored = kubectl_json(
        server, "get", f"{crd.plural}.crd.projectcalico.org", name, *_ns_args(info)
    )
    assert stored["apiVersion"] == "crd.projectcalico.org/v1"
    _assert_has(stored["spec"], by_calicoctl, f"kubectl get {crd.plural} {name}")
    # kubectl writes (the same name for the kinds that allow only `default`).
    other = name if name == "default" else f"{name}-k"
    kubectl_apply(
        server, {**_doc(info, other, by_kubectl, "crd.projectcalico.org/v1"), "kind": crd.kind}
    )
    shown = json.loads(calicoctl(server, "get", info.kind, other, *_ns_args(info), "-o", "json"))
    assert (shown["apiVersion"], shown["kind"]) == ("projectcalico.org/v3", info.kind)
    _assert_has(shown["spec"], by_kubectl, f"calicoctl get {info.kind} {other}")


def _node_round_trip(server: ApiServer) -> None:
    calicoctl(server, "apply", "-f", "-", stdin=json.dumps(objects.node("n1", "10.66.0.21/24")))
    annotations = kubectl_json(server, "get", "node", "n1")["metadata"]["annotations"]
    assert annotations["projectcalico.org/IPv4Address"] == "10.66.0.21/24"
    kubectl(server, "annotate", "node", "n2", "projectcalico.org/ASNumber=64999")
    shown = json.loads(calicoctl(server, "get", "node", "n2", "-o", "json"))
    assert shown["spec"]["bgp"]["asNumber"] == 64999


def _workload_endpoint_round_trip(server: ApiServer) -> None:
    wep = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "n1-k8s-p1-eth0", "namespace": NS},
        "spec": {
            "node": "n1",
            "pod": "p1",
            "endpoint": "eth0",
            "orchestrator": "k8s",
            "containerID": "abc123",
            "ipNetworks": ["10.65.0.21/32"],
        },
    }
    calicoctl(server, "apply", "-f", "-", stdin=json.dumps(wep))
    annotations = kubectl_json(server, "get", "pod", "-n", NS, "p1")["metadata"]["annotations"]
    assert annotations["cni.projectcalico.org/podIP"] == "10.65.0.21/32"
    assert annotations["cni.projectcalico.org/containerID"] == "abc123"
    kubectl(server, "annotate", "pod", "-n", NS, "p2", "cni.projectcalico.org/podIP=10.65.0.22/32")
    shown = json.loads(calicoctl(server, "get", "wep", "n1-k8s-p2-eth0", "-n", NS, "-o", "json"))
    assert shown["spec"]["ipNetworks"] == ["10.65.0.22/32"]
    assert shown["metadata"]["labels"]["app"] == "b"


def _kubernetes_kind_round_trip(server: ApiServer, info: KindInfo) -> None:
    docs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "Namespace": (
            objects.namespace("rt-ctl", {"a": "1"}),
            objects.namespace("rt-k", {"a": "2"}),
        ),
        "Pod": (
            objects.pod(NS, "pod-ctl", "n2", {"a": "1"}, []),
            objects.pod(NS, "pod-k", "n2", {"a": "2"}, []),
        ),
        "ServiceAccount": (
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "sa-ctl", "namespace": NS, "labels": {"a": "1"}},
            },
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "sa-k", "namespace": NS, "labels": {"a": "2"}},
            },
        ),
        "NetworkPolicy": (
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "knp-ctl", "namespace": NS, "labels": {"a": "1"}},
                "spec": {"podSelector": {}},
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "knp-k", "namespace": NS, "labels": {"a": "2"}},
                "spec": {"podSelector": {}},
            },
        ),
        "Service": (
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "svc-ctl", "namespace": NS, "labels": {"a": "1"}},
                "spec": {
                    "type": "LoadBalancer",
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
                # Written through the status subresource (the main write ignores it).
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.50"}]}},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "svc-k", "namespace": NS, "labels": {"a": "2"}},
                "spec": {"type": "NodePort", "ports": [{"port": 53, "protocol": "UDP"}]},
            },
        ),
        "EndpointSlice": (
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "eps-ctl", "namespace": NS, "labels": {"a": "1"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.65.0.5"], "nodeName": "n2"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "eps-k", "namespace": NS, "labels": {"a": "2"}},
                "addressType": "IPv4",
                "endpoints": [],
            },
        ),
    }
    by_calicoctl, by_kubectl = docs[info.kind]
    resource = f"{info.plural}.{info.group}" if info.group != "core" else info.plural
    calicoctl(server, "apply", "-f", "-", stdin=json.dumps(by_calicoctl))
    name = by_calicoctl["metadata"]["name"]
    shown = kubectl_json(server, "get", resource, name, *_ns_args(info))
    assert shown["metadata"]["labels"]["a"] == "1"
    kubectl_create(server, by_kubectl)
    name = by_kubectl["metadata"]["name"]
    got = json.loads(calicoctl(server, "get", resource, name, *_ns_args(info), "-o", "json"))
    assert (got["kind"], got["metadata"]["labels"]["a"]) == (info.kind, "2")
    if info.kind == "Service":
        assert shown["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.50"
        assert got["spec"]["ports"][0]["nodePort"]  # allocated by the server, valid for us


@pytest.mark.parametrize("info", ALL_KINDS, ids=[f"{k.kind}.{k.group}" for k in ALL_KINDS])
def test_calicoctl_and_kubectl_round_trip(cluster: ApiServer, info: KindInfo) -> None:
    if info.kind == "Node" and info.is_calico:
        _node_round_trip(cluster)
    elif info.kind == "WorkloadEndpoint":
        _workload_endpoint_round_trip(cluster)
    elif info.is_calico:
        _custom_resource_round_trip(cluster, info)
    else:
        _kubernetes_kind_round_trip(cluster, info)


def test_every_kind_has_a_round_trip() -> None:
    calico = {k.kind for k in ALL_KINDS if k.is_calico} - {"Node", "WorkloadEndpoint"}
    assert calico == set(CUSTOM_RESOURCES)
