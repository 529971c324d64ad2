"""Datastore content made up in memory: for tests and benchmarks that need a cluster of a given
size without a datastore.

`synthetic_updates(...)` returns the syncer updates (key, JSON value) a datastore with that
content would deliver; `synthetic_view(...)` feeds them through ClusterView.apply, the same
path the daemon uses. Nodes are node-0 (this node) .. node-<peers>, at 10.<a>.<b>.<c>/16
addresses; blocks are /26s of 10.128.0.0/9 (one IPPool), dealt round-robin over the nodes
unless `own_blocks` says how many this node gets first.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from libcalico.datastore.keys import (
    GROUP_CALICO,
    ipam_affinity_key,
    ipam_block_key,
    resource_key,
)
from libcalico.syncer.api import InSync, SyncerUpdate, Update
from services.bgp.view import ClusterView

POOL_CIDR = "10.128.0.0/9"
NODE_NET = ipaddress.ip_network("10.0.0.0/9")
BLOCK_PREFIX = 26


def node_name(index: int) -> str:
    return f"node-{index}"


def node_address(index: int) -> str:
    """node-i's BGP address: the i+1-th host of 10.0.0.0/9, with the /9 prefix."""
    return f"{NODE_NET.network_address + index + 1}/{NODE_NET.prefixlen}"


def resource_update(
    plural: str, kind: str, name: str, spec: Mapping[str, Any], **meta: Any
) -> Update:
    obj = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name, **meta},
        "spec": dict(spec),
    }
    return Update(resource_key(GROUP_CALICO, plural, name), json.dumps(obj).encode(), 1)


def block_updates(
    cidr: str, node: str, allocations: Mapping[int, str] | None = None
) -> list[Update]:
    """A block affine to `node` (with a confirmed affinity); `allocations` maps ordinals to the
    node holding that address (another node's name makes it a borrowed address)."""
    network = ipaddress.ip_network(cidr)
    holders = sorted(set((allocations or {}).values()))
    slots: list[int | None] = [None] * network.num_addresses
    for ordinal, holder in (allocations or {}).items():
        slots[ordinal] = holders.index(holder)
    block = {
        "cidr": cidr,
        "affinity": f"host:{node}",
        "allocations": slots,
        "unallocated": [i for i, s in enumerate(slots) if s is None],
        "attributes": [{"handle_id": f"h-{h}", "secondary": {"node": h}} for h in holders],
        "deleted": False,
    }
    affinity = {"state": "confirmed", "deleted": False}
    return [
        Update(ipam_block_key(cidr), json.dumps(block).encode(), 1),
        Update(ipam_affinity_key(node, cidr), json.dumps(affinity).encode(), 1),
    ]


def synthetic_updates(
    peers: int,
    blocks: int,
    *,
    own_blocks: int | None = None,
    mesh: bool = True,
) -> list[SyncerUpdate]:
    """A cluster of `peers` + 1 nodes (node-0 is "this" node) and `blocks` blocks."""
    updates: list[SyncerUpdate] = [
        resource_update("ippools", "IPPool", "default", {"cidr": POOL_CIDR, "blockSize": 26}),
        resource_update(
            "bgpconfigurations", "BGPConfiguration", "default", {"nodeToNodeMeshEnabled": mesh}
        ),
    ]
    for i in range(peers + 1):
        spec = {"bgp": {"ipv4Address": node_address(i)}}
        updates.append(resource_update("nodes", "Node", node_name(i), spec))
    subnets = ipaddress.ip_network(POOL_CIDR).subnets(new_prefix=BLOCK_PREFIX)
    for n in range(blocks):
        cidr = str(next(subnets))
        if own_blocks is not None:
            owner = 0 if n < own_blocks else 1 + (n - own_blocks) % max(peers, 1)
        else:
            owner = n % (peers + 1)
        updates.extend(block_updates(cidr, node_name(owner), {0: node_name(owner)}))
    updates.append(InSync())
    return updates


def synthetic_view(peers: int, blocks: int, **kwargs: Any) -> ClusterView:
    """A ClusterView as the daemon would hold it for such a cluster."""
    view = ClusterView()
    view.apply(synthetic_updates(peers, blocks, **kwargs))
    return view
