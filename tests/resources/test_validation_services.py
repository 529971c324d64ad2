"""Service and EndpointSlice validation: what passes, and each error naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from libcalico.resources.validation import validate
from tests.resources.builders import assert_invalid, with_field


def svc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "clusterIP": "10.96.0.10",
        "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {**base, **spec},
    }


def eps(**fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}],
        **fields,
    }


def test_valid_services_are_kept_as_written() -> None:
    full = svc(
        type="LoadBalancer",
        clusterIPs=["10.96.0.10", "fd00::10"],
        ipFamilies=["IPv4", "IPv6"],
        ipFamilyPolicy="RequireDualStack",
        externalIPs=["198.51.100.1"],
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}},
        externalTrafficPolicy="Local",
        internalTrafficPolicy="Cluster",
        healthCheckNodePort=31000,  # a field Felix does not read: kept, not refused
        selector={"app": "web"},
    )
    full["spec"]["ports"][0]["nodePort"] = 30000
    full["spec"]["ports"][1]["nodePort"] = 32767
    full["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb"}]}}
    out = validate(full)
    assert out["spec"] == full["spec"] and out["status"] == full["status"]
    assert validate(svc(clusterIP="None"))["spec"]["clusterIP"] == "None"
    assert validate(svc(ports=[{"port": 80}]))["spec"]["ports"] == [{"port": 80}]
    external = svc(type="ExternalName", externalName="db.example.com", clusterIP=None, ports=[])
    validate(external)


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        ("spec.ports.1.port", 0, "spec.ports[1].port", "between 1 and 65535"),
        ("spec.ports.1.port", 65536, "spec.ports[1].port", "between 1 and 65535"),
        ("spec.ports.1.protocol", "ICMP", "spec.ports[1].protocol", "TCP, UDP, SCTP"),
        ("spec.ports.1.protocol", "tcp", "spec.ports[1].protocol", "not one of"),
        ("spec.ports.0.targetPort", 0, "spec.ports[0].targetPort", "between"),
        ("spec.ports.0.targetPort", 70000, "spec.ports[0].targetPort", "between"),
        ("spec.ports.0.targetPort", "Http_1", "spec.ports[0].targetPort", "port name"),
        ("spec.ports.0.targetPort", "8080", "spec.ports[0].targetPort", "port name"),
        ("spec.ports.1.name", None, "spec.ports[1].name", "required"),
        ("spec.ports.1.name", "http", "spec.ports[1].name", "duplicate"),
        ("spec.ports.1", {"name": "x", "port": 53, "protocol": "UDP"}, None, None),
        ("spec.ports.1", {"name": "x", "port": 80}, "spec.ports[1]", "duplicate port 80/TCP"),
        ("spec.ports.0.nodePort", 30080, "spec.ports[0].nodePort", "type is ClusterIP"),
        ("spec.clusterIP", "10.96.0.300", "spec.clusterIP", "not a valid IP"),
        ("spec.clusterIPs", ["10.96.0.11"], "spec.clusterIPs[0]", "must equal"),
        ("spec.ipFamilies", ["IPv6"], "spec.clusterIP", "IP family IPv6"),
        ("spec.ipFamilies", ["IPv5"], "spec.ipFamilies[0]", "IPv4, IPv6"),
        ("spec.ipFamilyPolicy", "Dual", "spec.ipFamilyPolicy", "SingleStack"),
        ("spec.externalIPs", ["1.2.3"], "spec.externalIPs[0]", "not a valid IP"),
        ("spec.externalIPs", ["127.0.0.1"], "spec.externalIPs[0]", "may not be"),
        ("spec.sessionAffinity", "Cookie", "spec.sessionAffinity", "None, ClientIP"),
        ("spec.externalTrafficPolicy", "Nearest", "spec.externalTrafficPolicy", "Cluster"),
        ("spec.externalTrafficPolicy", "Local", "spec.externalTrafficPolicy", "externally-acc"),
        ("spec.internalTrafficPolicy", "local", "spec.internalTrafficPolicy", "Cluster"),
        ("spec.type", "Ingress", "spec.type", "ClusterIP"),
        ("spec.ports", [], "spec.ports", "at least one port"),
    ],
)
def test_service_errors_name_the_field(
    path: str, value: Any, field: str | None, message: str | None
) -> None:
    obj = with_field(svc(), path, value)
    if field is None:
        validate(obj)  # the same port number with another protocol is fine
        return
    assert_invalid(obj, field, message)


def test_node_port_range_and_affinity_timeout() -> None:
    node_port = svc(type="NodePort")
    for bad in (29999, 32768):
        obj = with_field(node_port, "spec.ports.0.nodePort", bad)
        assert_invalid(obj, "spec.ports[0].nodePort", "30000-32767")
    both = with_field(node_port, "spec.ports.0.nodePort", 30080)
    both = with_field(both, "spec.ports.1.nodePort", 30080)
    validate(both)  # TCP and UDP may share a node port
    both = with_field(both, "spec.ports.1.protocol", "TCP")
    assert_invalid(both, "spec.ports[1].nodePort", "duplicate node port")
    for bad in (0, 86401):
        obj = svc(
            sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": bad}}
        )
        assert_invalid(
            obj, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "between 1 and 86400"
        )
    config_without = svc(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10}})
    assert_invalid(config_without, "spec.sessionAffinityConfig.clientIP", "ClientIP")


def test_load_balancer_ingress_only_for_load_balancers() -> None:
    obj = svc()
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    assert_invalid(obj, "status.loadBalancer.ingress", "type is LoadBalancer, not ClusterIP")
    obj["status"] = {"loadBalancer": {}}
    validate(obj)  # what the API server gives every Service
    lb = svc(type="LoadBalancer")
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"ip": "x"}]}}
    assert_invalid(lb, "status.loadBalancer.ingress[1].ip", "not a valid IP")


def test_headless_and_names() -> None:
    assert_invalid(svc(clusterIP="None", type="NodePort"), "spec.clusterIP", "NodePort")
    assert_invalid(
        svc(clusterIPs=["10.96.0.10", "10.96.0.11"]), "spec.clusterIPs[1]", "other IP family"
    )
    bad_name = svc()
    bad_name["metadata"]["name"] = "1web"
    assert_invalid(bad_name, "metadata.name", "starting with a letter")


def test_valid_endpoint_slice() -> None:
    out = validate(eps())
    assert out["addressType"] == "IPv4" and out["endpoints"][0]["addresses"] == ["10.244.0.5"]
    validate(eps(addressType="IPv6", endpoints=[{"addresses": ["fd00::5"]}]))
    assert validate(eps(endpoints=None))["endpoints"] == []


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"addressType": None}, "addressType", "required"),
        ({"addressType": "IPv5"}, "addressType", "IPv4, IPv6, FQDN"),
        ({"endpoints": [{"addresses": []}]}, "endpoints[0].addresses", "between 1 and 100"),
        ({"endpoints": [{}]}, "endpoints[0].addresses", "required"),
        ({"endpoints": [{"addresses": ["fd00::1"]}]}, "endpoints[0].addresses[0]", "IPv4"),
        (
            {"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]},
            "endpoints[0].conditions.ready",
            "true or false",
        ),
        ({"ports": [{"port": 0}]}, "ports[0].port", "between 1 and 65535"),
        ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "ports[0].protocol", "TCP"),
        ({"ports": [{"port": 80}, {"port": 81}]}, "ports[1]", "duplicate"),
        ({"spec": {}}, "spec", "unknown field"),
    ],
)
def test_endpoint_slice_errors_name_the_field(
    fields: dict[str, Any], field: str, message: str
) -> None:
    assert_invalid(eps(**fields), field, message)
