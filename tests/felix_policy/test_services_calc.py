"""Services and EndpointSlices -> ServicePorts: the index's rules (kube-proxy's) and its deltas,
and the calc graph feeding it (plus the pool CIDRs). Pure: no kernel, no datastore."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import pytest

from libcalico.resources.validation import ValidationError
from libcalico.syncer.api import Delete, InSync, Update
from services.felix.calc import CalcGraph
from services.felix.calc.model import DataplaneState, ServiceBackend, StateDelta
from services.felix.calc.services import ServiceIndex
from services.felix.policy.engine import PolicyEngine
from tests.felix_policy.memsyncer import MemorySyncer

NODE = "node-1"
TCP, UDP, SCTP = 6, 17, 132


def service(
    name: str = "web",
    ns: str = "default",
    ports: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": "10.96.0.10",
            "ports": ports if ports is not None else [{"port": 80, "targetPort": 8080}],
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return body


def endpoint(
    address: str, node: str = "node-2", ready: bool | None = None, **conditions: bool
) -> dict[str, Any]:
    conds = dict(conditions)
    if ready is not None:
        conds["ready"] = ready
    out: dict[str, Any] = {"addresses": [address], "nodeName": node}
    if conds:
        out["conditions"] = conds
    return out


def endpoint_slice(
    endpoints: list[dict[str, Any]],
    svc: str = "web",
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
    name: str = "web-abc",
    ns: str = "default",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"port": 8080, "protocol": "TCP"}],
    }


@pytest.fixture
def index() -> ServiceIndex:
    return ServiceIndex(NODE)


def only(index: ServiceIndex):  # type: ignore[no-untyped-def]
    assert len(index.ports) == 1, index.ports
    return next(iter(index.ports.values()))


# -- the Service alone -----------------------------------------------------------------------


def test_cluster_ip_port_defaults(index: ServiceIndex) -> None:
    changed = index.update_service("default", "web", service())
    sp = index.ports["default/web//6"]
    assert changed == {"default/web//6"}
    assert (sp.namespace, sp.service, sp.port_name, sp.protocol, sp.port) == (
        "default",
        "web",
        "",
        TCP,
        80,
    )
    assert sp.cluster_ips == ("10.96.0.10",)
    assert sp.node_port is None and sp.external_ips == () and sp.affinity_timeout_s is None
    assert not sp.internal_local and not sp.external_local
    assert sp.backends == ()  # no endpoints: the dataplane rejects


def test_ipv4_only_and_headless(index: ServiceIndex) -> None:
    dual = service(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10", "fd00::10"])
    index.update_service("default", "web", dual)
    assert only(index).cluster_ips == ("10.96.0.10",)
    v6 = service(clusterIP="fd00::10", clusterIPs=["fd00::10"], ipFamilies=["IPv6"])
    assert index.update_service("default", "web", v6) == {"default/web//6"}
    assert index.ports == {}
    index.update_service("default", "web", service())
    assert index.update_service("default", "web", service(clusterIP="None")) == {"default/web//6"}
    assert index.ports == {}
    index.update_service(
        "default",
        "ext",
        service("ext", type="ExternalName", clusterIP=None, externalName="example.com"),
    )
    assert index.ports == {}


def test_several_ports_and_protocols(index: ServiceIndex) -> None:
    ports = [
        {"name": "http", "port": 80},
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "sctp", "port": 9, "protocol": "SCTP"},
    ]
    index.update_service("default", "web", service(ports=ports))
    assert set(index.ports) == {
        "default/web/http/6",
        "default/web/dns/17",
        "default/web/dns-tcp/6",
        "default/web/sctp/132",
    }


def test_node_port_only_for_node_port_and_load_balancer(index: ServiceIndex) -> None:
    ports = [{"port": 80, "nodePort": 30080}]
    index.update_service("default", "web", service(ports=ports, type="NodePort"))
    assert only(index).node_port == 30080
    index.update_service("default", "web", service(ports=ports, type="LoadBalancer"))
    assert only(index).node_port == 30080


def test_external_ips_and_load_balancer_ingress(index: ServiceIndex) -> None:
    status = {
        "loadBalancer": {
            "ingress": [
                {"ip": "192.0.2.7"},
                {"hostname": "lb.example.com"},
                {"ip": "2001:db8::1"},
                {"ip": "192.0.2.9", "ipMode": "Proxy"},
            ]
        }
    }
    svc = service(
        type="LoadBalancer",
        ports=[{"port": 80, "nodePort": 30080}],
        externalIPs=["198.51.100.1", "2001:db8::2"],
        status=status,
    )
    index.update_service("default", "web", svc)
    assert only(index).external_ips == ("198.51.100.1", "192.0.2.7")


def test_session_affinity(index: ServiceIndex) -> None:
    index.update_service("default", "web", service(sessionAffinity="ClientIP"))
    assert only(index).affinity_timeout_s == 10800
    config = {"clientIP": {"timeoutSeconds": 30}}
    index.update_service(
        "default", "web", service(sessionAffinity="ClientIP", sessionAffinityConfig=config)
    )
    assert only(index).affinity_timeout_s == 30
    index.update_service("default", "web", service(sessionAffinity="None"))
    assert only(index).affinity_timeout_s is None


def test_traffic_policies(index: ServiceIndex) -> None:
    index.update_service("default", "web", service(internalTrafficPolicy="Local"))
    assert only(index).internal_local
    # externalTrafficPolicy counts only where outside traffic can arrive (validation refuses
    # it elsewhere, as the API server does).
    with pytest.raises(ValidationError):
        index.update_service("default", "web", service(externalTrafficPolicy="Local"))
    ports = [{"port": 80, "nodePort": 30080}]
    index.update_service(
        "default", "web", service(ports=ports, type="NodePort", externalTrafficPolicy="Local")
    )
    assert only(index).external_local
    index.update_service(
        "default",
        "web",
        service(externalIPs=["198.51.100.1"], externalTrafficPolicy="Local"),
    )
    assert only(index).external_local


# -- endpoints -------------------------------------------------------------------------------


def test_endpoints_ready_local_sorted(index: ServiceIndex) -> None:
    index.update_service("default", "web", service())
    changed = index.update_slice(
        "default",
        "web-abc",
        endpoint_slice(
            [
                endpoint("10.0.0.12", node=NODE),
                endpoint("10.0.0.9"),
                endpoint("10.0.0.11", ready=False),
            ]
        ),
    )
    assert changed == {"default/web//6"}
    assert only(index).backends == (
        ServiceBackend("10.0.0.9", 8080, False),
        ServiceBackend("10.0.0.12", 8080, True),
    )


def test_slice_before_service(index: ServiceIndex) -> None:
    assert index.update_slice("default", "web-abc", endpoint_slice([endpoint("10.0.0.9")])) == set()
    index.update_service("default", "web", service())
    assert only(index).backends == (ServiceBackend("10.0.0.9", 8080, False),)


def test_conditions_defaults_and_terminating_fallback(index: ServiceIndex) -> None:
    index.update_service("default", "web", service())
    slice_ = endpoint_slice(
        [
            endpoint("10.0.0.1", ready=False, serving=True, terminating=True),
            endpoint("10.0.0.2", ready=False, terminating=True),  # serving absent = ready
            endpoint("10.0.0.3", ready=False, serving=True),  # terminating absent = false
        ]
    )
    index.update_slice("default", "web-abc", slice_)
    assert [b.address for b in only(index).backends] == ["10.0.0.1"]
    # One ready endpoint: the terminating ones are no longer used.
    slice_["endpoints"].append(endpoint("10.0.0.4"))  # conditions absent: ready
    assert index.update_slice("default", "web-abc", slice_) == {"default/web//6"}
    assert [b.address for b in only(index).backends] == ["10.0.0.4"]


def test_port_matching_by_name_and_protocol_per_slice(index: ServiceIndex) -> None:
    ports = [
        {"name": "http", "port": 80, "targetPort": "web"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]
    index.update_service("default", "web", service(ports=ports))
    # The named targetPort resolves differently per slice.
    index.update_slice(
        "default",
        "web-a",
        endpoint_slice(
            [endpoint("10.0.0.1")],
            ports=[
                {"name": "http", "port": 8080},
                {"name": "dns", "port": 5353, "protocol": "UDP"},
            ],
            name="web-a",
        ),
    )
    index.update_slice(
        "default",
        "web-b",
        endpoint_slice(
            [endpoint("10.0.0.2")],
            # Same name, other protocol: not the "dns" UDP port.
            ports=[
                {"name": "http", "port": 9090},
                {"name": "dns", "port": 5353, "protocol": "TCP"},
            ],
            name="web-b",
        ),
    )
    assert index.ports["default/web/http/6"].backends == (
        ServiceBackend("10.0.0.1", 8080, False),
        ServiceBackend("10.0.0.2", 9090, False),
    )
    assert index.ports["default/web/dns/17"].backends == (ServiceBackend("10.0.0.1", 5353, False),)


def test_slices_of_other_services_types_and_namespaces_ignored(index: ServiceIndex) -> None:
    index.update_service("default", "web", service())
    assert (
        index.update_slice(
            "default", "x", endpoint_slice([endpoint("10.0.0.1")], svc="other", name="x")
        )
        == set()
    )
    assert (
        index.update_slice(
            "other-ns", "y", endpoint_slice([endpoint("10.0.0.2")], name="y", ns="other-ns")
        )
        == set()
    )
    v6 = endpoint_slice([endpoint("fd00::1")], address_type="IPv6", name="v6")
    assert index.update_slice("default", "v6", v6) == set()
    unlabelled = endpoint_slice([endpoint("10.0.0.3")], name="z")
    unlabelled["metadata"]["labels"] = {}
    assert index.update_slice("default", "z", unlabelled) == set()
    assert only(index).backends == ()


def test_dedupe_by_address_ready_copy_wins(index: ServiceIndex) -> None:
    index.update_service("default", "web", service())
    index.update_slice(
        "default", "web-a", endpoint_slice([endpoint("10.0.0.1", ready=False)], name="web-a")
    )
    index.update_slice(
        "default",
        "web-b",
        endpoint_slice([endpoint("10.0.0.1"), endpoint("10.0.0.2")], name="web-b"),
    )
    assert [b.address for b in only(index).backends] == ["10.0.0.1", "10.0.0.2"]


def test_first_address_is_the_endpoint(index: ServiceIndex) -> None:
    index.update_service("default", "web", service())
    ep = {"addresses": ["10.0.0.1", "10.0.0.99"]}
    index.update_slice("default", "web-abc", endpoint_slice([ep]))
    assert [b.address for b in only(index).backends] == ["10.0.0.1"]


# -- incremental deltas ----------------------------------------------------------------------


def test_deltas_touch_only_the_changed_service(index: ServiceIndex) -> None:
    for i in range(20):
        name = f"svc-{i}"
        index.update_service("default", name, service(name, clusterIP=f"10.96.1.{i}"))
        index.update_slice(
            "default",
            f"{name}-x",
            endpoint_slice([endpoint(f"10.0.1.{i}")], svc=name, name=f"{name}-x"),
        )
    before = dict(index.ports)
    changed = index.update_slice(
        "default", "svc-3-x", endpoint_slice([endpoint("10.0.9.9")], svc="svc-3", name="svc-3-x")
    )
    assert changed == {"default/svc-3//6"}
    assert {k for k in index.ports if index.ports[k] != before[k]} == {"default/svc-3//6"}
    # An unchanged object changes nothing.
    assert (
        index.update_service("default", "svc-4", service("svc-4", clusterIP="10.96.1.4")) == set()
    )
    # A port removed: its id is reported, the other kept.
    two = [{"name": "a", "port": 80}, {"name": "b", "port": 81}]
    index.update_service("default", "svc-5", service("svc-5", ports=two, clusterIP="10.96.1.5"))
    one = [{"name": "a", "port": 80}]
    changed = index.update_service(
        "default", "svc-5", service("svc-5", ports=one, clusterIP="10.96.1.5")
    )
    assert changed == {"default/svc-5/b/6"}
    assert "default/svc-5/a/6" in index.ports and "default/svc-5/b/6" not in index.ports


def test_deletes(index: ServiceIndex) -> None:
    index.update_service("default", "web", service())
    index.update_slice("default", "web-abc", endpoint_slice([endpoint("10.0.0.1")]))
    assert index.delete_slice("default", "web-abc") == {"default/web//6"}
    assert only(index).backends == ()
    assert index.delete_slice("default", "web-abc") == set()
    index.update_slice("default", "web-abc", endpoint_slice([endpoint("10.0.0.1")]))
    assert index.delete_service("default", "web") == {"default/web//6"}
    assert index.ports == {}
    assert index.delete_service("default", "web") == set()
    # The slice is still known: the service coming back finds it.
    index.update_service("default", "web", service())
    assert [b.address for b in only(index).backends] == ["10.0.0.1"]


def test_slice_moving_to_another_service(index: ServiceIndex) -> None:
    index.update_service("default", "web", service())
    index.update_service("default", "api", service("api", clusterIP="10.96.0.11"))
    index.update_slice("default", "s", endpoint_slice([endpoint("10.0.0.1")], name="s"))
    changed = index.update_slice(
        "default", "s", endpoint_slice([endpoint("10.0.0.1")], svc="api", name="s")
    )
    assert changed == {"default/web//6", "default/api//6"}
    assert index.ports["default/web//6"].backends == ()
    assert len(index.ports["default/api//6"].backends) == 1


def test_invalid_input_changes_nothing(index: ServiceIndex) -> None:
    index.update_service("default", "web", service())
    before = dict(index.ports)
    bad = service(ports=[{"port": 80}, {"name": "b", "port": 81, "protocol": "ICMP"}])
    bad["spec"]["ports"][0]["name"] = "a"
    with pytest.raises(ValidationError) as info:
        index.update_service("default", "web", bad)
    assert info.value.path == "spec.ports[1].protocol"
    assert index.ports == before
    with pytest.raises(ValidationError) as info:
        index.update_slice(
            "default", "s", endpoint_slice([endpoint("10.0.0.1")], address_type="IPv5")
        )
    assert info.value.path == "addressType"
    with pytest.raises(ValidationError) as info:
        index.update_slice("default", "s", endpoint_slice([{"addresses": []}]))
    assert info.value.path == "endpoints[0].addresses"


# -- the calc graph --------------------------------------------------------------------------

SVC_KEY = "/calico/resources/v3/core/services/default/web"
SLICE_KEY = "/calico/resources/v3/discovery.k8s.io/endpointslices/default/web-abc"


def pool_key(name: str) -> str:
    return f"/calico/resources/v3/projectcalico.org/ippools/{name}"


def pool(cidr: str, disabled: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": "p"},
        "spec": {"cidr": cidr, "disabled": disabled},
    }


def put(key: str, obj: dict[str, Any], revision: int = 1) -> Update:
    return Update(key, json.dumps(obj).encode(), revision)


def test_graph_feeds_services_and_reports_deltas() -> None:
    graph = CalcGraph(NODE)
    graph.apply(
        [put(SVC_KEY, service()), put(SLICE_KEY, endpoint_slice([endpoint("10.0.0.1")])), InSync()]
    )
    delta = graph.flush()
    assert delta.service_ports == {"default/web//6"} and delta
    assert graph.state.service_ports["default/web//6"].backends[0].address == "10.0.0.1"
    graph.apply([Delete(SLICE_KEY)])
    delta = graph.flush()
    assert delta.service_ports == {"default/web//6"}
    assert graph.state.service_ports["default/web//6"].backends == ()
    graph.apply([Delete(SVC_KEY)])
    assert graph.flush().service_ports == {"default/web//6"}
    assert graph.state.service_ports == {}


def test_graph_skips_an_invalid_service_with_one_error(caplog: pytest.LogCaptureFixture) -> None:
    graph = CalcGraph(NODE)
    graph.apply([put(SVC_KEY, service())])
    graph.flush()
    bad = service(ports=[{"port": 0}])
    with caplog.at_level(logging.ERROR):
        graph.apply([put(SVC_KEY, bad, 2)])
        graph.apply([put(SVC_KEY, bad, 2)])
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "Service(default/web)" in errors[0] and "spec.ports[0].port" in errors[0]
    # Never half-applied: the previous version stays programmed.
    assert not graph.flush()
    assert graph.state.service_ports["default/web//6"].port == 80


def test_graph_skips_an_invalid_endpoint_slice(caplog: pytest.LogCaptureFixture) -> None:
    graph = CalcGraph(NODE)
    bad_ports = endpoint_slice([endpoint("10.0.0.1")], ports=[{"port": 70000}])
    with caplog.at_level(logging.ERROR):
        graph.apply(
            [
                put(SVC_KEY, service()),
                put(SLICE_KEY, endpoint_slice([endpoint("10.0.0.1")], address_type="IP")),
                put(SLICE_KEY.replace("web-abc", "web-def"), bad_ports),
            ]
        )
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert "EndpointSlice(default/web-abc)" in errors[0] and "addressType" in errors[0]
    assert "EndpointSlice(default/web-def)" in errors[1] and "ports[0].port" in errors[1]
    assert graph.state.service_ports["default/web//6"].backends == ()


def pod_cidrs(graph: CalcGraph) -> tuple[str, ...]:
    return graph.state.pod_cidrs


def test_graph_pod_cidrs_from_enabled_ipv4_pools() -> None:
    graph = CalcGraph(NODE)
    graph.apply(
        [
            put(pool_key("b"), pool("10.2.0.0/16")),
            put(pool_key("a"), pool("10.1.0.0/16")),
            put(pool_key("v6"), pool("fd00::/64")),
            InSync(),
        ]
    )
    delta = graph.flush()
    assert delta.pod_cidrs and delta
    assert graph.state.pod_cidrs == ("10.1.0.0/16", "10.2.0.0/16")
    graph.apply([put(pool_key("b"), pool("10.2.0.0/16", disabled=True), 2)])
    assert graph.flush().pod_cidrs
    assert pod_cidrs(graph) == ("10.1.0.0/16",)
    graph.apply([put(pool_key("a"), pool("10.1.0.0/16"), 3)])  # unchanged
    assert not graph.flush()
    graph.apply([Delete(pool_key("a"))])
    assert graph.flush().pod_cidrs and pod_cidrs(graph) == ()


class RecordingDataplane:
    """A fake dataplane (no kernel): records the deltas the engine hands over."""

    name = "recording"

    def __init__(self) -> None:
        self.deltas: list[StateDelta] = []
        self.reconciled = 0
        self.changed = asyncio.Event()

    async def start(self) -> None:
        return None

    async def apply(self, state: DataplaneState, delta: StateDelta) -> None:
        self.deltas.append(dataclasses.replace(delta, service_ports=set(delta.service_ports)))
        self.changed.set()

    async def reconcile(self, state: DataplaneState) -> int:
        self.reconciled += 1
        self.changed.set()
        return 0

    def programmed_interfaces(self) -> frozenset[str]:
        return frozenset()

    def ipset_count(self) -> int:
        return 0

    async def close(self) -> None:
        return None


async def test_engine_hands_service_and_pool_deltas_to_the_dataplane() -> None:
    dataplane = RecordingDataplane()
    syncer = MemorySyncer([put(SVC_KEY, service())])
    engine = PolicyEngine(syncer, NODE, dataplane, refresh_interval=3600)
    await engine.start()
    try:
        async with asyncio.timeout(10):
            while not dataplane.reconciled:
                dataplane.changed.clear()
                await dataplane.changed.wait()
            dataplane.changed.clear()
            syncer.send([put(SLICE_KEY, endpoint_slice([endpoint("10.0.0.1")]))])
            syncer.send([put(pool_key("a"), pool("10.1.0.0/16"))])
            while not any(d.pod_cidrs for d in dataplane.deltas) or not any(
                d.service_ports for d in dataplane.deltas
            ):
                dataplane.changed.clear()
                await dataplane.changed.wait()
    finally:
        await engine.stop()
    assert {i for d in dataplane.deltas for i in d.service_ports} == {"default/web//6"}
    assert engine.graph.state.pod_cidrs == ("10.1.0.0/16",)
    assert engine.graph.state.service_ports["default/web//6"].backends[0].address == "10.0.0.1"
