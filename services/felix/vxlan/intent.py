"""What the kernel of one node must hold for the overlay, computed from a VxlanView.

Pure: no I/O, so it is tested without a kernel. With no encapsulating pool the intent is empty
(no device, no routes): a cluster without an overlay gets nothing created.

A remote node's block in a pool is reached one of two ways:
- encapsulated: `<block> via <remote VTEP> dev vxlan.calico onlink`, with a permanent
  neighbour and FDB entry for the remote VTEP (vxlanMode Always, or CrossSubnet towards a
  node outside this node's subnet);
- direct: `<block> via <remote node address>` on the uplink, unencapsulated (CrossSubnet
  towards a node inside this node's subnet, as Calico's Felix does: the underlay can carry
  pod addresses between nodes on one L2 segment, so no overhead is paid there).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from services.felix.vxlan.view import (
    ENCAP_CROSS_SUBNET,
    BlockOwner,
    NodeVtep,
    PoolEncap,
    VxlanView,
)

DEVICE = "vxlan.calico"
VNI = 4096
PORT = 4789
OVERHEAD = 50  # VXLAN over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


@dataclass(frozen=True, slots=True)
class DeviceIntent:
    local: str  # this node's address: the outer source
    vtep_ip: str
    vtep_mac: str


@dataclass(frozen=True, slots=True)
class RouteIntent:
    via: str  # the next hop: a remote VTEP, or a remote node's address for a direct route
    device: str | None  # the overlay device (onlink); None: the uplink, a direct route


@dataclass(slots=True)
class VxlanIntent:
    local: str | None = None  # this node's address: the uplink is the interface holding it
    device: DeviceIntent | None = None
    routes: dict[str, RouteIntent] = field(default_factory=dict)  # block CIDR -> next hop
    neighbours: dict[str, str] = field(default_factory=dict)  # remote VTEP address -> its MAC
    fdb: dict[str, str] = field(default_factory=dict)  # remote VTEP MAC -> remote node address


def same_subnet(me: NodeVtep, remote: NodeVtep) -> bool:
    """Whether `remote`'s address is inside this node's subnet (its ipv4Address prefix)."""
    if me.subnet is None or remote.address is None:
        return False
    return ipaddress.IPv4Address(remote.address) in me.subnet


def pool_of(block: BlockOwner, pools: list[PoolEncap]) -> PoolEncap | None:
    """The most specific of `pools` holding `block`."""
    holding = [p for p in pools if p.cidr.version == 4 and block.cidr.subnet_of(p.cidr)]
    return max(holding, key=lambda p: p.cidr.prefixlen, default=None)


def vtep_pools(view: VxlanView) -> tuple[tuple[str, ...], str]:
    """The CIDRs this node's VTEP address may come from (VXLAN pools whose allowedUses has
    Tunnel), and why there is none to take when VXLAN pools exist but none allows it."""
    vxlan = view.vxlan_pools()
    pools = tuple(sorted(str(p.cidr) for p in vxlan if p.allows_tunnel))
    if vxlan and not pools:
        return pools, "no VXLAN pool allows Tunnel (allowedUses): this node gets no VTEP"
    return pools, ""


def compute(view: VxlanView, node: str) -> VxlanIntent:
    pools = view.vxlan_pools()
    me = view.nodes.get(node)
    intent = VxlanIntent()
    if not pools or me is None or not me.address:
        return intent  # no overlay, or this node's address is not known yet
    intent.local = me.address
    if me.vtep_ip and me.vtep_mac:
        intent.device = DeviceIntent(me.address, me.vtep_ip, me.vtep_mac)
    for block in view.blocks.values():
        if block.node is None or block.node == node:
            continue
        pool = pool_of(block, pools)
        remote = view.nodes.get(block.node)
        if pool is None or remote is None or not remote.address:
            continue
        cidr = str(block.cidr)
        if pool.vxlan_mode == ENCAP_CROSS_SUBNET and same_subnet(me, remote):
            intent.routes[cidr] = RouteIntent(remote.address, None)
            continue
        if intent.device is None or not (remote.vtep_ip and remote.vtep_mac):
            continue  # a VTEP is not published yet: no route rather than a black hole
        intent.routes[cidr] = RouteIntent(remote.vtep_ip, DEVICE)
        intent.neighbours[remote.vtep_ip] = remote.vtep_mac
        intent.fdb[remote.vtep_mac] = remote.address
    return intent
