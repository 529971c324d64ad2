"""Kubernetes kinds through the kubernetes datastore, against a real API server: Namespaces,
ServiceAccounts, Pods and NetworkPolicies are the API objects themselves, written and read
through the datastore's keys with resourceVersion compare-and-swap, and seen alike by kubectl.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from lab import objects
from lab.apiserver import ApiServer
from libcalico.datastore import (
    DatastoreError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    RevisionConflictError,
)
from libcalico.datastore.keys import GROUP_CORE, GROUP_NETWORKING, resource_key, resource_prefix
from libcalico.resources import ResourceClient
from services.felix.pod_cache import parse_pod
from tests.fixtures.watch import aclose
from tests.kube.kubekit import kube_store, kubectl, kubectl_apply, kubectl_json


def _ns_key(name: str) -> str:
    return resource_key(GROUP_CORE, "namespaces", name)


def _sa_key(namespace: str, name: str) -> str:
    return resource_key(GROUP_CORE, "serviceaccounts", name, namespace)


def _pod_key(namespace: str, name: str) -> str:
    return resource_key(GROUP_CORE, "pods", name, namespace)


def _service_account(namespace: str, name: str = "default") -> bytes:
    doc = {"apiVersion": "v1", "kind": "ServiceAccount"}
    return json.dumps({**doc, "metadata": {"name": name, "namespace": namespace}}).encode()


async def test_namespace_round_trips_and_delete_removes_it(kube_api: ApiServer) -> None:
    async with kube_store(kube_api) as store:
        written = await store.create(
            _ns_key("alpha"), json.dumps(objects.namespace("alpha", {"team": "a"})).encode()
        )
        shown = kubectl_json(kube_api, "get", "namespace", "alpha")
        assert shown["metadata"]["labels"]["team"] == "a"
        assert int(shown["metadata"]["resourceVersion"]) == written.mod_revision
        # kubectl's change is the datastore's value; the server's additions are kept.
        kubectl(kube_api, "label", "namespace", "alpha", "tier=gold")
        got = await store.get(_ns_key("alpha"))
        value = json.loads(got.value)
        assert value["apiVersion"] == "v1" and value["kind"] == "Namespace"
        assert value["metadata"]["labels"] == {
            "team": "a",
            "tier": "gold",
            "kubernetes.io/metadata.name": "alpha",
        }
        assert "resourceVersion" not in value["metadata"]
        assert "managedFields" not in value["metadata"]
        assert got.mod_revision > written.mod_revision
        with pytest.raises(KeyExistsError):
            await store.create(_ns_key("alpha"), json.dumps(objects.namespace("alpha")).encode())
        with pytest.raises(RevisionConflictError):
            await store.delete(_ns_key("alpha"), written.mod_revision)
        # No namespace controller runs: the backend finalizes, and the key is gone.
        await store.delete(_ns_key("alpha"), got.mod_revision)
        with pytest.raises(KeyNotFoundError):
            await store.get(_ns_key("alpha"))
        names = kubectl(kube_api, "get", "namespaces", "-o", "name").split()
        assert "namespace/alpha" not in names


async def test_pod_written_through_the_datastore_as_the_lab_does(kube_api: ApiServer) -> None:
    async with kube_store(kube_api) as store:
        client = ResourceClient(store)
        await client.apply(objects.namespace("web"))
        # Without its namespace's default ServiceAccount the API server refuses a Pod.
        pod = objects.pod("web", "server-1", "node-1", {"app": "web"}, [("tcp", 80)])
        with pytest.raises(DatastoreError, match="default") as refused:
            await store.create(_pod_key("web", "server-1"), json.dumps(pod).encode())
        assert "server-1" in str(refused.value) or "serviceaccount" in str(refused.value)
        await store.create(_sa_key("web", "default"), _service_account("web"))
        created = await client.create(pod)
        assert created["metadata"]["resourceVersion"]
        shown = kubectl_json(kube_api, "get", "pod", "-n", "web", "server-1")
        assert shown["spec"]["nodeName"] == "node-1"
        assert shown["metadata"]["labels"] == {"app": "web"}
        # The server's additions (defaults, status, the token volume) do not bother Felix.
        kv = await store.get(_pod_key("web", "server-1"))
        info = parse_pod(kv.value, kv.mod_revision)
        assert info.labels == {"app": "web"}
        assert info.service_account == "default"
        assert [(p.name, p.port, p.protocol) for p in info.ports] == [("serve-80-tcp", 80, "TCP")]
        # A label change as the lab makes it: read-modify-write with the revision.
        updated = await objects.set_labels(client, "Pod", "server-1", "web", {"app": "api"})
        assert int(updated["metadata"]["resourceVersion"]) > kv.mod_revision
        assert kubectl_json(kube_api, "get", "pod", "-n", "web", "server-1")["metadata"][
            "labels"
        ] == {"app": "api"}
        with pytest.raises(RevisionConflictError):
            await store.update(_pod_key("web", "server-1"), kv.value, kv.mod_revision)
        # Delete is immediate (no kubelet to finish a graceful one).
        await client.delete("Pod", "server-1", "web")
        with pytest.raises(KeyNotFoundError):
            await store.get(_pod_key("web", "server-1"))
        assert kubectl(kube_api, "get", "pods", "-n", "web", "-o", "name").strip() == ""


async def test_kubernetes_network_policy_from_kubectl_and_back(kube_api: ApiServer) -> None:
    kubectl(kube_api, "create", "namespace", "np")
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": "np"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [{"port": 80}]}],
        },
    }
    kubectl_apply(kube_api, policy)
    key = resource_key(GROUP_NETWORKING, "networkpolicies", "allow-web", "np")
    async with kube_store(kube_api) as store:
        listed = await store.list(resource_prefix(GROUP_NETWORKING, "networkpolicies"))
        assert [kv.key for kv in listed.items] == [key]
        value = json.loads(listed.items[0].value)
        assert value["apiVersion"] == "networking.k8s.io/v1"
        assert value["spec"]["podSelector"] == {"matchLabels": {"app": "web"}}
        assert value["spec"]["policyTypes"] == ["Ingress"]  # the server's default
        value["spec"]["podSelector"] = {"matchLabels": {"app": "db"}}
        await store.update(key, json.dumps(value).encode(), listed.items[0].mod_revision)
        shown = kubectl_json(kube_api, "get", "networkpolicy", "-n", "np", "allow-web")
        assert shown["spec"]["podSelector"] == {"matchLabels": {"app": "db"}}


async def test_watch_of_the_core_group_sees_namespaces_and_pods(kube_api: ApiServer) -> None:
    async with kube_store(kube_api) as store:
        prefix = f"/calico/resources/v3/{GROUP_CORE}/"
        start = (await store.list(prefix)).revision + 1
        stream = store.watch(prefix, start)
        await store.create(_ns_key("watched"), json.dumps(objects.namespace("watched")).encode())
        await store.create(_sa_key("watched", "default"), _service_account("watched"))
        pod = objects.pod("watched", "p", "node-1", {"a": "1"}, [])
        await store.create(_pod_key("watched", "p"), json.dumps(pod).encode())
        kubectl(kube_api, "label", "pod", "-n", "watched", "p", "a=2", "--overwrite")
        await store.delete(_pod_key("watched", "p"))
        expected = {
            (EventType.PUT, _ns_key("watched")),
            (EventType.PUT, _sa_key("watched", "default")),
        }
        seen: list[tuple[EventType, str]] = []
        labels: list[str] = []
        async with asyncio.timeout(15):
            async for event in stream:
                seen.append((event.type, event.key))
                if event.key == _pod_key("watched", "p") and event.type is EventType.PUT:
                    assert event.value is not None
                    labels.append(json.loads(event.value)["metadata"]["labels"]["a"])
                if {(EventType.DELETE, _pod_key("watched", "p")), *expected} <= set(seen):
                    break
        await aclose(stream)
        # Pods, namespaces and service accounts are separate watches: compare per key.
        pod_events = [t for t, k in seen if k == _pod_key("watched", "p")]
        assert pod_events[0] is EventType.PUT and pod_events[-1] is EventType.DELETE, seen
        assert labels[0] == "1" and labels[-1] == "2", labels
