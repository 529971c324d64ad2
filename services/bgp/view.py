"""ClusterView: what the "bgp" syncer delivered, parsed into the few facts BGP needs.

Every value is parsed once, when it arrives: resources are validated (so the intent sees
normalised specs, and an object written past calicoctl that does not validate is ignored with
a log naming the field), IPAM blocks are reduced to their CIDR, affinity and the addresses other
nodes hold in them. A value that does not parse counts as absent: the view never holds half an
object.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from libcalico.datastore.keys import (
    GROUP_CALICO,
    IPAM_HOST_PREFIX,
    RESOURCE_PREFIX,
    parse_ipam_affinity_key,
    parse_ipam_block_key,
    parse_resource_key,
)
from libcalico.ipam_block import affine_node
from libcalico.resources.invalid import InvalidObjects
from libcalico.resources.validation import validate
from libcalico.syncer.api import Delete, InSync, SyncerUpdate, Update
from libcalico.syncer.tables import put

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AFFINITY_CONFIRMED = "confirmed"
# IPPool vxlanMode / ipipMode values under which Felix, not BIRD, routes the pool's blocks.
ENCAP_MODES_FELIX_ROUTES = ("Always", "CrossSubnet")
_BLOCK_PREFIX = "/calico/ipam/v2/assignment/"

# The resource kinds BGP reads, by the plural in their keys.
NODES = "nodes"
BGP_CONFIGURATIONS = "bgpconfigurations"
BGP_PEERS = "bgppeers"
BGP_FILTERS = "bgpfilters"
IP_POOLS = "ippools"
_KINDS = {
    NODES: "Node",
    BGP_CONFIGURATIONS: "BGPConfiguration",
    BGP_PEERS: "BGPPeer",
    BGP_FILTERS: "BGPFilter",
    IP_POOLS: "IPPool",
}


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str]
    ipv4_address: str | None  # as in spec.bgp.ipv4Address: "10.66.0.11/24"
    as_number: int | None
    rr_cluster_id: str | None
    ipv4: str | None = None  # the bare address ("10.66.0.11"), parsed once


@dataclass(frozen=True, slots=True)
class PoolInfo:
    name: str
    cidr: IPNetwork
    disabled: bool
    disable_bgp_export: bool
    vxlan_mode: str = "Never"  # spec.vxlanMode: Never | Always | CrossSubnet
    ipip_mode: str = "Never"  # spec.ipipMode: Never | Always | CrossSubnet

    @property
    def exported(self) -> bool:
        return not (self.disabled or self.disable_bgp_export)

    @property
    def encapsulated(self) -> bool:
        """VXLAN or IPIP (Always or CrossSubnet): Felix programs the routes to this pool's
        blocks on other nodes, so BIRD must not put its own there."""
        modes = (self.vxlan_mode, self.ipip_mode)
        return any(mode in ENCAP_MODES_FELIX_ROUTES for mode in modes)


@dataclass(frozen=True, slots=True)
class BlockInfo:
    cidr: IPNetwork
    affine_node: str | None  # from the block's "affinity": "host:<node>"
    # Node -> the addresses in this block allocated to it, for nodes other than the affine one
    # (borrowed addresses; attributes[i].secondary.node names the node holding the address).
    borrowers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def parse_block(raw: bytes) -> BlockInfo:
    """The facts BGP needs from a block's JSON (ValueError/KeyError/TypeError if malformed)."""
    data = json.loads(raw)
    cidr = ipaddress.ip_network(data["cidr"])
    affine = affine_node(data.get("affinity"))
    attributes = data.get("attributes") or []
    holders: list[str | None] = [((a or {}).get("secondary") or {}).get("node") for a in attributes]
    borrowed: dict[str, list[str]] = {}
    base = int(cidr.network_address)
    for ordinal, index in enumerate(data.get("allocations") or []):
        if index is None:
            continue
        holder = holders[index] if 0 <= index < len(holders) else None
        if holder and holder != affine:
            address = ipaddress.ip_address(base + ordinal)
            borrowed.setdefault(holder, []).append(str(address))
    return BlockInfo(cidr, affine, {n: tuple(a) for n, a in borrowed.items()})


def _labels(meta: Mapping[str, Any]) -> dict[str, str]:
    return dict(meta.get("labels") or {})


def parse_node(obj: Mapping[str, Any]) -> NodeInfo:
    bgp = obj.get("spec", {}).get("bgp") or {}
    address = bgp.get("ipv4Address") or None
    return NodeInfo(
        name=obj["metadata"]["name"],
        labels=_labels(obj["metadata"]),
        ipv4_address=address,
        as_number=bgp.get("asNumber"),
        rr_cluster_id=bgp.get("routeReflectorClusterID") or None,
        ipv4=str(ipaddress.ip_interface(address).ip) if address else None,
    )


def parse_pool(obj: Mapping[str, Any]) -> PoolInfo:
    spec = obj["spec"]
    return PoolInfo(
        name=obj["metadata"]["name"],
        cidr=ipaddress.ip_network(spec["cidr"], strict=False),
        disabled=bool(spec.get("disabled", False)),
        disable_bgp_export=bool(spec.get("disableBGPExport", False)),
        # Validation fills both modes in ("Never" when absent); the default covers a view
        # built from unvalidated specs (tests, synthetic clusters).
        vxlan_mode=str(spec.get("vxlanMode") or "Never"),
        ipip_mode=str(spec.get("ipipMode") or "Never"),
    )


class ClusterView:
    """The BGP-relevant datastore state; `apply(batch)` keeps it current."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.bgp_configurations: dict[str, dict[str, Any]] = {}  # name -> spec
        self.bgp_peers: dict[str, dict[str, Any]] = {}  # name -> spec
        self.bgp_filters: dict[str, dict[str, Any]] = {}  # name -> spec
        self.pools: dict[str, PoolInfo] = {}
        self.blocks: dict[str, BlockInfo] = {}  # key -> block
        self.affinities: dict[tuple[str, str], str] = {}  # (node, cidr) -> state
        self.in_sync = False
        self.revision = 0  # bumped on every change that reached the view
        self._invalid = InvalidObjects(log, "calico-bgpd")

    # -- updates ---------------------------------------------------------------------------

    def apply(self, batch: Iterable[SyncerUpdate]) -> bool:
        """Apply a syncer batch; True when anything changed (or InSync arrived)."""
        changed = False
        for update in batch:
            if isinstance(update, InSync):
                changed = changed or not self.in_sync
                self.in_sync = True
            elif isinstance(update, Update):
                changed = self._put(update.key, update.value) or changed
            elif isinstance(update, Delete):
                changed = self._put(update.key, None) or changed
        if changed:
            self.revision += 1
        return changed

    def _put(self, key: str, value: bytes | None) -> bool:
        try:
            if key.startswith(RESOURCE_PREFIX):
                return self._put_resource(key, value)
            if key.startswith(_BLOCK_PREFIX):
                return self._put_block(key, value)
            if key.startswith(IPAM_HOST_PREFIX):
                return self._put_affinity(key, value)
        except ValueError as exc:
            log.warning("ignoring bad key %s: %s", key, exc)
        return False

    def _put_resource(self, key: str, value: bytes | None) -> bool:
        rkey = parse_resource_key(key)
        if rkey.group != GROUP_CALICO or rkey.plural not in _KINDS:
            return False
        obj = None if value is None else self._validated(key, rkey.plural, value)
        name = rkey.name
        if rkey.plural == NODES:
            return put(self.nodes, name, None if obj is None else parse_node(obj))
        if rkey.plural == IP_POOLS:
            return put(self.pools, name, None if obj is None else parse_pool(obj))
        table = {
            BGP_CONFIGURATIONS: self.bgp_configurations,
            BGP_PEERS: self.bgp_peers,
            BGP_FILTERS: self.bgp_filters,
        }[rkey.plural]
        return put(table, name, None if obj is None else obj.get("spec") or {})

    def _validated(self, key: str, plural: str, value: bytes) -> dict[str, Any] | None:
        try:
            obj = json.loads(value)
            if isinstance(obj, dict):
                # Objects written straight to the datastore may lack apiVersion/kind.
                obj.setdefault("apiVersion", "projectcalico.org/v3")
                obj.setdefault("kind", _KINDS[plural])
            validated = validate(obj)
        except ValueError as exc:  # ValidationError included
            self._invalid.skipped(key, value, exc)
            return None
        self._invalid.usable(key)
        return validated

    def _put_block(self, key: str, value: bytes | None) -> bool:
        parse_ipam_block_key(key)  # ValueError for a key that is not a block's
        block = None
        if value is not None:
            try:
                block = parse_block(value)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self._invalid.skipped(key, value, exc)
        return put(self.blocks, key, block)

    def _put_affinity(self, key: str, value: bytes | None) -> bool:
        affinity = parse_ipam_affinity_key(key)
        state = None
        if value is not None:
            try:
                data = json.loads(value) if value else {}
                state = str(data.get("state") or AFFINITY_CONFIRMED)
                if data.get("deleted"):
                    state = None
            except (ValueError, AttributeError) as exc:
                log.warning("ignoring malformed IPAM affinity %s: %s", key, exc)
        return put(self.affinities, (affinity.node, affinity.cidr), state)

    # -- queries ---------------------------------------------------------------------------

    def merged_bgp_configuration(self, node: str) -> dict[str, Any]:
        """BGPConfiguration "default" with "node.<node>" fields laid over it (Calico's naming
        for per-node configuration)."""
        merged = dict(self.bgp_configurations.get("default") or {})
        merged.update(self.bgp_configurations.get(f"node.{node}") or {})
        return merged

    def affinity_confirmed(self, node: str, cidr: str) -> bool:
        return self.affinities.get((node, cidr)) == AFFINITY_CONFIRMED
