"""This node's tunnel addresses, published on its Node: the VTEP (an address from a VXLAN
pool, and a stable MAC) and tunl0's address (from an IPIP pool).

In Calico this is calico-node's tunnel-address allocator, running beside Felix; here Felix
does it before it programs the devices, by asking this node's calico-ipamd over its Unix
socket (CALICO_IPAM_SOCKET, as the CNI plugin does) with Calico's handles
`vxlan-tunnel-addr-<node>` / `ipip-tunnel-addr-<node>`, so `calicoctl ipam` shows who holds
the address and a restart finds and keeps it. IPAM stays one service: Felix holds no
allocator of its own. One function serves both encapsulations (`TunnelEncap` says which).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from libcalico.datastore import Datastore
from libcalico.resources import ResourceClient, ResourceNotFoundError
from libcalico.resources.client import ResourceConflictError
from libcalico.runtime import open_channel

log = logging.getLogger(__name__)

_WRITE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class TunnelEncap:
    """Where one encapsulation's tunnel address lives (Calico's names)."""

    name: str  # for logs
    handle_prefix: str  # IPAM handle: this + node name
    address_field: str  # Node.spec field
    attr_type: str  # the allocation's "type" attribute
    mac_field: str | None = None  # Node.spec field of the device's MAC, if it has one

    def handle(self, node: str) -> str:
        return self.handle_prefix + node

    def fields(self, node: str, address: str | None) -> dict[str, str]:
        """The Node fields for `address` (none without one)."""
        if address is None:
            return {}
        out = {self.address_field: address}
        if self.mac_field:
            out[self.mac_field] = vtep_mac(node)
        return out


VXLAN = TunnelEncap(
    "vxlan", "vxlan-tunnel-addr-", "ipv4VXLANTunnelAddr", "vxlanTunnelAddress", "vxlanTunnelMACAddr"
)
IPIP = TunnelEncap("ipip", "ipip-tunnel-addr-", "ipv4IPIPTunnelAddr", "ipipTunnelAddress")


def vtep_mac(node: str) -> str:
    """A MAC derived from the node name: the same across restarts and re-creations, unicast
    and locally administered (0x02 set, 0x01 clear in the first byte)."""
    raw = bytearray(hashlib.sha256(f"vxlan:{node}".encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def _in_pools(address: str, pools: Sequence[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(p) for p in pools)


async def ensure_tunnel_addr(
    datastore: Datastore,
    ipam_socket: str,
    node: str,
    pools: Sequence[str],
    encap: TunnelEncap = VXLAN,
) -> dict[str, str]:
    """Make the Node carry an `encap` tunnel address from one of `pools` (CIDRs) (and the MAC,
    for VXLAN), or carry none when `pools` is empty; returns the Node's fields as they now are
    ({} for none).

    An address the node already holds under its handle inside one of `pools` is kept; anything
    else under the handle is released before a new address is assigned.
    """
    client = ResourceClient(datastore)
    handle = encap.handle(node)
    async with open_channel(ipam_socket) as channel:
        ipam = ipam_pb2_grpc.IpamStub(channel)
        reply = await ipam.GetAllocations(ipam_pb2.GetAllocationsRequest(handle_id=handle))
        held = [ip.split("/")[0] for ip in reply.ips]
        keep = next((a for a in held if pools and _in_pools(a, pools)), None)
        if keep is None or len(held) > 1:
            stale = [a for a in held if a != keep]
            if stale:
                log.info("%s: releasing tunnel address(es) %s of %s", encap.name, stale, node)
                await ipam.ReleaseByHandle(ipam_pb2.ReleaseByHandleRequest(handle_id=handle))
                keep = None
        if keep is None and pools:
            assigned = await ipam.AutoAssign(
                ipam_pb2.AutoAssignRequest(
                    num_ipv4=1,
                    handle_id=handle,
                    attributes={"type": encap.attr_type},
                    ipv4_pools=list(pools),
                )
            )
            keep = assigned.ipv4[0].split("/")[0]
            log.info("%s: %s got tunnel address %s", encap.name, node, keep)
    fields = encap.fields(node, keep)
    await _publish(client, node, fields, encap)
    return fields


async def _publish(
    client: ResourceClient, node: str, fields: dict[str, str], encap: TunnelEncap
) -> None:
    """Write the tunnel fields on the Node (compare-and-swap; retried when someone else
    wrote)."""
    owned = [k for k in (encap.address_field, encap.mac_field) if k]
    for _ in range(_WRITE_ATTEMPTS):
        try:
            obj: dict[str, Any] = await client.get("Node", node)
        except ResourceNotFoundError:
            log.warning("%s: Node %s does not exist; no tunnel address published", encap.name, node)
            return
        spec = obj.setdefault("spec", {})
        current = {k: spec[k] for k in owned if spec.get(k)}
        if current == fields:
            return
        for key in owned:
            spec.pop(key, None)
        spec.update(fields)
        try:
            await client.update(obj)
            return
        except ResourceConflictError:
            continue
    raise RuntimeError(
        f"could not write the {encap.name} tunnel address of Node {node}: it kept changing"
    )
