"""This node's BGP intent: a pure function of the ClusterView and the node's name.

`build_intent(view, node)` answers: who is this node in BGP (router id, AS, route reflector
cluster), whom does it peer with and how, what does it originate, and which filters and
communities apply. It reads nothing else (no clock, no environment), so the same datastore
state always yields an equal intent and `render` turns an equal intent into the same bytes.

Calico's semantics, in short:
- AS: the Node's spec.bgp.asNumber, else the BGPConfiguration's asNumber, else 64512.
- Configuration: BGPConfiguration "default", overridden field by field by "node.<name>".
- Mesh (nodeToNodeMeshEnabled, default true): a session with every other node that has an
  IPv4 BGP address, except that route reflectors (nodes with routeReflectorClusterID) take no
  part in the mesh, as in Calico.
- BGPPeer: applies to this node when global (no node, no nodeSelector), `node` is this node,
  or nodeSelector matches this node's labels. The peers are peerIP[:port] with asNumber, or
  every node (but this one) matching peerSelector, at its address, port and AS.
- Route reflection: a route reflector peering with a node of another (or no) cluster makes it
  its `rr client`; it reflects learned routes within the IP pools over iBGP.
- Originated: blocks affine to this node (block affinity "host:<me>" and a confirmed
  affinity record), addresses this node borrowed from other nodes' blocks (/32), and the
  configured service prefixes; never anything in a disabled pool or one with
  disableBGPExport (those blocks keep their kernel blackhole but are not advertised).
- Encapsulated pools (vxlanMode or ipipMode Always / CrossSubnet): their blocks are advertised
  as any other, but Felix owns the kernel routes to other nodes' blocks in them (through
  vxlan.calico, or plain for a CrossSubnet neighbour), so the intent names these pools and
  BIRD keeps what it learns within them out of the kernel.
- Kernel routes: BIRD learns the kernel's other routes (the default route through which a
  next hop on another subnet resolves) but none within a pool: the intent lists every pool.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from libcalico.resources.validation.config import duration_seconds, parse_community
from libcalico.selector import SelectorError, matches
from services.bgp.view import ClusterView, NodeInfo, PoolInfo

log = logging.getLogger(__name__)

DEFAULT_AS_NUMBER = 64512
# What may stand inside BIRD's quoted interface patterns: names and globs, never a quote.
INTERFACE_PATTERN_RE = re.compile(r"^[A-Za-z0-9_.:@*?\-]{1,64}$")
DEFAULT_LISTEN_PORT = 179

# Calico's peer types, as `calicoctl node status` prints them.
TYPE_MESH = "node-to-node mesh"
TYPE_GLOBAL = "global"
TYPE_NODE = "node specific"
TYPE_RR_CLIENT = "route reflector client"  # this node reflects routes to the peer
TYPE_RR = "route reflector"  # the peer reflects routes to this node
# Longest first: a description is matched by prefix ("route reflector client" before
# "route reflector").
PEER_TYPES = (TYPE_RR_CLIENT, TYPE_MESH, TYPE_NODE, TYPE_RR, TYPE_GLOBAL)

NEXT_HOP_SELF = "self"
NEXT_HOP_KEEP = "keep"
NEXT_HOP_AUTO = "auto"  # BIRD's default (reflected routes keep their next hop)


@dataclass(frozen=True, slots=True)
class FilterRule:
    action: str  # "Accept" | "Reject"
    cidr: str | None = None
    operator: str | None = None  # Equal | NotEqual | In | NotIn
    min_length: int | None = None
    max_length: int | None = None
    source: str | None = None  # "RemotePeers"
    interface: str | None = None


@dataclass(frozen=True, slots=True)
class BGPFilterIntent:
    name: str
    import_v4: tuple[FilterRule, ...] = ()
    export_v4: tuple[FilterRule, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerIntent:
    protocol: str  # BIRD protocol name: Mesh_10_66_0_12, Node_..., Global_..._port_1790
    address: str
    port: int
    as_number: int
    type: str
    node: str | None = None  # the peer's Node name when it is a cluster node
    rr_client: bool = False  # this node is the peer's route reflector
    reflect: bool = False  # export learned routes within the pools (route reflector, iBGP)
    next_hop: str = NEXT_HOP_SELF
    restart_time: int | None = None  # graceful restart time (s), from maxRestartTime
    filters: tuple[str, ...] = ()  # BGPFilter names, applied in order
    ebgp: bool = False  # the peer's AS differs from this node's


@dataclass(frozen=True, slots=True)
class CommunityIntent:
    """Communities attached to advertised prefixes within `prefix`."""

    prefix: str
    standard: tuple[tuple[int, int], ...] = ()
    large: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class BGPIntent:
    node: str
    router_id: str | None  # None: the node has no IPv4 BGP address, so no sessions
    as_number: int
    listen_port: int = DEFAULT_LISTEN_PORT
    # BGPConfiguration bindMode NodeIP: BIRD listens on the node's address only, not on every
    # address of the host (Calico's default, None, listens on all).
    bind_node_ip: bool = False
    debug: bool = False
    rr_cluster_id: str | None = None
    ignored_interfaces: tuple[str, ...] = ()
    # Own blocks in pools that are advertised: kernel blackhole + advertised.
    blocks: tuple[str, ...] = ()
    # Own blocks in disabled / disableBGPExport pools: kernel blackhole only.
    unadvertised_blocks: tuple[str, ...] = ()
    # Borrowed /32s and service prefixes: advertised only (never exported to the kernel).
    borrowed: tuple[str, ...] = ()
    service_prefixes: tuple[str, ...] = ()
    # Advertised pools' CIDRs: what a route reflector may reflect.
    reflect_pools: tuple[str, ...] = ()
    # Pools with vxlanMode or ipipMode Always / CrossSubnet: Felix programs the routes to
    # their blocks, so BGP-learned routes within them stay out of the kernel (still learned,
    # advertised and reflected).
    felix_routed_pools: tuple[str, ...] = ()
    # Every IPv4 pool's CIDR, plus any block outside all pools (its pool was deleted, pods
    # remain): the kernel routes within these are Felix's (pod /32s, overlay routes) or BIRD's
    # own blackholes, so BIRD's kernel protocol never learns them.
    calico_prefixes: tuple[str, ...] = ()
    peers: tuple[PeerIntent, ...] = ()
    filters: tuple[BGPFilterIntent, ...] = ()
    communities: tuple[CommunityIntent, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def advertised(self) -> tuple[str, ...]:
        """Every prefix this node originates to its peers."""
        return _sorted_prefixes({*self.blocks, *self.borrowed, *self.service_prefixes})

    @property
    def own_blocks(self) -> tuple[str, ...]:
        """Every block affine to this node (each gets a kernel blackhole)."""
        return _sorted_prefixes({*self.blocks, *self.unadvertised_blocks})


# ---- helpers ---------------------------------------------------------------------------------


def _network_key(text: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(text)
    return (net.version, int(net.network_address), net.prefixlen)


def _address_key(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _sorted_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(prefixes), key=_network_key))


def protocol_suffix(address: str, port: int | None = None) -> str:
    """ "10.66.0.12" -> "10_66_0_12"; with a port: "10_66_0_12_port_1790" (Calico's names)."""
    text = address.replace(".", "_").replace(":", "_")
    return f"{text}_port_{port}" if port else text


def _node_as(node: NodeInfo, config: Mapping[str, Any]) -> int:
    if node.as_number:
        return int(node.as_number)
    return int(config.get("asNumber") or DEFAULT_AS_NUMBER)


def _restart_seconds(text: str | None, where: str) -> int | None:
    if not text:
        return None
    try:
        return max(1, round(duration_seconds(text)))
    except ValueError:
        log.warning("%s: ignoring bad duration %r", where, text)
        return None


def _pool_for(pools: Sequence[PoolInfo], network: ipaddress.IPv4Network) -> PoolInfo | None:
    """The most specific IPv4 pool containing `network`."""
    best: PoolInfo | None = None
    for pool in pools:
        if (
            isinstance(pool.cidr, ipaddress.IPv4Network)
            and network.subnet_of(pool.cidr)
            and (best is None or pool.cidr.prefixlen > best.cidr.prefixlen)
        ):
            best = pool
    return best


def _selects(selector: str | None, labels: Mapping[str, str], where: str) -> bool:
    try:
        return matches(selector or "", labels)
    except SelectorError as exc:
        log.warning("%s: ignoring bad selector %r: %s", where, selector, exc)
        return False


def _peer_ip_and_port(text: str) -> tuple[str, int | None]:
    """ "10.0.0.1" / "10.0.0.1:1790" / "[fd00::1]:1790" -> (address, port or None)."""
    if text.startswith("["):
        address, _, port = text[1:].partition("]:")
        return address, int(port)
    if text.count(":") == 1:
        address, _, port = text.partition(":")
        return address, int(port)
    return text, None


# ---- the intent ------------------------------------------------------------------------------


def build_intent(view: ClusterView, node: str) -> BGPIntent:
    """This node's BGP intent from the view (pure: the same view gives an equal intent)."""
    config = view.merged_bgp_configuration(node)
    me = view.nodes.get(node)
    notes: list[str] = []
    pools = sorted(view.pools.values(), key=lambda p: p.name)
    blocks, unadvertised = _own_blocks(view, node, pools)
    common: dict[str, Any] = {
        "node": node,
        "listen_port": int(config.get("listenPort") or DEFAULT_LISTEN_PORT),
        "bind_node_ip": config.get("bindMode") == "NodeIP",
        "debug": config.get("logSeverityScreen") in ("Debug", "Trace"),
        "ignored_interfaces": _interface_patterns(config.get("ignoredInterfaces") or (), notes),
        "blocks": blocks,
        "unadvertised_blocks": unadvertised,
        "borrowed": _borrowed(view, node, pools),
        "service_prefixes": _service_prefixes(config),
        "reflect_pools": _sorted_prefixes(
            str(p.cidr) for p in pools if p.exported and p.cidr.version == 4
        ),
        "felix_routed_pools": _sorted_prefixes(
            str(p.cidr) for p in pools if p.encapsulated and p.cidr.version == 4
        ),
        "calico_prefixes": _calico_prefixes(view, pools),
        "communities": _communities(config),
    }
    if me is None or me.ipv4 is None:
        why = (
            f"node {node} has no Node resource"
            if me is None
            else (f"node {node} has no spec.bgp.ipv4Address")
        )
        notes.append(f"{why}: no BGP sessions, own blocks are only blackholed")
        as_number = int(config.get("asNumber") or DEFAULT_AS_NUMBER)
        return BGPIntent(router_id=None, as_number=as_number, notes=tuple(notes), **common)

    as_number = _node_as(me, config)
    peers = _peers(view, me, as_number, config, notes)
    referenced = {name for peer in peers for name in peer.filters}
    filters = tuple(_filter_intent(name, view.bgp_filters[name]) for name in sorted(referenced))
    return BGPIntent(
        router_id=me.ipv4,
        as_number=as_number,
        rr_cluster_id=me.rr_cluster_id,
        peers=peers,
        filters=filters,
        notes=tuple(notes),
        **common,
    )


def _own_blocks(
    view: ClusterView, node: str, pools: Sequence[PoolInfo]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    advertised: list[str] = []
    unadvertised: list[str] = []
    for block in view.blocks.values():
        if block.affine_node != node or not isinstance(block.cidr, ipaddress.IPv4Network):
            continue
        cidr = str(block.cidr)
        if not view.affinity_confirmed(node, cidr):
            continue  # a claim in progress (pending) or being released: not ours yet/any more
        pool = _pool_for(pools, block.cidr)
        # A block outside every pool (its pool was deleted) still holds live pods: advertise.
        (advertised if pool is None or pool.exported else unadvertised).append(cidr)
    return _sorted_prefixes(advertised), _sorted_prefixes(unadvertised)


def _calico_prefixes(view: ClusterView, pools: Sequence[PoolInfo]) -> tuple[str, ...]:
    found = [str(p.cidr) for p in pools if p.cidr.version == 4]
    for block in view.blocks.values():
        if isinstance(block.cidr, ipaddress.IPv4Network) and _pool_for(pools, block.cidr) is None:
            found.append(str(block.cidr))
    return _sorted_prefixes(found)


def _borrowed(view: ClusterView, node: str, pools: Sequence[PoolInfo]) -> tuple[str, ...]:
    found: list[str] = []
    for block in view.blocks.values():
        addresses = block.borrowers.get(node)
        if not addresses or not isinstance(block.cidr, ipaddress.IPv4Network):
            continue
        pool = _pool_for(pools, block.cidr)
        if pool is not None and not pool.exported:
            continue
        found.extend(f"{a}/32" for a in addresses)
    return _sorted_prefixes(found)


def _interface_patterns(patterns: Iterable[str], notes: list[str]) -> tuple[str, ...]:
    good = set()
    for pattern in patterns:
        if INTERFACE_PATTERN_RE.match(pattern):
            good.add(pattern)
        else:
            notes.append(f"ignoredInterfaces: {pattern!r} is not an interface name or glob")
    return tuple(sorted(good))


def _service_prefixes(config: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    for key in ("serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs"):
        for entry in config.get(key) or ():
            net = ipaddress.ip_network(entry["cidr"], strict=False)
            if net.version == 4:
                found.append(str(net))
    return _sorted_prefixes(found)


def _communities(config: Mapping[str, Any]) -> tuple[CommunityIntent, ...]:
    named = {c["name"]: c["value"] for c in config.get("communities") or ()}
    out: list[CommunityIntent] = []
    for adv in config.get("prefixAdvertisements") or ():
        net = ipaddress.ip_network(adv["cidr"], strict=False)
        if net.version != 4:
            continue
        standard: list[tuple[int, int]] = []
        large: list[tuple[int, int, int]] = []
        for ref in adv.get("communities") or ():
            value = parse_community(named.get(ref, ref))
            if value is None:
                log.warning("prefixAdvertisements %s: unknown community %r", net, ref)
            elif len(value) == 2:
                standard.append((value[0], value[1]))
            else:
                large.append((value[0], value[1], value[2]))
        if standard or large:
            out.append(CommunityIntent(str(net), tuple(standard), tuple(large)))
    return tuple(sorted(out, key=lambda c: _network_key(c.prefix)))


def _filter_intent(name: str, spec: Mapping[str, Any]) -> BGPFilterIntent:
    def rules(key: str) -> tuple[FilterRule, ...]:
        out = []
        for rule in spec.get(key) or ():
            length = rule.get("prefixLength") or {}
            out.append(
                FilterRule(
                    action=rule["action"],
                    cidr=rule.get("cidr"),
                    operator=rule.get("matchOperator"),
                    min_length=length.get("min"),
                    max_length=length.get("max"),
                    source=rule.get("source"),
                    interface=rule.get("interface"),
                )
            )
        return tuple(out)

    return BGPFilterIntent(name, rules("importV4"), rules("exportV4"))


# ---- peers -----------------------------------------------------------------------------------


def _peers(
    view: ClusterView,
    me: NodeInfo,
    my_as: int,
    config: Mapping[str, Any],
    notes: list[str],
) -> tuple[PeerIntent, ...]:
    found: dict[str, PeerIntent] = {}  # address:port -> peer; the first definition wins

    def add(peer: PeerIntent) -> None:
        key = f"{peer.address}:{peer.port}"
        if peer.address == me.ipv4:
            return
        if key in found:
            log.debug("peer %s already defined as %s", key, found[key].protocol)
            return
        found[key] = peer

    mesh = config.get("nodeToNodeMeshEnabled", True) is not False
    if mesh and me.rr_cluster_id:
        notes.append("this node is a route reflector: it takes no part in the node mesh")
    if mesh and not me.rr_cluster_id:
        restart = _restart_seconds(config.get("nodeMeshMaxRestartTime"), "nodeMeshMaxRestartTime")
        for other in sorted(view.nodes.values(), key=lambda n: n.name):
            if other.name == me.name or not other.ipv4 or other.rr_cluster_id:
                continue
            peer_config = view.merged_bgp_configuration(other.name)
            add(
                _node_peer(
                    me, my_as, other, _node_as(other, peer_config), peer_config,
                    protocol=f"Mesh_{protocol_suffix(other.ipv4)}", base_type=TYPE_MESH,
                    restart_time=restart, next_hop_keep=False, filters=(),
                )
            )  # fmt: skip

    global_peers: list[PeerIntent] = []
    for name in sorted(view.bgp_peers):
        is_global, peers = _bgp_peer_sessions(view, me, my_as, name, notes)
        # Calico renders node-specific peers before global ones; keep that precedence.
        if is_global:
            global_peers.extend(peers)
        else:
            for peer in peers:
                add(peer)
    for peer in global_peers:
        add(peer)
    return tuple(sorted(found.values(), key=lambda p: (_address_key(p.address), p.port)))


def _peer_applies_to(spec: Mapping[str, Any], node: NodeInfo, where: str) -> bool:
    """The BGPPeer's local side includes `node`: global, `node`, or nodeSelector matches."""
    if not spec.get("node") and not spec.get("nodeSelector"):
        return True
    if spec.get("node"):
        return bool(spec["node"] == node.name)
    return _selects(spec["nodeSelector"], node.labels, where)


def _bgp_peer_sessions(
    view: ClusterView, me: NodeInfo, my_as: int, name: str, notes: list[str]
) -> tuple[bool, list[PeerIntent]]:
    """(is the BGPPeer global, the sessions it gives this node).

    Forward: the BGPPeer applies to this node -> its peerIP, or every node its peerSelector
    selects. Reverse (Calico's reversePeering Auto): this node is selected by the peerSelector
    -> every node the BGPPeer applies to, so both ends of a node-to-node peering configure it
    from one BGPPeer (how route reflectors get their clients).
    """
    spec = view.bgp_peers[name]
    where = f"BGPPeer {name}"
    is_global = not spec.get("node") and not spec.get("nodeSelector")
    prefix = "Global" if is_global else "Node"
    base_type = TYPE_GLOBAL if is_global else TYPE_NODE
    restart = _restart_seconds(spec.get("maxRestartTime"), f"{where}: maxRestartTime")
    keep = bool(spec.get("keepOriginalNextHop")) or spec.get("nextHopMode") == "Keep"
    filters = tuple(f for f in spec.get("filters") or () if f in view.bgp_filters)
    nodes = sorted(view.nodes.values(), key=lambda n: n.name)
    peers: list[PeerIntent] = []

    def node_session(other: NodeInfo, peer_as: int | None = None, port: int | None = None) -> None:
        assert other.ipv4 is not None
        peer_config = view.merged_bgp_configuration(other.name)
        peers.append(
            _node_peer(
                me, my_as, other, peer_as or _node_as(other, peer_config), peer_config,
                protocol=f"{prefix}_{protocol_suffix(other.ipv4, port)}", base_type=base_type,
                restart_time=restart, next_hop_keep=keep, filters=filters, port=port,
            )
        )  # fmt: skip

    forward = _peer_applies_to(spec, me, where)
    if forward:
        for missing in sorted(set(spec.get("filters") or ()) - set(filters)):
            notes.append(f"{where}: BGPFilter {missing} does not exist (skipped)")
    if spec.get("peerSelector"):
        selector = spec["peerSelector"]
        if forward:
            for other in nodes:
                if other.name != me.name and other.ipv4 and _selects(selector, other.labels, where):
                    node_session(other)
        reverse = spec.get("reversePeering", "Auto") != "Manual"
        if reverse and _selects(selector, me.labels, where):
            for other in nodes:
                if other.name != me.name and other.ipv4 and _peer_applies_to(spec, other, where):
                    node_session(other)
    elif forward and spec.get("peerIP"):
        address, port = _peer_ip_and_port(spec["peerIP"])
        if ipaddress.ip_address(address).version != 4:
            notes.append(f"{where}: IPv6 peer {address} skipped (IPv4 only)")
            return is_global, peers
        peer_as = int(spec.get("asNumber") or my_as)
        known = next((n for n in nodes if n.ipv4 == address), None)
        if known is not None:
            node_session(known, peer_as, port)
        else:
            peers.append(
                PeerIntent(
                    protocol=f"{prefix}_{protocol_suffix(address, port)}",
                    address=address,
                    port=port or DEFAULT_LISTEN_PORT,
                    as_number=peer_as,
                    type=base_type,
                    next_hop=_next_hop(keep, reflect=False),
                    restart_time=restart,
                    filters=filters,
                    ebgp=peer_as != my_as,
                )
            )
    elif forward:
        notes.append(f"{where}: neither peerIP nor peerSelector (skipped)")
    return is_global, peers


def _next_hop(keep: bool, reflect: bool) -> str:
    if keep:
        return NEXT_HOP_KEEP
    # A route reflector must pass reflected routes on with their original next hop.
    return NEXT_HOP_AUTO if reflect else NEXT_HOP_SELF


def _node_peer(
    me: NodeInfo,
    my_as: int,
    other: NodeInfo,
    peer_as: int,
    peer_config: Mapping[str, Any],
    *,
    protocol: str,
    base_type: str,
    restart_time: int | None,
    next_hop_keep: bool,
    filters: tuple[str, ...],
    port: int | None = None,
) -> PeerIntent:
    """A session with another cluster node, with Calico's route reflector relations."""
    assert other.ipv4 is not None
    ibgp = peer_as == my_as
    i_reflect = bool(me.rr_cluster_id) and ibgp and other.rr_cluster_id != me.rr_cluster_id
    it_reflects = bool(other.rr_cluster_id) and ibgp and other.rr_cluster_id != me.rr_cluster_id
    peer_type = TYPE_RR_CLIENT if i_reflect else TYPE_RR if it_reflects else base_type
    reflect = bool(me.rr_cluster_id) and ibgp
    return PeerIntent(
        protocol=protocol,
        address=other.ipv4,
        port=port or int(peer_config.get("listenPort") or DEFAULT_LISTEN_PORT),
        as_number=peer_as,
        type=peer_type,
        node=other.name,
        rr_client=i_reflect,
        reflect=reflect,
        next_hop=_next_hop(next_hop_keep, reflect),
        restart_time=restart_time,
        filters=filters,
        ebgp=not ibgp,
    )
