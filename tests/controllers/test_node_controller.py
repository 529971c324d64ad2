"""The node controller against a real API server and etcd (etcd mode), as a process.

Kubernetes Nodes get Calico Nodes (orchRef, labels synced, Felix's spec kept); a Node that is
deleted has exactly its own Calico data released (Calico Node, WorkloadEndpoints, block
affinities, tunnel address, its pods' addresses, also one borrowed from another node's block)
and nothing of any other node; a gone node whose pod still exists in the API keeps
everything until that pod goes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, connect
from libcalico.datastore.keys import GROUP_CALICO, resource_key
from libcalico.resources import ResourceClient
from services.ipam.check import run_check
from tests.controllers.conftest import Replicas
from tests.controllers.ipamkit import (
    borrowed_address,
    ipam_state,
    make_pool,
    pod_address,
    tunnel_address,
)
from tests.controllers.kit import KubeApi, stored, wait_for, wait_stored
from tests.ipam.helpers import put_workload_endpoint

pytestmark = pytest.mark.etcd


@pytest_asyncio.fixture
async def etcd(etcd_config: DatastoreConfig) -> AsyncIterator[Datastore]:
    store = await connect(etcd_config)
    try:
        yield store
    finally:
        await store.close()


def node_key(name: str) -> str:
    return resource_key(GROUP_CALICO, "nodes", name)


async def test_calico_nodes_follow_kubernetes_nodes(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    kube.node("sync-1", labels={"zone": "a"})
    replicas().wait_leading()
    node = await wait_stored(etcd, node_key("sync-1"))
    assert node is not None
    assert node["spec"]["orchRefs"] == [{"orchestrator": "k8s", "nodeName": "sync-1"}]
    assert node["metadata"]["labels"] == {"zone": "a"}

    # What calico-node / Felix write on the Calico Node stays; so does a label set there.
    client = ResourceClient(etcd)
    current = await client.get("Node", "sync-1")
    current["spec"]["bgp"] = {"ipv4Address": "10.66.0.11/24"}
    current["metadata"]["labels"]["calico-only"] = "yes"
    await client.update(current)
    kube.patch("nodes", "sync-1", {"metadata": {"labels": {"zone": "b", "rack": "r1"}}})
    node = await wait_stored(
        etcd, node_key("sync-1"), lambda o: o is not None and o["metadata"]["labels"]["zone"] == "b"
    )
    assert node is not None
    assert node["metadata"]["labels"] == {"zone": "b", "rack": "r1", "calico-only": "yes"}
    assert node["spec"]["bgp"] == {"ipv4Address": "10.66.0.11/24"}
    # A label removed in Kubernetes goes; the Calico-only one does not.
    kube.patch("nodes", "sync-1", {"metadata": {"labels": {"rack": None}}})
    await wait_stored(
        etcd,
        node_key("sync-1"),
        lambda o: o is not None and o["metadata"]["labels"] == {"zone": "b", "calico-only": "yes"},
    )

    kube.delete("nodes", "sync-1")
    await wait_stored(etcd, node_key("sync-1"), lambda o: o is None)


async def test_gone_node_releases_exactly_its_own_data(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    await make_pool(etcd)
    kube.namespace("nodes-a")
    for name in ("gone-1", "keep-1"):
        kube.node(name)
    kube.pod("nodes-a", "p1", node="gone-1")
    kube.pod("nodes-a", "q1", node="keep-1")
    kube.pod("nodes-a", "q2", node="keep-1")
    gone_pod = await pod_address(etcd, "gone-1", "nodes-a", "p1", "c-p1")
    gone_tunnel = await tunnel_address(etcd, "gone-1")
    keep_pod = await pod_address(etcd, "keep-1", "nodes-a", "q1", "c-q1")
    keep_tunnel = await tunnel_address(etcd, "keep-1")
    # keep-1's pod q2 holds an address in gone-1's block (borrowed).
    borrowed = gone_pod + 5
    await borrowed_address(etcd, "keep-1", borrowed, "nodes-a", "q2", "c-q2")
    await put_workload_endpoint(etcd, "nodes-a", "p1", "gone-1", "c-p1", str(gone_pod))
    await put_workload_endpoint(etcd, "nodes-a", "q1", "keep-1", "c-q1", str(keep_pod))
    before = await ipam_state(etcd)
    gone_block = next(iter(before.affinities["gone-1"]))

    controller = replicas()
    controller.wait_leading()
    await wait_stored(etcd, node_key("gone-1"))
    await asyncio.sleep(0.5)
    assert await ipam_state(etcd) == before, "nothing may go while both nodes exist"

    kube.delete_pod_now("nodes-a", "p1")
    kube.delete("nodes", "gone-1")
    await wait_stored(etcd, node_key("gone-1"), lambda o: o is None)

    after = await ipam_state(etcd)
    assert str(gone_pod) not in after.allocations
    assert str(gone_tunnel) not in after.allocations
    assert "gone-1" not in after.affinities
    assert after.handles == before.handles - {"k8s-pod-network.c-p1", "vxlan-tunnel-addr-gone-1"}
    # keep-1 untouched: its addresses (the borrowed one too), affinities, handles, node.
    for ip in (keep_pod, keep_tunnel, borrowed):
        assert after.allocations[str(ip)] == before.allocations[str(ip)]
    assert after.affinities["keep-1"] == before.affinities["keep-1"]
    # gone-1's block still holds keep-1's address: it stays, claimed by no node.
    assert after.blocks[gone_block] is None
    assert await stored(etcd, node_key("keep-1")) is not None
    weps = await etcd.list(resource_key(GROUP_CALICO, "workloadendpoints", "x")[:-1])
    assert [json.loads(kv.value)["spec"]["node"] for kv in weps.items] == ["keep-1"]
    report = await run_check(etcd)
    assert not report.duplicates and not report.out_of_block, report.to_json()
    assert not report.handle_mismatches, report.to_json()
    assert controller.status().nodes_cleaned == 1

    # When keep-1's pod releases its borrowed address, the unclaimed block goes back too.
    await release_handle(etcd, "keep-1", "k8s-pod-network.c-q2")
    assert gone_block not in (await ipam_state(etcd)).blocks


async def release_handle(ds: Datastore, node: str, handle: str) -> None:
    from services.ipam.allocator import Allocator

    allocator = Allocator(ds, node)
    try:
        await allocator.release_by_handle(handle)
    finally:
        await allocator.close()


async def test_gone_node_waits_for_a_pod_that_still_exists(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    await make_pool(etcd)
    kube.namespace("nodes-b")
    kube.node("gone-2")
    kube.pod("nodes-b", "r1", node="gone-2")
    address = await pod_address(etcd, "gone-2", "nodes-b", "r1", "c-r1")
    controller = replicas()
    controller.wait_leading()
    await wait_stored(etcd, node_key("gone-2"))
    scans = wait_for(lambda: controller.status().gc_scans, 10.0, "a first IPAM scan")
    kube.delete("nodes", "gone-2")
    wait_for(lambda: controller.status().gc_scans > scans, 10.0, "a scan after the node went")
    state = await ipam_state(etcd)
    assert str(address) in state.allocations, "the pod still exists: its address stays"
    assert "gone-2" in state.affinities
    assert await stored(etcd, node_key("gone-2")) is not None
    assert controller.status().nodes_cleaned == 0

    kube.delete_pod_now("nodes-b", "r1")
    await wait_stored(etcd, node_key("gone-2"), lambda o: o is None)
    state = await ipam_state(etcd)
    assert str(address) not in state.allocations
    assert "gone-2" not in state.affinities
