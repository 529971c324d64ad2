"""This node's VTEP: an address from a VXLAN pool and a stable MAC, published on its Node.

In Calico this is calico-node's tunnel-address allocator, running beside Felix; here Felix
does it before it programs the device, by asking this node's calico-ipamd over its Unix socket
(CALICO_IPAM_SOCKET, as the CNI plugin does) with Calico's handle `vxlan-tunnel-addr-<node>`,
so `calicoctl ipam` shows who holds the address and a restart finds and keeps it. IPAM stays
one service: Felix holds no allocator of its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from libcalico.datastore import Datastore
from libcalico.resources import ResourceClient, ResourceNotFoundError
from libcalico.resources.client import ResourceConflictError
from libcalico.runtime import open_channel

log = logging.getLogger(__name__)

HANDLE_PREFIX = "vxlan-tunnel-addr-"
ADDRESS_FIELD = "ipv4VXLANTunnelAddr"
MAC_FIELD = "vxlanTunnelMACAddr"
ATTR_TYPE = "vxlanTunnelAddress"
_WRITE_ATTEMPTS = 5


def handle_of(node: str) -> str:
    return HANDLE_PREFIX + node


def vtep_mac(node: str) -> str:
    """A MAC derived from the node name: the same across restarts and re-creations, unicast
    and locally administered (0x02 set, 0x01 clear in the first byte)."""
    raw = bytearray(hashlib.sha256(f"vxlan:{node}".encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def _in_pools(address: str, pools: Sequence[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(p) for p in pools)


async def ensure_vtep(
    datastore: Datastore, ipam_socket: str, node: str, pools: Sequence[str]
) -> dict[str, str]:
    """Make the Node carry a VTEP address from one of `pools` (CIDRs) and its MAC, or carry none
    when `pools` is empty; returns the Node's VTEP fields as they now are ({} for none).

    An address the node already holds under its handle inside a VXLAN pool is kept; anything
    else under the handle is released before a new address is assigned.
    """
    client = ResourceClient(datastore)
    handle = handle_of(node)
    async with open_channel(ipam_socket) as channel:
        ipam = ipam_pb2_grpc.IpamStub(channel)
        reply = await ipam.GetAllocations(ipam_pb2.GetAllocationsRequest(handle_id=handle))
        held = [ip.split("/")[0] for ip in reply.ips]
        keep = next((a for a in held if pools and _in_pools(a, pools)), None)
        if keep is None or len(held) > 1:
            stale = [a for a in held if a != keep]
            if stale:
                log.info("vxlan: releasing tunnel address(es) %s of %s", stale, node)
                await ipam.ReleaseByHandle(ipam_pb2.ReleaseByHandleRequest(handle_id=handle))
                keep = None
        if keep is None and pools:
            assigned = await ipam.AutoAssign(
                ipam_pb2.AutoAssignRequest(
                    num_ipv4=1,
                    handle_id=handle,
                    attributes={"type": ATTR_TYPE},
                    ipv4_pools=list(pools),
                )
            )
            keep = assigned.ipv4[0].split("/")[0]
            log.info("vxlan: %s got tunnel address %s", node, keep)
    fields = {ADDRESS_FIELD: keep, MAC_FIELD: vtep_mac(node)} if keep else {}
    await _publish(client, node, fields)
    return fields


async def _publish(client: ResourceClient, node: str, fields: dict[str, str]) -> None:
    """Write the VTEP fields on the Node (compare-and-swap; retried when someone else wrote)."""
    for _ in range(_WRITE_ATTEMPTS):
        try:
            obj: dict[str, Any] = await client.get("Node", node)
        except ResourceNotFoundError:
            log.warning("vxlan: Node %s does not exist; its VTEP is not published", node)
            return
        spec = obj.setdefault("spec", {})
        current = {k: spec[k] for k in (ADDRESS_FIELD, MAC_FIELD) if spec.get(k)}
        if current == fields:
            return
        for key in (ADDRESS_FIELD, MAC_FIELD):
            spec.pop(key, None)
        spec.update(fields)
        try:
            await client.update(obj)
            return
        except ResourceConflictError:
            continue
    raise RuntimeError(f"could not write the VTEP of Node {node}: it kept changing")
