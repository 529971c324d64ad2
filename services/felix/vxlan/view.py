"""VxlanView: the nodes, pools, IPAM blocks and FelixConfigurations the Felix syncer
delivered, reduced to what the overlay needs. A value that does not parse counts as absent
(logged with its key): the view never holds half an object.

Routing follows each block's own `affinity` field ("host:<node>"), as Calico's Felix does; the
separate affinity keys are not needed here.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.keys import (
    GROUP_CALICO,
    RESOURCE_PREFIX,
    ipam_block_prefix,
    parse_resource_key,
)
from libcalico.ipam_block import affine_node
from libcalico.resources.invalid import InvalidObjects
from libcalico.syncer.api import Delete, InSync, SyncerUpdate, Update
from libcalico.syncer.tables import put
from services.felix.vxlan.felixconfig import FelixConfig, parse_felix_config

log = logging.getLogger(__name__)

_BLOCK_PREFIX_V4 = ipam_block_prefix(4)
ENCAP_NEVER = "Never"
ENCAP_ALWAYS = "Always"
ENCAP_CROSS_SUBNET = "CrossSubnet"
ENCAP_MODES = (ENCAP_ALWAYS, ENCAP_CROSS_SUBNET)  # the modes that encapsulate at all
USE_TUNNEL = "Tunnel"
DEFAULT_ALLOWED_USES = ("Workload", USE_TUNNEL)  # a pool without allowedUses


@dataclass(frozen=True, slots=True)
class NodeVtep:
    name: str
    address: str | None  # the bare address of spec.bgp.ipv4Address ("10.66.0.11")
    subnet: ipaddress.IPv4Network | None  # that address's network ("10.66.0.0/24"), CrossSubnet
    vtep_ip: str | None  # spec.ipv4VXLANTunnelAddr
    vtep_mac: str | None  # spec.vxlanTunnelMACAddr
    ipip_ip: str | None = None  # spec.ipv4IPIPTunnelAddr: tunl0's address


@dataclass(frozen=True, slots=True)
class PoolEncap:
    name: str
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    vxlan_mode: str
    disabled: bool
    nat_outgoing: bool = False
    ipip_mode: str = ENCAP_NEVER
    allowed_uses: tuple[str, ...] = DEFAULT_ALLOWED_USES

    @property
    def allows_tunnel(self) -> bool:
        """Whether a node's tunnel address (VTEP) may come from this pool."""
        return USE_TUNNEL in self.allowed_uses


@dataclass(frozen=True, slots=True)
class BlockOwner:
    cidr: ipaddress.IPv4Network
    node: str | None


@dataclass(frozen=True, slots=True)
class WorkloadAddresses:
    """Where a workload runs and its IPv4 addresses: what a borrowed address's /32 route
    needs (an address from a block affine to another node than the one the pod is on)."""

    node: str
    ips: tuple[ipaddress.IPv4Address, ...]


def parse_workload(obj: dict[str, Any]) -> WorkloadAddresses | None:
    spec = obj.get("spec") or {}
    node = spec.get("node")
    if not node:
        return None
    ips = tuple(
        iface.ip
        for net in spec.get("ipNetworks") or ()
        if (iface := ipaddress.ip_interface(str(net))).version == 4
    )
    return WorkloadAddresses(str(node), ips) if ips else None


def parse_node(obj: dict[str, Any]) -> NodeVtep:
    spec = obj.get("spec") or {}
    bgp = spec.get("bgp") or {}
    address = bgp.get("ipv4Address") or None
    vtep_ip = spec.get("ipv4VXLANTunnelAddr") or None
    ipip_ip = spec.get("ipv4IPIPTunnelAddr") or None
    vtep_mac = spec.get("vxlanTunnelMACAddr") or None
    interface = ipaddress.IPv4Interface(address) if address else None
    return NodeVtep(
        name=str(obj["metadata"]["name"]),
        address=str(interface.ip) if interface else None,
        subnet=interface.network if interface else None,
        vtep_ip=str(ipaddress.ip_address(vtep_ip)) if vtep_ip else None,
        vtep_mac=str(vtep_mac).lower() if vtep_mac else None,
        ipip_ip=str(ipaddress.IPv4Address(ipip_ip)) if ipip_ip else None,
    )


def parse_pool(obj: dict[str, Any]) -> PoolEncap:
    spec = obj["spec"]
    return PoolEncap(
        name=str(obj["metadata"]["name"]),
        cidr=ipaddress.ip_network(spec["cidr"], strict=False),
        vxlan_mode=str(spec.get("vxlanMode") or ENCAP_NEVER),
        disabled=bool(spec.get("disabled", False)),
        nat_outgoing=bool(spec.get("natOutgoing", False)),
        ipip_mode=str(spec.get("ipipMode") or ENCAP_NEVER),
        allowed_uses=tuple(str(u) for u in spec.get("allowedUses") or DEFAULT_ALLOWED_USES),
    )


def parse_block(raw: bytes) -> BlockOwner:
    data = json.loads(raw)
    return BlockOwner(ipaddress.IPv4Network(data["cidr"]), affine_node(data.get("affinity")))


class VxlanView:
    """Nodes, pools, IPv4 blocks and FelixConfigurations by key; `apply(batch)` returns
    whether anything changed."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeVtep] = {}
        self.pools: dict[str, PoolEncap] = {}
        self.blocks: dict[str, BlockOwner] = {}
        self.felix_configs: dict[str, FelixConfig] = {}  # FelixConfiguration name -> fields
        self.workloads: dict[str, WorkloadAddresses] = {}  # WorkloadEndpoint key -> addresses
        self.in_sync = False
        self._invalid = InvalidObjects(log, "felix overlay")

    def apply(self, batch: Iterable[SyncerUpdate]) -> bool:
        changed = False
        for update in batch:
            if isinstance(update, InSync):
                changed = changed or not self.in_sync
                self.in_sync = True
            elif isinstance(update, Update | Delete):
                value = update.value if isinstance(update, Update) else None
                changed = self._put(update.key, value) or changed
        return changed

    def _put(self, key: str, value: bytes | None) -> bool:
        target = self._target(key)
        if target is None:
            return False
        table, name, parse = target
        parsed = None
        if value is not None:
            try:
                parsed = parse(value)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # What cannot be read counts as absent: any earlier value of the key goes.
                self._invalid.skipped(key, value, exc)
        return put(table, name, parsed)

    def _target(self, key: str) -> tuple[dict[str, Any], str, Callable[[bytes], Any]] | None:
        """The table a key belongs in, its name there and the parser of its value."""
        if key.startswith(_BLOCK_PREFIX_V4):
            return self.blocks, key, parse_block
        if not key.startswith(RESOURCE_PREFIX):
            return None
        try:
            rkey = parse_resource_key(key)
        except ValueError:
            return None
        if rkey.group != GROUP_CALICO:
            return None
        if rkey.plural == "nodes":
            return self.nodes, rkey.name, lambda raw: parse_node(json.loads(raw))
        if rkey.plural == "ippools":
            return self.pools, rkey.name, lambda raw: parse_pool(json.loads(raw))
        if rkey.plural == "workloadendpoints":
            return self.workloads, key, lambda raw: parse_workload(json.loads(raw))
        if rkey.plural == "felixconfigurations":
            return self.felix_configs, rkey.name, lambda raw: parse_felix_config(json.loads(raw))
        return None

    def vxlan_pools(self) -> list[PoolEncap]:
        """Enabled IPv4 pools whose traffic between nodes may be VXLAN-encapsulated (Always,
        or CrossSubnet: only towards nodes outside this node's subnet)."""
        return [
            p
            for p in self.pools.values()
            if p.cidr.version == 4 and not p.disabled and p.vxlan_mode in ENCAP_MODES
        ]

    def ipip_pools(self) -> list[PoolEncap]:
        """Enabled IPv4 pools in ipipMode Always or CrossSubnet (and not VXLAN: a pool has one
        encapsulation; should both be set, VXLAN wins, as validation refuses the pair)."""
        return [
            p
            for p in self.pools.values()
            if p.cidr.version == 4
            and not p.disabled
            and p.ipip_mode in ENCAP_MODES
            and p.vxlan_mode not in ENCAP_MODES
        ]
