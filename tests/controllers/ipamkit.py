"""IPAM as the node's calico-ipamd would leave it, and reading it back, for the controller tests.

Addresses are allocated with the real allocator (services/ipam, in-process) on the test's
datastore, with the attributes the CNI plugin records (namespace, pod, node) or a tunnel
address's (`type`), so the controller under test sees exactly what a cluster holds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from libcalico.datastore import Datastore
from libcalico.ipam import keys
from libcalico.ipam.model import Block
from services.ipam.allocator import Allocator, AssignRequest
from tests.ipam.helpers import put_pool

POOL = "10.70.0.0/16"
BLOCK_SIZE = 28


async def make_pool(ds: Datastore) -> None:
    await put_pool(ds, "controllers-pool", POOL, block_size=BLOCK_SIZE)


async def pod_address(
    ds: Datastore, node: str, namespace: str, pod: str, container: str
) -> ipaddress.IPv4Address:
    """What a CNI ADD on `node` gets for a pod: handle k8s-pod-network.<container>."""
    allocator = Allocator(ds, node)
    try:
        result = await allocator.auto_assign(
            AssignRequest(
                num_ipv4=1,
                handle_id=f"k8s-pod-network.{container}",
                attributes={"namespace": namespace, "pod": pod},
            )
        )
    finally:
        await allocator.close()
    return result.ipv4[0].ip  # type: ignore[return-value]


async def tunnel_address(ds: Datastore, node: str) -> ipaddress.IPv4Address:
    """The node's VXLAN tunnel address, as Felix takes it."""
    allocator = Allocator(ds, node)
    try:
        result = await allocator.auto_assign(
            AssignRequest(
                num_ipv4=1,
                handle_id=f"vxlan-tunnel-addr-{node}",
                attributes={"type": "vxlanTunnelAddress"},
            )
        )
    finally:
        await allocator.close()
    return result.ipv4[0].ip  # type: ignore[return-value]


async def borrowed_address(
    ds: Datastore, node: str, ip: ipaddress.IPv4Address, namespace: str, pod: str, container: str
) -> None:
    """An address of another node's block, allocated for a pod of `node` (as borrowing does)."""
    allocator = Allocator(ds, node)
    try:
        await allocator.assign_ip(
            str(ip), f"k8s-pod-network.{container}", {"namespace": namespace, "pod": pod}
        )
    finally:
        await allocator.close()


@dataclass
class IpamState:
    # address -> (handle, node attribute)
    allocations: dict[str, tuple[str | None, str | None]]
    # node -> block CIDRs it has an affinity to
    affinities: dict[str, set[str]]
    # block CIDR -> the node its `affinity` field names (None: unclaimed)
    blocks: dict[str, str | None]
    handles: set[str]


async def ipam_state(ds: Datastore) -> IpamState:
    state = IpamState({}, {}, {}, set())
    for kv in (await ds.list(keys.block_prefix(4))).items:
        block = Block.from_bytes(kv.value)
        state.blocks[str(block.cidr)] = block.affine_node
        for alloc in block.all_allocations():
            state.allocations[str(alloc.ip)] = (alloc.handle_id, alloc.attributes.get("node"))
    for kv in (await ds.list(keys.HOST_PREFIX)).items:
        node, cidr = keys.parse_affinity_key(kv.key)
        state.affinities.setdefault(node, set()).add(str(cidr))
    for kv in (await ds.list(keys.HANDLE_PREFIX)).items:
        state.handles.add(keys.handle_id_from_key(kv.key))
    return state
