"""What the kernel of one node must hold for the overlay, computed from a VxlanView.

Pure: no I/O, so it is tested without a kernel. With no encapsulating pool the intent is empty
(no device, no routes): a cluster without an overlay gets nothing created.

Two encapsulations share it: VXLAN (vxlanMode) and IPIP (ipipMode; only when the kernel can
make an ipip device, which the caller says). A remote node's block in a pool is reached one
of three ways:
- VXLAN: `<block> via <remote VTEP> dev vxlan.calico onlink`, with a permanent neighbour and
  FDB entry for the remote VTEP (Always, or CrossSubnet towards a node outside this node's
  subnet);
- IPIP: `<block> via <remote node address> dev tunl0 onlink` (likewise);
- direct: `<block> via <remote node address>` on the uplink, unencapsulated (CrossSubnet
  towards a node inside this node's subnet, as Calico's Felix does: the underlay can carry
  pod addresses between nodes on one L2 segment, so no overhead is paid there).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from services.felix.vxlan.felixconfig import FelixConfig, effective
from services.felix.vxlan.view import (
    ENCAP_CROSS_SUBNET,
    ENCAP_MODES,
    NodeVtep,
    PoolEncap,
    VxlanView,
)

DEVICE = "vxlan.calico"
VNI = 4096
PORT = 4789
OVERHEAD = 50  # VXLAN over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
IPIP_DEVICE = "tunl0"
IPIP_OVERHEAD = 20  # the outer IPv4 header
FALLBACK_MTU = 1500


@dataclass(frozen=True, slots=True)
class DeviceIntent:
    local: str  # this node's address: the outer source
    vtep_ip: str
    vtep_mac: str
    mtu: int


@dataclass(frozen=True, slots=True)
class IpipDeviceIntent:
    address: str  # this node's IPIP tunnel address (/32 on tunl0)
    mtu: int


@dataclass(frozen=True, slots=True)
class RouteIntent:
    via: str  # the next hop: a remote VTEP, or a remote node's address for a direct route
    device: str | None  # the overlay device (onlink); None: the uplink, a direct route


@dataclass(slots=True)
class OverlayIntent:
    local: str | None = None  # this node's address: the uplink is the interface holding it
    device: DeviceIntent | None = None  # vxlan.calico
    ipip: IpipDeviceIntent | None = None  # tunl0
    routes: dict[str, RouteIntent] = field(default_factory=dict)  # block CIDR -> next hop
    neighbours: dict[str, str] = field(default_factory=dict)  # remote VTEP address -> its MAC
    fdb: dict[str, str] = field(default_factory=dict)  # remote VTEP MAC -> remote node address
    # The veth MTU for new pods: the smallest of the enabled encapsulations', else the detected
    # uplink MTU (an explicit --mtu/FELIX_VETHMTU overrides it in daemon.py).
    pod_mtu: int = FALLBACK_MTU


def same_subnet(me: NodeVtep, remote: NodeVtep) -> bool:
    """Whether `remote`'s address is inside this node's subnet (its ipv4Address prefix)."""
    if me.subnet is None or remote.address is None:
        return False
    return ipaddress.IPv4Address(remote.address) in me.subnet


def pool_of(cidr: ipaddress.IPv4Network, pools: list[PoolEncap]) -> PoolEncap | None:
    """The most specific of `pools` holding `cidr` (a block, or a /32)."""
    holding = [p for p in pools if p.cidr.version == 4 and cidr.subnet_of(p.cidr)]
    return max(holding, key=lambda p: p.cidr.prefixlen, default=None)


def tunnel_pools(pools: list[PoolEncap], what: str) -> tuple[tuple[str, ...], str]:
    """The CIDRs of `pools` (one encapsulation's) a tunnel address may come from (allowedUses
    has Tunnel), and why there is none to take when there are such pools but none allows it."""
    allowed = tuple(sorted(str(p.cidr) for p in pools if p.allows_tunnel))
    if pools and not allowed:
        return allowed, f"no {what} pool allows Tunnel (allowedUses): no tunnel address"
    return allowed, ""


def vtep_pools(view: VxlanView) -> tuple[tuple[str, ...], str]:
    """The pools this node's VTEP address may come from, or why none."""
    return tunnel_pools(view.vxlan_pools(), "VXLAN")


def vxlan_mtu(config: FelixConfig, detected_mtu: int) -> int:
    """vxlan.calico's MTU: FelixConfiguration vxlanMTU, else the detected MTU less VXLAN's."""
    return config.vxlan_mtu or detected_mtu - OVERHEAD


def ipip_mtu(config: FelixConfig, detected_mtu: int) -> int:
    """tunl0's MTU: FelixConfiguration ipipMTU, else the detected MTU less the outer header."""
    return config.ipip_mtu or detected_mtu - IPIP_OVERHEAD


def compute(
    view: VxlanView,
    node: str,
    detected_mtu: int = FALLBACK_MTU,
    ipip_supported: bool = True,
) -> OverlayIntent:
    """`detected_mtu`: the uplinks' MTU (FelixConfiguration mtuIfacePattern, kernel.py);
    `ipip_supported`: whether this kernel can make an ipip device (without, IPIP pools get
    nothing: no device, no routes, no say in the pod MTU)."""
    me = view.nodes.get(node)
    config = effective(view.felix_configs, node)
    vxlan_pools = view.vxlan_pools()
    ipip_pools = view.ipip_pools() if ipip_supported else []
    encap_mtus = [vxlan_mtu(config, detected_mtu)] if vxlan_pools else []
    encap_mtus += [ipip_mtu(config, detected_mtu)] if ipip_pools else []
    intent = OverlayIntent(pod_mtu=min(encap_mtus, default=detected_mtu))
    if not encap_mtus or me is None or not me.address:
        return intent  # no overlay, or this node's address is not known yet
    intent.local = me.address
    if vxlan_pools and me.vtep_ip and me.vtep_mac:
        mtu = vxlan_mtu(config, detected_mtu)
        intent.device = DeviceIntent(me.address, me.vtep_ip, me.vtep_mac, mtu)
    if ipip_pools and me.ipip_ip:
        intent.ipip = IpipDeviceIntent(me.ipip_ip, ipip_mtu(config, detected_mtu))
    pools = vxlan_pools + ipip_pools
    for block in view.blocks.values():
        if block.node is None or block.node == node:
            continue
        _route(intent, me, str(block.cidr), pool_of(block.cidr, pools), view.nodes.get(block.node))
    _borrowed_routes(intent, view, me, pools)
    return intent


def _route(
    intent: OverlayIntent,
    me: NodeVtep,
    cidr: str,
    pool: PoolEncap | None,
    remote: NodeVtep | None,
) -> None:
    """The route of `cidr` (a block or a /32) to `remote`, as `pool`'s mode says."""
    if pool is None or remote is None or not remote.address:
        return
    vxlan = pool.vxlan_mode in ENCAP_MODES
    mode = pool.vxlan_mode if vxlan else pool.ipip_mode
    if mode == ENCAP_CROSS_SUBNET and same_subnet(me, remote):
        intent.routes[cidr] = RouteIntent(remote.address, None)
    elif vxlan:
        _vxlan_route(intent, cidr, remote)
    elif intent.ipip is not None:
        intent.routes[cidr] = RouteIntent(remote.address, IPIP_DEVICE)


def _borrowed_routes(
    intent: OverlayIntent, view: VxlanView, me: NodeVtep, pools: list[PoolEncap]
) -> None:
    """A /32 to each remote pod whose address comes from a block affine to another node than
    its own (IPAM borrowed it): the block's route would send its traffic to the wrong node.
    Local pods have their own /32 to the veth already."""
    if not view.workloads:
        return
    owners = {b.cidr: b.node for b in view.blocks.values()}
    prefixlens = {cidr.prefixlen for cidr in owners}
    for workload in view.workloads.values():
        if workload.node == me.name:
            continue
        for ip in workload.ips:
            block = next(
                (
                    cidr
                    for plen in prefixlens
                    if (cidr := ipaddress.IPv4Network(f"{ip}/{plen}", strict=False)) in owners
                ),
                None,
            )
            if block is None or owners[block] == workload.node:
                continue  # the block's own route covers it (or no block holds it)
            host = ipaddress.IPv4Network(f"{ip}/32")
            _route(intent, me, str(host), pool_of(host, pools), view.nodes.get(workload.node))


def _vxlan_route(intent: OverlayIntent, cidr: str, remote: NodeVtep) -> None:
    if intent.device is None or not (remote.vtep_ip and remote.vtep_mac and remote.address):
        return  # a VTEP is not published yet: no route rather than a black hole
    intent.routes[cidr] = RouteIntent(remote.vtep_ip, DEVICE)
    intent.neighbours[remote.vtep_ip] = remote.vtep_mac
    intent.fdb[remote.vtep_mac] = remote.address
