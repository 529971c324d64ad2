"""Calico Node backed by the Kubernetes Node, against a real API server: labels are the
Node's, Calico's fields its `projectcalico.org/...` annotations, writes compare-and-swap on its
resourceVersion, deletes remove only Calico's annotations, and `calicoctl get nodes` works.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from lab import objects
from lab.apiserver import ApiServer
from libcalico.datastore import (
    DatastoreError,
    EventType,
    KeyExistsError,
    RevisionConflictError,
)
from libcalico.datastore.keys import GROUP_CALICO, resource_key, resource_prefix
from libcalico.resources import ResourceClient
from services.bgp.view import parse_node as bgp_parse_node
from services.felix.vxlan.view import parse_node as vxlan_parse_node
from tests.fixtures.watch import aclose
from tests.kube.kubekit import calicoctl, kube_store, kubectl, kubectl_create, kubectl_json

NODES = resource_prefix(GROUP_CALICO, "nodes")


def _k8s_node(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
    }


def _key(name: str) -> str:
    return resource_key(GROUP_CALICO, "nodes", name)


async def test_calico_fields_are_node_annotations_and_back(kube_api: ApiServer) -> None:
    kubectl_create(kube_api, _k8s_node("node-a", {"rack": "r1"}))
    async with kube_store(kube_api) as store:
        client = ResourceClient(store)
        bare = await client.get("Node", "node-a")
        assert bare["metadata"]["labels"] == {"kubernetes.io/hostname": "node-a", "rack": "r1"}
        assert bare["spec"]["orchRefs"] == [{"nodeName": "node-a", "orchestrator": "k8s"}]
        assert "bgp" not in bare["spec"]
        # The lab's Node document, applied as the lab applies it.
        doc = objects.node("node-a", "10.66.0.11/24", {"rack": "r1"}, "244.0.0.1")
        doc["spec"]["bgp"]["asNumber"] = 64513
        doc["spec"]["ipv4VXLANTunnelAddr"] = "10.65.0.1"
        doc["spec"]["vxlanTunnelMACAddr"] = "66:aa:bb:cc:dd:ee"
        written = await client.apply(doc)
        k8s = kubectl_json(kube_api, "get", "node", "node-a")
        annotations = k8s["metadata"]["annotations"]
        assert annotations["projectcalico.org/IPv4Address"] == "10.66.0.11/24"
        assert annotations["projectcalico.org/ASNumber"] == "64513"
        assert annotations["projectcalico.org/RouteReflectorClusterID"] == "244.0.0.1"
        assert annotations["projectcalico.org/IPv4VXLANTunnelAddr"] == "10.65.0.1"
        assert annotations["projectcalico.org/VXLANTunnelMACAddr"] == "66:aa:bb:cc:dd:ee"
        assert annotations["node.alpha.kubernetes.io/ttl"] == "0"  # the Node's own, kept
        assert k8s["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
        # Read back: what BGP and Felix's overlay take from it.
        kv = await store.get(_key("node-a"))
        node = json.loads(kv.value)
        bgp = bgp_parse_node(node)
        assert (bgp.ipv4_address, bgp.as_number, bgp.rr_cluster_id) == (
            "10.66.0.11/24",
            64513,
            "244.0.0.1",
        )
        vtep = vxlan_parse_node(node)
        assert (vtep.address, vtep.vtep_ip, vtep.vtep_mac) == (
            "10.66.0.11",
            "10.65.0.1",
            "66:aa:bb:cc:dd:ee",
        )
        assert {"address": "10.66.0.11/24", "type": "CalicoNodeIP"} in node["spec"]["addresses"]
        assert node["metadata"]["annotations"] == {"node.alpha.kubernetes.io/ttl": "0"}
        # Compare-and-swap on the Node's resourceVersion.
        kubectl(kube_api, "label", "node", "node-a", "rack=r2", "--overwrite")
        with pytest.raises(RevisionConflictError):
            await store.update(_key("node-a"), kv.value, kv.mod_revision)
        fresh = await client.get("Node", "node-a")
        assert fresh["metadata"]["labels"]["rack"] == "r2"
        del fresh["spec"]["bgp"]["routeReflectorClusterID"]
        fresh["metadata"]["labels"]["zone"] = "z1"
        await client.update(fresh)
        k8s = kubectl_json(kube_api, "get", "node", "node-a")
        assert "projectcalico.org/RouteReflectorClusterID" not in k8s["metadata"]["annotations"]
        assert k8s["metadata"]["labels"]["zone"] == "z1"


async def test_creating_a_node_without_a_kubernetes_node_names_it(kube_api: ApiServer) -> None:
    async with kube_store(kube_api) as store:
        value = json.dumps(objects.node("ghost", "10.66.0.99/24")).encode()
        with pytest.raises(DatastoreError, match="no Kubernetes Node 'ghost'"):
            await store.create(_key("ghost"), value)
        with pytest.raises(DatastoreError, match="ghost"):
            await ResourceClient(store).apply(objects.node("ghost", "10.66.0.99/24"))
        kubectl_create(kube_api, _k8s_node("ghost"))
        with pytest.raises(KeyExistsError):
            await store.create(_key("ghost"), value)


async def test_unmapped_field_is_refused_naming_it(kube_api: ApiServer) -> None:
    kubectl_create(kube_api, _k8s_node("node-u"))
    async with kube_store(kube_api) as store:
        kv = await store.get(_key("node-u"))
        doc = json.loads(kv.value)
        doc["spec"]["interfaces"] = [{"name": "eth0"}]
        with pytest.raises(DatastoreError, match=r"spec\.interfaces"):
            await store.update(_key("node-u"), json.dumps(doc).encode(), kv.mod_revision)
        doc = json.loads(kv.value)
        doc["metadata"]["annotations"] = {"projectcalico.org/ASNumber": "1"}
        with pytest.raises(DatastoreError, match="ASNumber"):
            await store.update(_key("node-u"), json.dumps(doc).encode(), kv.mod_revision)


async def test_delete_removes_calico_annotations_only(kube_api: ApiServer) -> None:
    kubectl_create(kube_api, _k8s_node("node-d"))
    async with kube_store(kube_api) as store:
        client = ResourceClient(store)
        await client.apply(objects.node("node-d", "10.66.0.12/24"))
        await client.delete("Node", "node-d")
        k8s = kubectl_json(kube_api, "get", "node", "node-d")
        assert k8s["metadata"]["annotations"] == {"node.alpha.kubernetes.io/ttl": "0"}
        assert "bgp" not in (await client.get("Node", "node-d"))["spec"]


async def test_node_watch_and_calicoctl_get_nodes(kube_api: ApiServer) -> None:
    kubectl_create(kube_api, _k8s_node("node-w"))
    async with kube_store(kube_api) as store:
        listed = await store.list(NODES)
        assert _key("node-w") in [kv.key for kv in listed.items]
        stream = store.watch(NODES, listed.revision + 1)
        kubectl(kube_api, "label", "node", "node-w", "color=blue")
        kubectl(kube_api, "delete", "node", "node-w")
        events: list[tuple[EventType, str, str | None]] = []
        async with asyncio.timeout(10):
            async for event in stream:
                color = None
                if event.value is not None:
                    color = json.loads(event.value)["metadata"].get("labels", {}).get("color")
                events.append((event.type, event.key, color))
                if event.type is EventType.DELETE:
                    break
        await aclose(stream)
        assert events == [
            (EventType.PUT, _key("node-w"), "blue"),
            (EventType.DELETE, _key("node-w"), "blue"),
        ]
    kubectl_create(kube_api, _k8s_node("node-c"))
    table = calicoctl(kube_api, "get", "nodes")
    assert "node-c" in table
    shown = json.loads(calicoctl(kube_api, "get", "node", "node-c", "-o", "json"))
    assert shown["kind"] == "Node"
    assert shown["metadata"]["labels"]["kubernetes.io/hostname"] == "node-c"
