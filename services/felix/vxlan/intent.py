"""What the kernel of one node must hold for the VXLAN overlay, computed from a VxlanView.

Pure: no I/O, so it is tested without a kernel. With no VXLAN pool the intent is empty (no
device, no routes): a cluster without VXLAN gets nothing created.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.felix.vxlan.view import VxlanView

DEVICE = "vxlan.calico"
VNI = 4096
PORT = 4789
OVERHEAD = 50  # VXLAN over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


@dataclass(frozen=True, slots=True)
class DeviceIntent:
    local: str  # this node's address: the outer source
    vtep_ip: str
    vtep_mac: str


@dataclass(slots=True)
class VxlanIntent:
    device: DeviceIntent | None = None
    routes: dict[str, str] = field(default_factory=dict)  # block CIDR -> remote VTEP address
    neighbours: dict[str, str] = field(default_factory=dict)  # remote VTEP address -> its MAC
    fdb: dict[str, str] = field(default_factory=dict)  # remote VTEP MAC -> remote node address


def compute(view: VxlanView, node: str) -> VxlanIntent:
    pools = view.vxlan_pools()
    me = view.nodes.get(node)
    intent = VxlanIntent()
    if not pools or me is None or not (me.address and me.vtep_ip and me.vtep_mac):
        return intent  # no overlay, or this node's VTEP is not known yet
    intent.device = DeviceIntent(me.address, me.vtep_ip, me.vtep_mac)
    for block in view.blocks.values():
        if block.node is None or block.node == node:
            continue
        if not any(block.cidr.subnet_of(p.cidr) for p in pools):  # type: ignore[arg-type]
            continue
        remote = view.nodes.get(block.node)
        if remote is None or not (remote.address and remote.vtep_ip and remote.vtep_mac):
            continue  # its VTEP is not published yet: no route rather than a black hole
        intent.routes[str(block.cidr)] = remote.vtep_ip
        intent.neighbours[remote.vtep_ip] = remote.vtep_mac
        intent.fdb[remote.vtep_mac] = remote.address
    return intent
