"""Services and EndpointSlices through the kubernetes datastore, against a real API server:
round trips (the Service's status through the status subresource), what a watch sees, and the
server's own objects (defaults, allocated cluster IPs) being what Felix's index accepts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from lab import objects
from lab.apiserver import ApiServer
from libcalico.datastore import DatastoreError, EventType
from libcalico.datastore.keys import GROUP_CORE, GROUP_DISCOVERY, resource_key, resource_prefix
from libcalico.resources.validation.services import check_endpoint_slice, check_service
from services.felix.calc.model import ServiceBackend
from services.felix.calc.services import ServiceIndex
from tests.fixtures.watch import aclose
from tests.kube.kubekit import kube_store, kubectl_apply, kubectl_json

NS = "svcs"


def svc_key(name: str) -> str:
    return resource_key(GROUP_CORE, "services", name, NS)


def slice_key(name: str) -> str:
    return resource_key(GROUP_DISCOVERY, "endpointslices", name, NS)


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec},
    }


def endpoint_slice(name: str, svc: str, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        **fields,
    }


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture(scope="module")
def namespace(kube_api: ApiServer) -> ApiServer:
    kubectl_apply(kube_api, objects.namespace(NS))
    return kube_api


async def test_service_status_written_through_the_subresource(namespace: ApiServer) -> None:
    lb = service("lb", type="LoadBalancer", clusterIP="10.96.5.5")
    lb["spec"]["ports"][0]["nodePort"] = 30555
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    async with kube_store(namespace) as store:
        prefix = resource_prefix(GROUP_CORE, "services")
        start = (await store.list(prefix)).revision + 1
        stream = store.watch(prefix, start)
        created = await store.create(svc_key("lb"), encode(lb))
        value = json.loads(created.value)
        assert [i["ip"] for i in value["status"]["loadBalancer"]["ingress"]] == ["192.0.2.10"]
        shown = kubectl_json(namespace, "get", "service", "-n", NS, "lb")
        assert shown["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.10"
        assert int(shown["metadata"]["resourceVersion"]) == created.mod_revision
        # The server's defaults are there and valid for Felix.
        assert value["spec"]["clusterIPs"] == ["10.96.5.5"]
        check_service(value)

        # An update of spec and status: both land.
        value["spec"]["externalTrafficPolicy"] = "Local"
        value["status"]["loadBalancer"]["ingress"].append({"ip": "192.0.2.11"})
        updated = await store.update(svc_key("lb"), encode(value), created.mod_revision)
        got = json.loads((await store.get(svc_key("lb"))).value)
        assert got["spec"]["externalTrafficPolicy"] == "Local"
        assert [i["ip"] for i in got["status"]["loadBalancer"]["ingress"]] == [
            "192.0.2.10",
            "192.0.2.11",
        ]
        assert (await store.get(svc_key("lb"))).mod_revision == updated.mod_revision

        # A watch sees the status.
        ips: list[list[str]] = []
        async with asyncio.timeout(15):
            async for event in stream:
                if event.key != svc_key("lb") or event.type is not EventType.PUT:
                    continue
                assert event.value is not None
                ingress = (json.loads(event.value).get("status") or {}).get("loadBalancer") or {}
                ips.append([i["ip"] for i in ingress.get("ingress") or []])
                if len(ips[-1]) == 2:
                    break
        await aclose(stream)
        assert ["192.0.2.10"] in ips, ips

        index = ServiceIndex("node-1")
        index.update_service(NS, "lb", got)
        sp = index.ports[f"{NS}/lb/http/6"]
        assert sp.external_ips == ("192.0.2.10", "192.0.2.11")
        assert sp.node_port == 30555 and sp.external_local
        await store.delete(svc_key("lb"))


async def test_endpoint_slices_round_trip(namespace: ApiServer) -> None:
    async with kube_store(namespace) as store:
        # Required fields: the server refuses a slice without addressType, naming it.
        bad = endpoint_slice("bad", "web")
        del bad["addressType"]
        with pytest.raises(DatastoreError, match="addressType"):
            await store.create(slice_key("bad"), encode(bad))
        # No endpoints at all: a valid (empty) slice.
        empty = await store.create(slice_key("web-0"), encode(endpoint_slice("web-0", "web")))
        assert not json.loads(empty.value).get("endpoints")
        full = endpoint_slice(
            "web-1",
            "web",
            ports=[{"name": "http", "port": 8080, "protocol": "TCP"}],
            endpoints=[
                {"addresses": ["10.244.1.5"], "nodeName": "node-1"},
                {"addresses": ["10.244.2.5"], "nodeName": "node-2", "conditions": {"ready": False}},
            ],
        )
        written = await store.create(slice_key("web-1"), encode(full))
        shown = kubectl_json(namespace, "get", "endpointslice", "-n", NS, "web-1")
        assert [e["addresses"] for e in shown["endpoints"]] == [["10.244.1.5"], ["10.244.2.5"]]
        listed = await store.list(resource_prefix(GROUP_DISCOVERY, "endpointslices", NS))
        assert [kv.key for kv in listed.items] == [slice_key("web-0"), slice_key("web-1")]
        stored = json.loads(listed.items[1].value)
        check_endpoint_slice(stored)
        assert stored["apiVersion"] == "discovery.k8s.io/v1"
        assert listed.items[1].mod_revision == written.mod_revision

        # A Service the server allocates an address for, with the slices: Felix's view.
        kubectl_apply(namespace, service("web"))
        svc_kv = await store.get(svc_key("web"))
        svc_value = json.loads(svc_kv.value)
        cluster_ip = svc_value["spec"]["clusterIP"]
        index = ServiceIndex("node-1")
        index.update_service(NS, "web", svc_value)
        for kv in listed.items:
            index.update_slice(NS, kv.key.rsplit("/", 1)[1], json.loads(kv.value))
        sp = index.ports[f"{NS}/web/http/6"]
        assert sp.cluster_ips == (cluster_ip,)
        assert sp.backends == (ServiceBackend("10.244.1.5", 8080, True),)
        for key in (slice_key("web-0"), slice_key("web-1"), svc_key("web")):
            await store.delete(key)
