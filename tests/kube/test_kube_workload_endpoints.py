"""WorkloadEndpoints derived from Pods, against a real API server: Felix's endpoint store writes
them as the pod's annotations (compare-and-swap on the pod's resourceVersion), reads them back
whole, lists this node's; watches turn pod changes into WorkloadEndpoint events and resume
from a revision; `calicoctl get workloadendpoints` works.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lab import objects
from lab.apiserver import ApiServer
from libcalico.datastore import Datastore, DatastoreError, EventType, WatchEvent
from libcalico.datastore.keys import GROUP_CALICO, resource_prefix
from libcalico.resources import ResourceClient
from services.felix.endpoints.naming import host_veth_name
from services.felix.model import EndpointID, WorkloadEndpoint
from services.felix.pod_cache import parse_namespace, parse_pod
from services.felix.workload_endpoints import (
    WorkloadEndpointStore,
    build_workload_endpoint,
    wep_key,
)
from tests.fixtures.watch import aclose
from tests.kube.kubekit import calicoctl, kube_store, kubectl, kubectl_json

WEPS = resource_prefix(GROUP_CALICO, "workloadendpoints")
NODE = "node-1"


async def _namespace_with_pods(store: Datastore, namespace: str, *pods: dict[str, Any]) -> None:
    client = ResourceClient(store)
    await client.apply(objects.namespace(namespace, {"team": namespace}))
    sa = {"apiVersion": "v1", "kind": "ServiceAccount"}
    await client.apply({**sa, "metadata": {"name": "default", "namespace": namespace}})
    for pod in pods:
        await client.apply(pod)


async def _felix_endpoint(
    store: Datastore, namespace: str, pod: str, address: str, container: str = "c1"
) -> WorkloadEndpoint:
    """The endpoint Felix builds at CNI ADD, from the pod and namespace it reads."""
    client = ResourceClient(store)
    pod_obj = await client.get("Pod", pod, namespace)
    ns_obj = await client.get("Namespace", namespace)
    return build_workload_endpoint(
        node=NODE,
        endpoint_id=EndpointID(container, namespace, pod, "eth0"),
        host_interface=host_veth_name(namespace, pod),
        pod_mac="02:11:22:33:44:55",
        ip_networks=[address],
        pod=parse_pod(json.dumps(pod_obj).encode(), 1),
        namespace=parse_namespace(json.dumps(ns_obj).encode(), 1),
    )


async def test_felix_writes_reads_and_deletes_an_endpoint(kube_api: ApiServer) -> None:
    pod = objects.pod("shop", "web-1", NODE, {"app": "web"}, [("tcp", 80)])
    async with kube_store(kube_api) as store:
        await _namespace_with_pods(store, "shop", pod)
        endpoints = WorkloadEndpointStore(store)
        wep = await _felix_endpoint(store, "shop", "web-1", "10.65.0.5/32")
        written, revision = await endpoints.create_or_replace(wep)
        annotations = kubectl_json(kube_api, "get", "pod", "-n", "shop", "web-1")["metadata"][
            "annotations"
        ]
        assert annotations["cni.projectcalico.org/podIP"] == "10.65.0.5/32"
        assert annotations["cni.projectcalico.org/podIPs"] == "10.65.0.5/32"
        assert annotations["cni.projectcalico.org/containerID"] == "c1"
        assert annotations["cni.projectcalico.org/podMAC"] == "02:11:22:33:44:55"
        stored = await endpoints.get("shop", wep.name)
        assert stored is not None
        back, stored_revision = stored
        assert stored_revision == revision
        assert back.name == "node--1-k8s-web--1-eth0"
        for field in (
            "node",
            "pod",
            "endpoint",
            "container_id",
            "ip_networks",
            "interface_name",
            "mac",
            "profiles",
            "ports",
            "service_account",
        ):
            assert getattr(back, field) == getattr(wep, field), field
        assert back.profiles == ("kns.shop", "ksa.shop.default")
        assert dict(back.labels) == {
            "app": "web",
            "projectcalico.org/namespace": "shop",
            "projectcalico.org/orchestrator": "k8s",
            "projectcalico.org/serviceaccount": "default",
        }
        # A pod label change moves its revision: Felix's rewrite at the old one conflicts,
        # and its store retries at the new one (same container).
        kubectl(kube_api, "label", "pod", "-n", "shop", "web-1", "app=api", "--overwrite")
        assert await endpoints.update(written, revision) is not None
        assert [w.name for w, _ in await endpoints.list_for_node(NODE)] == [wep.name]
        assert await endpoints.list_for_node("node-2") == []
        # CNI DEL: the annotations go, the pod stays.
        assert await endpoints.delete(written)
        assert await endpoints.get("shop", wep.name) is None
        annotations = kubectl_json(kube_api, "get", "pod", "-n", "shop", "web-1")["metadata"].get(
            "annotations", {}
        )
        assert not any(k.startswith("cni.projectcalico.org/") for k in annotations)


async def test_writes_that_cannot_be_stored_are_refused_naming_why(kube_api: ApiServer) -> None:
    pod = objects.pod("refuse", "p", NODE, {}, [])
    async with kube_store(kube_api) as store:
        await _namespace_with_pods(store, "refuse", pod)
        wep = await _felix_endpoint(store, "refuse", "p", "10.65.0.9/32")
        doc = wep.to_resource()
        with pytest.raises(DatastoreError, match="pod refuse/ghost does not exist"):
            ghost = {**doc, "metadata": {**doc["metadata"], "name": "node--1-k8s-ghost-eth0"}}
            ghost["spec"] = {**doc["spec"], "pod": "ghost", "interfaceName": ""}
            await store.create(
                wep_key("refuse", "node--1-k8s-ghost-eth0"), json.dumps(ghost).encode()
            )
        elsewhere = {**doc, "metadata": {**doc["metadata"], "name": "node--2-k8s-p-eth0"}}
        elsewhere["spec"] = {**doc["spec"], "node": "node-2"}
        with pytest.raises(DatastoreError, match="is on node 'node-1', not 'node-2'"):
            await store.create(
                wep_key("refuse", "node--2-k8s-p-eth0"), json.dumps(elsewhere).encode()
            )
        nat = {**doc, "spec": {**doc["spec"], "ipNATs": [{"internalIP": "10.65.0.9"}]}}
        with pytest.raises(DatastoreError, match=r"spec\.ipNATs"):
            await store.create(wep_key("refuse", wep.name), json.dumps(nat).encode())


async def test_hostnetwork_and_unannotated_pods_have_no_endpoint(kube_api: ApiServer) -> None:
    host = objects.pod("plain", "host", NODE, {}, [])
    host["spec"]["hostNetwork"] = True
    host["metadata"]["annotations"] = {"cni.projectcalico.org/podIP": "10.66.0.11/32"}
    bare = objects.pod("plain", "bare", NODE, {}, [])
    async with kube_store(kube_api) as store:
        await _namespace_with_pods(store, "plain", host, bare)
        listed = await store.list(f"{WEPS}plain/")
        assert listed.items == []


async def _events_until(
    stream: AsyncIterator[WatchEvent], done: Any, within: float = 15.0
) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with asyncio.timeout(within):
        async for event in stream:
            events.append(event)
            if done(events):
                break
    return events


def _labels(event: WatchEvent) -> dict[str, str]:
    assert event.value is not None
    labels: dict[str, str] = json.loads(event.value)["metadata"]["labels"]
    return labels


async def test_watch_turns_pod_changes_into_endpoint_events_and_resumes(
    kube_api: ApiServer,
) -> None:
    pod = objects.pod("watch", "w", NODE, {"v": "1"}, [])
    async with kube_store(kube_api) as store:
        await _namespace_with_pods(store, "watch", pod)
        start = (await store.list(WEPS)).revision + 1
        stream = store.watch(WEPS, start)
        endpoints = WorkloadEndpointStore(store)
        wep, _ = await endpoints.create_or_replace(
            await _felix_endpoint(store, "watch", "w", "10.65.0.7/32")
        )
        kubectl(kube_api, "label", "pod", "-n", "watch", "w", "v=2", "--overwrite")
        # Status-only changes of the pod leave its endpoint as it was: no event.
        kubectl(kube_api, "annotate", "pod", "-n", "watch", "w", "unrelated=x")
        kubectl(kube_api, "label", "pod", "-n", "watch", "w", "v=3", "--overwrite")
        events = await _events_until(stream, lambda ev: len(ev) == 3)
        key = wep_key("watch", wep.name)
        assert [(e.type, e.key) for e in events] == [(EventType.PUT, key)] * 3
        assert [_labels(e)["v"] for e in events] == ["1", "2", "3"]
        # A watch from the revision of the second event resumes there.
        resumed = store.watch(WEPS, events[1].revision)
        again = await _events_until(resumed, lambda ev: len(ev) == 2)
        assert [(_labels(e)["v"], e.revision) for e in again] == [
            (_labels(e)["v"], e.revision) for e in events[1:]
        ]
        await aclose(resumed)
        # The pod losing its annotations (kubectl here) is the endpoint's DELETE.
        kubectl(
            kube_api,
            "annotate",
            "pod",
            "-n",
            "watch",
            "w",
            "cni.projectcalico.org/podIP-",
            "cni.projectcalico.org/podIPs-",
        )
        [gone] = await _events_until(stream, lambda ev: len(ev) == 1)
        assert (gone.type, gone.key) == (EventType.DELETE, key)
        await aclose(stream)


async def test_calicoctl_gets_workload_endpoints(kube_api: ApiServer) -> None:
    pod = objects.pod("ctl", "c", NODE, {"app": "ctl"}, [])
    async with kube_store(kube_api) as store:
        await _namespace_with_pods(store, "ctl", pod)
        await WorkloadEndpointStore(store).create_or_replace(
            await _felix_endpoint(store, "ctl", "c", "10.65.0.8/32")
        )
    table = calicoctl(kube_api, "get", "workloadendpoints", "-n", "ctl")
    assert "node--1-k8s-c-eth0" in table
    shown = json.loads(
        calicoctl(kube_api, "get", "wep", "node--1-k8s-c-eth0", "-n", "ctl", "-o", "json")
    )
    assert shown["spec"]["ipNetworks"] == ["10.65.0.8/32"]
    assert shown["metadata"]["labels"]["app"] == "ctl"
