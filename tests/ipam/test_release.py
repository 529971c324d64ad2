"""libcalico.ipam.release, shared by calico-ipamd and calico-kube-controllers: guarded,
all-or-none releases and a gone node's affinity (both real datastores, in-process)."""

from __future__ import annotations

import ipaddress

from libcalico.datastore import Datastore
from libcalico.ipam.model import Block
from libcalico.ipam.release import (
    AffinityRelease,
    ReleaseSpec,
    release_affinity,
    release_all_or_none,
)
from libcalico.ipam.staging import Staging
from libcalico.ipam.store import IpamStore
from libcalico.ipam.transact import run_staged
from services.ipam.allocator import Allocator, AssignRequest
from tests.controllers.ipamkit import ipam_state
from tests.ipam.helpers import put_pool


async def assign(ds: Datastore, node: str, handle: str) -> ipaddress.IPv4Address:
    allocator = Allocator(ds, node)
    try:
        result = await allocator.auto_assign(AssignRequest(num_ipv4=1, handle_id=handle))
    finally:
        await allocator.close()
    return result.ipv4[0].ip  # type: ignore[return-value]


async def test_all_or_none_and_sequence_guard(datastore: Datastore) -> None:
    await put_pool(datastore, "p", "10.80.0.0/24", block_size=28)
    a = await assign(datastore, "n1", "h")
    b = await assign(datastore, "n1", "h")
    store = IpamStore(datastore, cache=False)
    block = (await store.list_blocks(4))[0].value
    seq = {str(x.ip): x.sequence_number for x in block.all_allocations()}
    cidr = block.cidr
    stale = ReleaseSpec(b, handle_id="h", sequence_number=seq[str(b)] + 100)

    async def both(stg: Staging) -> bool:
        return await release_all_or_none(
            stg, [(cidr, ReleaseSpec(a, "h", seq[str(a)])), (cidr, stale)]
        )

    assert not await run_staged(store, both), "one guard fails: nothing is released"
    assert {str(a), str(b)} <= set((await ipam_state(datastore)).allocations)

    async def right(stg: Staging) -> bool:
        return await release_all_or_none(
            stg,
            [(cidr, ReleaseSpec(a, "h", seq[str(a)])), (cidr, ReleaseSpec(b, "h", seq[str(b)]))],
        )

    assert await run_staged(store, right)
    state = await ipam_state(datastore)
    assert str(a) not in state.allocations and "h" not in state.handles


async def test_release_affinity_of_a_gone_node(datastore: Datastore) -> None:
    await put_pool(datastore, "p", "10.81.0.0/24", block_size=28)
    await assign(datastore, "gone", "x")
    store = IpamStore(datastore, cache=False)
    cidr = (await store.list_blocks(4))[0].value.cidr
    # Another node's address in gone's block keeps the block, unclaimed.
    other = Allocator(datastore, "other")
    try:
        await other.assign_ip(str(cidr.network_address + 3), "y")
    finally:
        await other.close()
    gone = Allocator(datastore, "gone")
    try:
        await gone.release_by_handle("x")
    finally:
        await gone.close()

    async def op(stg: Staging) -> AffinityRelease:
        return await release_affinity(stg, "gone", cidr)

    assert await run_staged(store, op) is AffinityRelease.BLOCK_UNCLAIMED
    state = await ipam_state(datastore)
    assert "gone" not in state.affinities and state.blocks[str(cidr)] is None
    kv = await datastore.get(f"/calico/ipam/v2/assignment/ipv4/block/{cidr.network_address}-28")
    assert [str(x.ip) for x in Block.from_bytes(kv.value).all_allocations()] == [
        str(cidr.network_address + 3)
    ]
    assert await run_staged(store, op) is AffinityRelease.NOTHING
