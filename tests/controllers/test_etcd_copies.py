"""etcd mode: Kubernetes objects copied into the Calico datastore by calico-kube-controllers.

A real API server (package fixture) and the session etcd; one controller replica per test,
started after the test's objects exist or before, as each case needs. Copies live under the
keys the rest of the project reads: /calico/resources/v3/core/{pods,namespaces,
serviceaccounts,services}/..., /calico/resources/v3/networking.k8s.io/networkpolicies/... and
/calico/resources/v3/discovery.k8s.io/endpointslices/...
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from lab.apiserver import ApiServer
from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, ResyncRequiredError, connect
from libcalico.datastore.keys import (
    GROUP_CALICO,
    GROUP_CORE,
    GROUP_DISCOVERY,
    GROUP_NETWORKING,
    resource_key,
)
from libcalico.datastore.kube_client import KubeClient, KubeEvent
from services.controllers.copier import CopyController
from services.controllers.copies import ENDPOINT_SLICES, PODS, SERVICES
from services.controllers.informer import Informer
from services.felix.calc.services import ServiceIndex
from tests.controllers.conftest import Replicas
from tests.controllers.kit import KubeApi, stored, wait_stored

pytestmark = pytest.mark.etcd

KCC_FAST = {
    # Short reconciler periods: a copy edited behind the controller's back is repaired soon.
    "apiVersion": "projectcalico.org/v3",
    "kind": "KubeControllersConfiguration",
    "metadata": {"name": "default"},
    "spec": {
        "controllers": {
            "node": {"leakGracePeriod": "15m", "reconcilerPeriod": "2s"},
            "policy": {"reconcilerPeriod": "2s"},
            "workloadEndpoint": {"reconcilerPeriod": "2s"},
            "serviceAccount": {"reconcilerPeriod": "2s"},
            "namespace": {"reconcilerPeriod": "2s"},
        }
    },
}


@pytest_asyncio.fixture
async def etcd(etcd_config: DatastoreConfig) -> AsyncIterator[Datastore]:
    store = await connect(etcd_config)
    try:
        yield store
    finally:
        await store.close()


def pod_key(namespace: str, name: str) -> str:
    return resource_key(GROUP_CORE, "pods", name, namespace)


async def test_pod_copied_and_label_change_reaches_etcd_within_a_second(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    kube.namespace("copy-pods")
    kube.pod("copy-pods", "a", labels={"app": "web"}, ports=[("http", 8080)])
    controller = replicas()
    controller.wait_leading()
    key = pod_key("copy-pods", "a")
    copy = await wait_stored(etcd, key)
    assert copy is not None
    assert copy["metadata"]["labels"] == {"app": "web"}
    assert copy["spec"]["serviceAccountName"] == "default"
    assert copy["spec"]["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    ]
    assert "resourceVersion" not in copy["metadata"]
    assert "managedFields" not in copy["metadata"]

    def labelled(value: str) -> Callable[[dict[str, Any] | None], bool]:
        return lambda obj: obj is not None and obj["metadata"]["labels"].get("app") == value

    latencies = []
    for value in ("db", "cache", "web"):
        started = time.monotonic()
        kube.patch("pods", "a", {"metadata": {"labels": {"app": value}}}, "copy-pods")
        await wait_stored(etcd, key, labelled(value))
        latencies.append(time.monotonic() - started)
    print(f"pod label change -> etcd: {', '.join(f'{s * 1000:.0f} ms' for s in latencies)}")
    assert max(latencies) < 1.0, latencies

    writes = controller.status().writes
    kube.patch("pods", "a", {"metadata": {"annotations": {LAST_APPLIED: "{}"}}}, "copy-pods")
    kube.patch("pods", "a", {"metadata": {"labels": {"app": "web"}}}, "copy-pods")
    await asyncio.sleep(0.5)
    # Neither kubectl's last-applied annotation nor an unchanged label is worth a write.
    assert controller.status().writes == writes

    kube.delete_pod_now("copy-pods", "a")
    await wait_stored(etcd, key, lambda o: o is None)


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


async def test_namespace_and_service_account_copies(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    replicas().wait_leading()
    kube.namespace("copy-ns", labels={"team": "a"})
    ns_key = resource_key(GROUP_CORE, "namespaces", "copy-ns")
    copy = await wait_stored(etcd, ns_key)
    assert copy is not None
    assert copy["metadata"]["labels"] == {"team": "a", "kubernetes.io/metadata.name": "copy-ns"}
    kube.patch("namespaces", "copy-ns", {"metadata": {"labels": {"team": "b"}}})
    await wait_stored(etcd, ns_key, lambda o: o and o["metadata"]["labels"]["team"] == "b")

    kube.service_account("copy-ns", "robot", role="ci")
    sa_key = resource_key(GROUP_CORE, "serviceaccounts", "robot", "copy-ns")
    copy = await wait_stored(etcd, sa_key)
    assert copy is not None
    assert copy["metadata"]["labels"] == {"role": "ci"}
    kube.delete("serviceaccounts", "robot", "copy-ns")
    await wait_stored(etcd, sa_key, lambda o: o is None)
    # The namespace's default ServiceAccount was copied too.
    assert await stored(etcd, resource_key(GROUP_CORE, "serviceaccounts", "default", "copy-ns"))


async def test_network_policy_copied_updated_deleted(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    kube.namespace("copy-np")
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": "copy-np"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
        },
    }
    kube.create("networkpolicies", policy)
    replicas().wait_leading()
    key = resource_key(GROUP_NETWORKING, "networkpolicies", "allow-web", "copy-np")
    copy = await wait_stored(etcd, key)
    assert copy is not None
    assert copy["spec"]["podSelector"] == {"matchLabels": {"app": "db"}}
    assert copy["spec"]["policyTypes"] == ["Ingress"]
    kube.patch(
        "networkpolicies",
        "allow-web",
        {"spec": {"podSelector": {"matchLabels": {"app": "cache"}}}},
        "copy-np",
    )
    await wait_stored(
        etcd, key, lambda o: o and o["spec"]["podSelector"]["matchLabels"]["app"] == "cache"
    )
    kube.delete("networkpolicies", "allow-web", "copy-np")
    await wait_stored(etcd, key, lambda o: o is None)


async def test_full_pass_repairs_copies_and_removes_strays(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    """What the controller did not write (a stale copy, a stray key) is put right by its
    reconciler pass; a copy the controller's own state thinks current but someone edited is
    repaired the same way."""
    kube.namespace("copy-repair")
    kube.pod("copy-repair", "p", labels={"app": "x"})
    stray = pod_key("copy-repair", "no-such-pod")
    await etcd.put(stray, json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode())
    await etcd.put(
        resource_key(GROUP_CALICO, "kubecontrollersconfigurations", "default"),
        json.dumps(KCC_FAST).encode(),
    )
    replicas().wait_leading()
    key = pod_key("copy-repair", "p")
    await wait_stored(etcd, key)
    await wait_stored(etcd, stray, lambda o: o is None)
    tampered = await stored(etcd, key)
    assert tampered is not None
    tampered["metadata"]["labels"] = {"app": "tampered"}
    await etcd.put(key, json.dumps(tampered).encode())
    await wait_stored(
        etcd, key, lambda o: o and o["metadata"]["labels"] == {"app": "x"}, within=6.0
    )


async def test_a_watch_that_cannot_resume_relists_and_converges(
    kube: KubeApi, kube_api: ApiServer, etcd: Datastore
) -> None:
    """410 Gone: the informer lists again and reports what differs; the copier reconciles
    every key, so changes the lost watch never delivered still reach etcd."""
    kube.namespace("copy-410")
    for name in ("a", "b"):
        kube.pod("copy-410", name, labels={"v": "1"})
    client = KubeClient(str(kube_api.kubeconfig))
    real_watch = client.watch
    compacted = asyncio.Event()
    calls = 0

    async def watch(path: str, since: int, params: Any = None) -> AsyncIterator[KubeEvent]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first watch hears nothing, then finds its revision compacted
            await compacted.wait()
            raise ResyncRequiredError(f"watch {path}: revision {since} is compacted")
        async for event in real_watch(path, since, params):
            yield event

    client.watch = watch  # type: ignore[method-assign]
    informer = Informer(client, PODS.api_path, "pods")
    copier = CopyController(PODS, informer, etcd, reconciler_seconds=300.0)
    tasks = [asyncio.create_task(informer.run()), asyncio.create_task(copier.run())]
    try:
        await wait_stored(etcd, pod_key("copy-410", "b"))
        kube.delete_pod_now("copy-410", "a")
        kube.patch("pods", "b", {"metadata": {"labels": {"v": "2"}}}, "copy-410")
        kube.pod("copy-410", "c", labels={"v": "1"})
        await asyncio.sleep(0.3)
        assert await stored(etcd, pod_key("copy-410", "a")) is not None, "the watch was deaf"
        compacted.set()
        await wait_stored(etcd, pod_key("copy-410", "a"), lambda o: o is None)
        await wait_stored(
            etcd,
            pod_key("copy-410", "b"),
            lambda o: o is not None and o["metadata"]["labels"] == {"v": "2"},
        )
        await wait_stored(etcd, pod_key("copy-410", "c"))
        assert informer.relists == 2
        # And the watch after the relist delivers as usual.
        kube.patch("pods", "c", {"metadata": {"labels": {"v": "3"}}}, "copy-410")
        await wait_stored(
            etcd,
            pod_key("copy-410", "c"),
            lambda o: o is not None and o["metadata"]["labels"] == {"v": "3"},
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


# ---- Services and EndpointSlices (what Felix load-balances) ----

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service_key(namespace: str, name: str) -> str:
    return resource_key(GROUP_CORE, "services", name, namespace)


def slice_key(namespace: str, name: str) -> str:
    return resource_key(GROUP_DISCOVERY, "endpointslices", name, namespace)


def web_service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace, "labels": {"app": "web"}},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "web"},
            "sessionAffinity": "ClientIP",
            "externalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def web_slice(namespace: str, name: str, address: str, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": ready},
                "nodeName": "node-1",
                "zone": "z1",
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": f"pod-{name}"},
            }
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}],
    }


def felix_ports(service: dict[str, Any] | None, slices: list[dict[str, Any]]) -> dict[str, Any]:
    """Felix's ServicePorts (its own calculation, services/felix/calc/services.py) from a
    Service and its slices, as node-1 sees them."""
    index = ServiceIndex("node-1")
    if service is not None:
        meta = service["metadata"]
        index.update_service(meta["namespace"], meta["name"], service)
    for obj in slices:
        index.update_slice(obj["metadata"]["namespace"], obj["metadata"]["name"], obj)
    return dict(index.ports)


async def test_service_and_endpoint_slice_copied_updated_deleted(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    """Felix computes the same ServicePorts from the copies as from the API's objects, through
    a status change (load-balancer IP), an endpoint going not-ready, and the deletes."""
    ns = "copy-svc"
    kube.namespace(ns)
    kube.create("services", web_service(ns))
    kube.create("endpointslices", web_slice(ns, "web-a", "10.65.0.5"))
    stray = slice_key(ns, "gone-slice")  # a copy whose object is gone: the start pass drops it
    await etcd.put(stray, json.dumps(web_slice(ns, "gone-slice", "10.65.0.9")).encode())
    replicas().wait_leading()

    async def copies_match_api() -> dict[str, Any]:
        """Felix's ServicePorts from the copies, once they equal those from the API."""
        api_slice = kube.get("endpointslices", "web-a", ns)
        want = felix_ports(kube.get("services", "web", ns), [api_slice] if api_slice else [])
        deadline = time.monotonic() + 10.0
        while True:
            copied = await stored(etcd, slice_key(ns, "web-a"))
            got = felix_ports(
                await stored(etcd, service_key(ns, "web")), [copied] if copied else []
            )
            if got == want or time.monotonic() > deadline:
                assert got == want
                return got
            await asyncio.sleep(0.02)

    ports = await copies_match_api()
    (port,) = ports.values()
    assert [b.address for b in port.backends] == ["10.65.0.5"]
    assert port.backends[0].port == 8080
    service = await stored(etcd, service_key(ns, "web"))
    assert service is not None
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert "status" not in service  # no load-balancer ingress yet; conditions are not kept
    copied_slice = await stored(etcd, slice_key(ns, "web-a"))
    assert copied_slice is not None
    assert copied_slice["metadata"]["labels"][SERVICE_NAME_LABEL] == "web"
    # Only what Felix reads of an endpoint and a port.
    assert copied_slice["endpoints"] == [
        {"addresses": ["10.65.0.5"], "conditions": {"ready": True}, "nodeName": "node-1"}
    ]
    assert copied_slice["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    await wait_stored(etcd, stray, lambda o: o is None)

    # The load balancer's address arrives through the status subresource.
    kube.patch_status(
        "services", "web", {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}, ns
    )
    await wait_stored(etcd, service_key(ns, "web"), lambda o: o and "status" in o)
    (port,) = (await copies_match_api()).values()
    assert "192.0.2.10" in port.external_ips

    kube.patch(
        "endpointslices",
        "web-a",
        {"endpoints": [{"addresses": ["10.65.0.5"], "conditions": {"ready": False}}]},
        ns,
    )
    await wait_stored(
        etcd,
        slice_key(ns, "web-a"),
        lambda o: o and o["endpoints"][0]["conditions"] == {"ready": False},
    )
    await copies_match_api()

    kube.delete("endpointslices", "web-a", ns)
    await wait_stored(etcd, slice_key(ns, "web-a"), lambda o: o is None)
    kube.delete("services", "web", ns)
    await wait_stored(etcd, service_key(ns, "web"), lambda o: o is None)


async def test_service_copies_converge_after_a_watch_gap(
    kube: KubeApi, kube_api: ApiServer, etcd: Datastore
) -> None:
    """Deleted and changed while both watches were deaf: after the 410 relist the stale
    copies are removed and the changed one rewritten."""
    ns = "copy-svc-410"
    kube.namespace(ns)
    kube.create("services", web_service(ns))
    for name, address in (("web-a", "10.65.1.1"), ("web-b", "10.65.1.2")):
        kube.create("endpointslices", web_slice(ns, name, address))
    client = KubeClient(str(kube_api.kubeconfig))
    real_watch = client.watch
    compacted = asyncio.Event()
    watched: set[str] = set()

    async def watch(path: str, since: int, params: Any = None) -> AsyncIterator[KubeEvent]:
        if path not in watched:  # each kind's first watch hears nothing, then is compacted
            watched.add(path)
            await compacted.wait()
            raise ResyncRequiredError(f"watch {path}: revision {since} is compacted")
        async for event in real_watch(path, since, params):
            yield event

    client.watch = watch  # type: ignore[method-assign]
    informers = [Informer(client, k.api_path, k.plural) for k in (SERVICES, ENDPOINT_SLICES)]
    copiers = [
        CopyController(k, i, etcd, reconciler_seconds=300.0)
        for k, i in zip((SERVICES, ENDPOINT_SLICES), informers, strict=True)
    ]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    tasks += [asyncio.create_task(c.run()) for c in copiers]
    try:
        await wait_stored(etcd, service_key(ns, "web"))
        await wait_stored(etcd, slice_key(ns, "web-b"))
        kube.delete("endpointslices", "web-a", ns)
        kube.patch("endpointslices", "web-b", {"endpoints": [{"addresses": ["10.65.1.3"]}]}, ns)
        kube.delete("services", "web", ns)
        await asyncio.sleep(0.3)
        assert await stored(etcd, slice_key(ns, "web-a")) is not None, "the watch was deaf"
        compacted.set()
        await wait_stored(etcd, service_key(ns, "web"), lambda o: o is None)
        await wait_stored(etcd, slice_key(ns, "web-a"), lambda o: o is None)
        await wait_stored(
            etcd,
            slice_key(ns, "web-b"),
            lambda o: o is not None and [e["addresses"] for e in o["endpoints"]] == [["10.65.1.3"]],
        )
        assert [i.relists for i in informers] == [2, 2]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
