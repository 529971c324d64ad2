"""IPAM garbage collection: Calico's two-sightings rule, the live re-check, CAS safety.

In-process against the real API server (informers on it) and etcd, with a clock the test
moves, so the grace period is exact; then once end to end through the process, with a 2 s
grace period and its real clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from lab.apiserver import ApiServer
from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, connect
from libcalico.datastore.keys import GROUP_CALICO, resource_key
from libcalico.datastore.kube_client import KubeClient
from libcalico.ipam.store import IpamStore
from libcalico.ipam.transact import CONFLICTS
from services.controllers.informer import Informer
from services.controllers.ipam_gc import IpamGarbageCollector
from services.controllers.kube_view import KubeView
from services.ipam.check import run_check
from tests.controllers.conftest import Replicas
from tests.controllers.ipamkit import ipam_state, make_pool, pod_address
from tests.controllers.kit import KubeApi, wait_for

pytestmark = pytest.mark.etcd

GRACE = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def etcd(etcd_config: DatastoreConfig) -> AsyncIterator[Datastore]:
    store = await connect(etcd_config)
    try:
        await make_pool(store)
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture
async def view(kube_api: ApiServer) -> AsyncIterator[KubeView]:
    client = KubeClient(str(kube_api.kubeconfig))
    nodes = Informer(client, "/api/v1/nodes", "nodes")
    pods = Informer(client, "/api/v1/pods", "pods")
    tasks = [asyncio.create_task(nodes.run()), asyncio.create_task(pods.run())]
    view = KubeView(client, nodes, pods)
    try:
        await asyncio.wait_for(view.wait_synced(), 10)
        yield view
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


async def until_cached(view: KubeView, namespace: str, pod: str, present: bool = True) -> None:
    for _ in range(200):
        if (view.pods.get((namespace, pod)) is not None) == present:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"pod {namespace}/{pod} never {'appeared' if present else 'went'}")


async def test_leak_released_after_two_sightings_a_grace_period_apart(
    kube: KubeApi, view: KubeView, etcd: Datastore
) -> None:
    kube.node("gc-1")
    kube.namespace("gc-a")
    kube.pod("gc-a", "live", node="gc-1")
    await until_cached(view, "gc-a", "live")
    live = await pod_address(etcd, "gc-1", "gc-a", "live", "c-live")
    leaked = await pod_address(etcd, "gc-1", "gc-a", "gone", "c-gone")  # kubelet died
    clock = FakeClock()
    gc = IpamGarbageCollector(IpamStore(etcd, cache=False), view, GRACE, clock)

    first = await gc.scan()
    assert first.released == [] and first.candidates == 1
    clock.now += GRACE - 0.1
    assert (await gc.scan()).released == [], "seen again, but not a grace period later"
    clock.now += 0.1
    assert (await gc.scan()).released == [leaked]
    clock.now += 10 * GRACE
    assert (await gc.scan()).released == []
    state = await ipam_state(etcd)
    assert str(live) in state.allocations and str(leaked) not in state.allocations
    assert "k8s-pod-network.c-gone" not in state.handles


async def test_a_pod_that_comes_back_is_no_longer_a_candidate(
    kube: KubeApi, view: KubeView, etcd: Datastore
) -> None:
    kube.node("gc-2")
    kube.namespace("gc-b")
    address = await pod_address(etcd, "gc-2", "gc-b", "late", "c-late")
    clock = FakeClock()
    gc = IpamGarbageCollector(IpamStore(etcd, cache=False), view, GRACE, clock)
    assert (await gc.scan()).candidates == 1
    kube.pod("gc-b", "late", node="gc-2")  # created after its CNI ADD: not a leak
    await until_cached(view, "gc-b", "late")
    clock.now += 2 * GRACE
    result = await gc.scan()
    assert result.released == [] and result.candidates == 0
    # Gone again: the grace period starts over from this sighting.
    kube.delete_pod_now("gc-b", "late")
    await until_cached(view, "gc-b", "late", present=False)
    assert (await gc.scan()).candidates == 1
    clock.now += GRACE / 2
    assert (await gc.scan()).released == []
    clock.now += GRACE / 2
    assert (await gc.scan()).released == [address]


async def test_live_check_keeps_a_pod_the_cache_missed(
    kube: KubeApi, kube_api: ApiServer, etcd: Datastore
) -> None:
    """The informers' cache can lag: the API is asked before anything is released."""
    kube.node("gc-3")
    kube.namespace("gc-c")
    kube.pod("gc-c", "new", node="gc-3")
    address = await pod_address(etcd, "gc-3", "gc-c", "new", "c-new")
    client = KubeClient(str(kube_api.kubeconfig))
    try:
        nodes = Informer(client, "/api/v1/nodes", "nodes")
        await nodes._list()
        stale_pods = Informer(client, "/api/v1/pods", "pods")
        stale_pods.synced.set()  # a cache that has not seen the pod yet
        clock = FakeClock()
        gc = IpamGarbageCollector(
            IpamStore(etcd, cache=False), KubeView(client, nodes, stale_pods), GRACE, clock
        )
        await gc.scan()
        clock.now += GRACE
        result = await gc.scan()
    finally:
        await client.close()
    assert result.released == []
    assert str(address) in (await ipam_state(etcd)).allocations


async def test_grace_period_zero_turns_leak_collection_off(
    kube: KubeApi, view: KubeView, etcd: Datastore
) -> None:
    kube.node("gc-4")
    await pod_address(etcd, "gc-4", "gc-d", "gone", "c-gone-4")
    clock = FakeClock()
    gc = IpamGarbageCollector(IpamStore(etcd, cache=False), view, 0.0, clock)
    for _ in range(3):
        result = await gc.scan()
        clock.now += 3600
        assert result.released == [] and result.candidates == 0


async def test_releases_race_allocations_without_losing_one(
    kube: KubeApi, view: KubeView, etcd: Datastore
) -> None:
    """Leaks released while calico-ipamd's allocator hands out addresses from the same
    blocks: every compare-and-swap conflict is retried on fresh data; no live address is
    lost, none is handed out twice, handles stay consistent."""
    kube.node("gc-5")
    kube.namespace("gc-e")
    live_pods = [f"live-{i}" for i in range(24)]
    for pod in live_pods:
        kube.pod("gc-e", pod, node="gc-5")
    for pod in live_pods:
        await until_cached(view, "gc-e", pod)
    leaked = [await pod_address(etcd, "gc-5", "gc-e", f"x-{i}", f"c-x-{i}") for i in range(16)]
    clock = FakeClock()
    gc = IpamGarbageCollector(IpamStore(etcd, cache=False), view, GRACE, clock)
    assert (await gc.scan()).candidates == len(leaked)
    clock.now += GRACE
    conflicts = 0
    commit = gc.store.commit

    async def counting_commit(*args: Any) -> None:
        nonlocal conflicts
        try:
            await commit(*args)
        except CONFLICTS:
            conflicts += 1
            raise

    gc.store.commit = counting_commit  # type: ignore[method-assign,assignment]
    live: dict[str, str] = {}

    async def allocate() -> None:
        for pod in live_pods:
            ip = await pod_address(etcd, "gc-5", "gc-e", pod, f"c-{pod}")
            live[str(ip)] = f"k8s-pod-network.c-{pod}"

    async def collect() -> list[str]:
        released: list[str] = []
        for _ in range(6):
            released.extend(str(ip) for ip in (await gc.scan()).released)
            await asyncio.sleep(0)
        return released

    _, released = await asyncio.gather(allocate(), collect())
    state = await ipam_state(etcd)
    assert len(live) == len(live_pods)
    for ip, handle in live.items():
        assert state.allocations.get(ip, (None,))[0] == handle, f"{ip} of {handle} was lost"
    leaked_left = {str(ip) for ip in leaked} - set(released)
    # A leaked address reassigned to a live pod in between is that pod's now, not a leak.
    assert all(ip in live for ip in leaked_left), leaked_left
    report = await run_check(etcd)
    assert not report.duplicates and not report.handle_mismatches, report.to_json()
    print(
        f"released {len(released)} leaks while allocating {len(live)} addresses "
        f"({conflicts} compare-and-swap conflicts retried)"
    )


async def test_the_process_collects_a_leak_after_its_grace_period(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    kube.node("gc-6")
    kube.namespace("gc-f")
    kube.pod("gc-f", "live", node="gc-6")
    live = await pod_address(etcd, "gc-6", "gc-f", "live", "c-live-6")
    leaked = await pod_address(etcd, "gc-6", "gc-f", "gone", "c-gone-6")
    grace = 2.0
    kcc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "KubeControllersConfiguration",
        "metadata": {"name": "default"},
        "spec": {"controllers": {"node": {"leakGracePeriod": f"{grace:g}s"}}},
    }
    key = resource_key(GROUP_CALICO, "kubecontrollersconfigurations", "default")
    await etcd.put(key, json.dumps(kcc).encode())
    controller = replicas()
    status = controller.wait_leading()
    assert list(status.running) == ["node"]
    wait_for(lambda: controller.status().leak_candidates == 1, 10.0, "the first sighting")
    first_seen = time.monotonic()

    async def released() -> bool:
        return str(leaked) not in (await ipam_state(etcd)).allocations

    while not await released():
        assert time.monotonic() - first_seen < 10.0, "the leak was never released"
        await asyncio.sleep(0.05)
    waited = time.monotonic() - first_seen
    print(f"leak released {waited:.2f} s after its first sighting (grace {grace} s)")
    assert waited >= grace - 0.2  # the sighting was seen up to a poll late
    assert str(live) in (await ipam_state(etcd)).allocations
    assert controller.status().leaks_released == 1
