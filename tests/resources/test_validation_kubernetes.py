"""Kubernetes kinds: NetworkPolicy (as the API server checks it), Pod, Namespace, SA."""

from __future__ import annotations

from typing import Any

import pytest

from libcalico.resources.validation import validate
from tests.resources.builders import assert_invalid, k8s_np


def test_network_policy_defaults() -> None:
    out = validate(k8s_np({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}))
    assert out["apiVersion"] == "networking.k8s.io/v1"
    assert out["spec"]["policyTypes"] == ["Ingress"]
    assert out["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 80}]
    out = validate(k8s_np({"podSelector": {}, "egress": [{}]}))
    assert out["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_network_policy_full() -> None:
    spec = {
        "podSelector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "x/y", "operator": "DoesNotExist"},
            ],
        },
        "ingress": [
            {
                "from": [
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}},
                ],
                "ports": [
                    {"protocol": "UDP", "port": 53},
                    {"port": 8000, "endPort": 9000},
                    {"protocol": "SCTP", "port": "serve-80-sctp"},
                ],
            }
        ],
        "policyTypes": ["Ingress"],
    }
    out = validate(k8s_np(spec))
    assert out["spec"]["ingress"][0]["ports"][1] == {
        "protocol": "TCP",
        "port": 8000,
        "endPort": 9000,
    }


def _from(peer: Any) -> dict[str, Any]:
    return k8s_np({"podSelector": {}, "ingress": [{"from": [peer]}]})


def _ports(port: Any) -> dict[str, Any]:
    return k8s_np({"podSelector": {}, "egress": [{"ports": [port]}]})


BAD_K8S: list[tuple[str, dict[str, Any], str, str]] = [
    ("empty peer", _from({}), "spec.ingress[0].from[0]", "must specify a peer"),
    (
        "ipBlock with selector",
        _from({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        "spec.ingress[0].from[0].ipBlock",
        "may not be specified",
    ),
    (
        "except outside cidr",
        _from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    ),
    (
        "except equal to cidr",
        _from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    ),
    (
        "bad ipBlock cidr",
        _from({"ipBlock": {"cidr": "10.0.0/8"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        "ipBlock without cidr",
        _from({"ipBlock": {}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "required",
    ),
    (
        "bad operator",
        _from({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}}),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
        "not one of",
    ),
    (
        "In without values",
        _from({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
        "must be specified",
    ),
    (
        "Exists with values",
        _from(
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                }
            }
        ),
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
        "may not be specified",
    ),
    (
        "bad label key",
        _from({"podSelector": {"matchLabels": {"-bad": "x"}}}),
        "spec.ingress[0].from[0].podSelector.matchLabels.-bad",
        "name part",
    ),
    (
        "bad label value",
        _from({"podSelector": {"matchLabels": {"a": "has space"}}}),
        "spec.ingress[0].from[0].podSelector.matchLabels.a",
        "value",
    ),
    (
        "bad protocol",
        _ports({"protocol": "ICMP", "port": 80}),
        "spec.egress[0].ports[0].protocol",
        "not one of",
    ),
    ("port zero", _ports({"port": 0}), "spec.egress[0].ports[0].port", "between 1 and 65535"),
    (
        "numeric string port",
        _ports({"port": "80"}),
        "spec.egress[0].ports[0].port",
        "not a valid port name",
    ),
    (
        "endPort without port",
        _ports({"endPort": 90}),
        "spec.egress[0].ports[0].endPort",
        "numeric port",
    ),
    (
        "endPort with named port",
        _ports({"port": "http", "endPort": 90}),
        "spec.egress[0].ports[0].endPort",
        "numeric port",
    ),
    (
        "endPort below port",
        _ports({"port": 100, "endPort": 90}),
        "spec.egress[0].ports[0].endPort",
        "greater than or equal",
    ),
    (
        "bad policyType",
        k8s_np({"podSelector": {}, "policyTypes": ["Both"]}),
        "spec.policyTypes[0]",
        "not one of",
    ),
    (
        "duplicate policyType",
        k8s_np({"podSelector": {}, "policyTypes": ["Egress", "Egress"]}),
        "spec.policyTypes[1]",
        "duplicate",
    ),
    (
        "unknown rule field",
        k8s_np({"podSelector": {}, "ingress": [{"to": []}]}),
        "spec.ingress[0].to",
        "unknown field",
    ),
    (
        "missing namespace",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p"},
            "spec": {},
        },
        "metadata.namespace",
        "required",
    ),
]


@pytest.mark.parametrize(
    ("obj", "path", "message"),
    [(obj, path, message) for _, obj, path, message in BAD_K8S],
    ids=[case[0] for case in BAD_K8S],
)
def test_bad_kubernetes_policies_rejected_at_path(
    obj: dict[str, Any], path: str, message: str
) -> None:
    assert_invalid(obj, path, message)


def _pod(**extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x", "labels": {"pod": "a"}},
        **extra,
    }


def test_pod_keeps_every_field() -> None:
    pod = _pod(
        spec={
            "nodeName": "node1",
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "ports": [{"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"}],
                    "securityContext": {"privileged": False},
                }
            ],
            "someFutureField": {"x": 1},
        },
        status={"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}], "phase": "Running"},
    )
    out = validate(pod)
    assert out["spec"] == pod["spec"]
    assert out["status"] == pod["status"]


def test_pod_checks() -> None:
    assert_invalid(_pod(status={"podIP": "10.244.1"}), "status.podIP", "IP address")
    assert_invalid(
        _pod(spec={"containers": [{"ports": [{"name": "Serve_80", "containerPort": 80}]}]}),
        "spec.containers[0].ports[0].name",
        "port name",
    )
    assert_invalid(_pod(metadata={"name": "a"}), "metadata.namespace", "required")
    bad_labels = _pod()
    bad_labels["metadata"]["labels"] = {"pod": 1}
    assert_invalid(bad_labels, "metadata.labels.pod", "string")
    assert_invalid(_pod(extra=1), "extra", "unknown field")


def test_namespace_and_service_account() -> None:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "x", "labels": {"kubernetes.io/metadata.name": "x", "ns": "x"}},
    }
    assert validate(ns)["metadata"]["labels"]["ns"] == "x"
    assert_invalid({**ns, "metadata": {"name": "a.b"}}, "metadata.name", "lower case")
    assert_invalid(
        {**ns, "metadata": {"name": "x", "namespace": "y"}}, "metadata.namespace", "not namespaced"
    )
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": "x"},
        "automountServiceAccountToken": False,
    }
    assert validate(sa)["automountServiceAccountToken"] is False
    assert_invalid({**sa, "spec": {}}, "spec", "unknown field")


def test_namespace_always_carries_its_name_label() -> None:
    # As the API server: added when missing, forced back when a client writes another value.
    for labels in (None, {"team": "blue"}, {"kubernetes.io/metadata.name": "other"}):
        meta: dict[str, Any] = {"name": "shop"}
        if labels is not None:
            meta["labels"] = labels
        out = validate({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        assert out["metadata"]["labels"]["kubernetes.io/metadata.name"] == "shop"
        if labels and "team" in labels:
            assert out["metadata"]["labels"]["team"] == "blue"
