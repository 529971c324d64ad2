"""BGPIntent -> BIRD 2 configuration text. Pure: equal inputs give byte-identical output.

Nothing here reads the clock, the environment or a file: the operator knobs (connect retry,
extra configuration) come in RenderOptions, so an unchanged intent renders to the same bytes
and the apply step can skip writing and reloading. Why each part exists is in DESIGN.md;
the short version is in the comments the rendered file itself carries.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from services.bgp.intent import (
    NEXT_HOP_KEEP,
    NEXT_HOP_SELF,
    BGPFilterIntent,
    BGPIntent,
    CommunityIntent,
    FilterRule,
    PeerIntent,
)

# Static protocols by the role of their routes (filters select routes by protocol name).
PROTO_BLOCKS = "calico_blocks"  # own blocks: blackhole in the kernel, advertised
PROTO_BLOCKS_UNADVERTISED = "calico_blocks_local"  # own blocks of non-exported pools
PROTO_ADVERTS = "calico_adverts"  # borrowed /32s and service prefixes: advertised only
# With no IPv4 BGP address there are no sessions; BIRD still needs some router id to run the
# kernel and static protocols (own blocks stay blackholed).
PLACEHOLDER_ROUTER_ID = "0.0.0.1"
LOG_LIMIT_BYTES = 10_000_000
# After a BIRD crash (restarted with -R) the kernel keeps the old routes until every session is
# back, but at most this long: an unreachable peer must not freeze the kernel table for BIRD's
# default 240 s.
GRACEFUL_RESTART_WAIT_S = 30


@dataclass(frozen=True, slots=True)
class RenderOptions:
    bird_dir: str
    # Seconds for BIRD's connect delay / connect retry / error wait (CALICO_BGP_CONNECT_RETRY);
    # None keeps BIRD's defaults (5 s / 120 s / 60-300 s).
    connect_retry: float | None = None
    # Appended verbatim (CALICO_BGPD_EXTRA_CONFIG_FILE): an operator/test hook.
    extra_config: str = ""
    log_limit_bytes: int = LOG_LIMIT_BYTES


def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def render_config(intent: BGPIntent, options: RenderOptions) -> str:
    out: list[str] = []
    _header(out, intent, options)
    _base_protocols(out, intent)
    _static(out, PROTO_BLOCKS, intent.blocks, "own blocks: blackholed here, advertised")
    _static(
        out,
        PROTO_BLOCKS_UNADVERTISED,
        intent.unadvertised_blocks,
        "own blocks of disabled / disableBGPExport pools: blackholed here, never advertised",
    )
    _static(
        out,
        PROTO_ADVERTS,
        (*intent.borrowed, *intent.service_prefixes),
        "borrowed addresses and service prefixes: advertised, never put in the kernel",
    )
    _functions(out, intent)
    for bgp_filter in intent.filters:
        _bgp_filter(out, bgp_filter)
    chains = _peer_filter_chains(out, intent.peers)
    for peer in intent.peers:
        _bgp_protocol(out, intent, peer, options, chains)
    if options.extra_config:
        out.append("# --- CALICO_BGPD_EXTRA_CONFIG_FILE (appended verbatim) ---")
        out.append(options.extra_config.rstrip("\n"))
    return "\n".join(out) + "\n"


def _header(out: list[str], intent: BGPIntent, options: RenderOptions) -> None:
    log_path = str(Path(options.bird_dir) / "bird.log")
    out += [
        f"# BIRD configuration of node {intent.node}, rendered by calico-bgpd from the datastore.",
        "# Do not edit: calico-bgpd rewrites it on every change (services/bgp/DESIGN.md).",
        *(f"# note: {note}" for note in intent.notes),
        f"router id {intent.router_id or PLACEHOLDER_ROUTER_ID};",
        f'log "{log_path}" {options.log_limit_bytes} "{log_path}.1" all;',
        "timeformat protocol iso short ms;",
        f"graceful restart wait {GRACEFUL_RESTART_WAIT_S};  # bound on recovery after a crash",
        f"debug protocols {'all' if intent.debug else 'off'};",
        "",
    ]


def _base_protocols(out: list[str], intent: BGPIntent) -> None:
    excluded = ["cali*", *intent.ignored_interfaces]
    interfaces = ", ".join([*(f'-"{p}"' for p in excluded), '"*"'])
    out += [
        "# Interfaces and their addresses, for the direct and kernel protocols.",
        "protocol device { scan time 10; }",
        "",
        "# Connected networks, so iBGP next hops (gateway recursive) resolve. Never exported:",
        "# the kernel and peer filters below only take BGP and calico_* routes.",
        f"protocol direct calico_direct {{ ipv4; interface {interfaces}; }}",
        "",
        "# Into the kernel: routes learned over BGP, and our own blocks' blackholes. Never a",
        "# route learned from the kernel: its source is RTS_INHERIT, so neither test passes it.",
        "filter calico_kernel_export {",
        f'  if proto = "{PROTO_BLOCKS}" || proto = "{PROTO_BLOCKS_UNADVERTISED}" then accept;',
        *_felix_routed_rejection(intent.felix_routed_pools),
        "  if source = RTS_BGP then accept;",
        "  reject;",
        "}",
        "# From the kernel: other programs' routes (the default route, through which a next hop",
        "# on another subnet resolves), never one within a Calico pool (Felix's pod /32s and",
        "# overlay routes). Only for next-hop resolution: no peer or kernel filter passes them.",
        "filter calico_kernel_import {",
        *_calico_prefix_rejection(intent.calico_prefixes),
        "  accept;",
        "}",
        "protocol kernel calico_kernel {",
        "  ipv4 { import filter calico_kernel_import; export filter calico_kernel_export; };",
        "  learn;  # other programs' routes (not the kernel's own proto kernel ones)",
        "  merge paths on;  # ECMP when several peers offer the same prefix",
        "  graceful restart on;  # after a BIRD restart, keep kernel routes until peers resync",
        "}",
        "",
    ]


def _calico_prefix_rejection(prefixes: tuple[str, ...]) -> list[str]:
    """Kernel import lines keeping every route within a pool (or an orphaned block) out of
    BIRD's table, where it could compete with a BGP route for the same block."""
    if not prefixes:
        return []
    return [f"  if net ~ {_prefix_set(prefixes, '+')} then reject;"]


def _felix_routed_rejection(pools: tuple[str, ...]) -> list[str]:
    """Kernel filter lines keeping learned routes within VXLAN / IPIP pools out of the kernel:
    Felix programs those (via vxlan.calico, or plain to a CrossSubnet neighbour, protocol 80),
    and a second route from BIRD for the same block would compete with Felix's."""
    if not pools:
        return []
    return [
        "  # VXLAN / IPIP pools: Felix programs the routes to other nodes' blocks in them.",
        f"  if source = RTS_BGP && net ~ {_prefix_set(pools, '+')} then reject;",
    ]


def _static(out: list[str], name: str, prefixes: Iterable[str], why: str) -> None:
    routes = [f"  route {p} blackhole;" for p in prefixes]
    out += [f"# {why}", f"protocol static {name} {{", "  ipv4;", *routes, "}", ""]


def _prefix_set(prefixes: Iterable[str], low_high: str = "") -> str:
    return "[ " + ", ".join(f"{p}{low_high}" for p in prefixes) + " ]"


def _functions(out: list[str], intent: BGPIntent) -> None:
    own = intent.own_blocks
    out.append("# Import: nothing learned may replace our own blocks (host /32s a peer borrowed")
    out.append("# from them are fine).")
    out.append("function calico_reject_own_blocks() {")
    if own:
        sets = ", ".join(f"{b}{{{ipaddress.ip_network(b).prefixlen},31}}" for b in own)
        out.append(f"  if net ~ [ {sets} ] then reject;")
    out += ["}", ""]
    originated = f'proto = "{PROTO_BLOCKS}" || proto = "{PROTO_ADVERTS}"'
    out += [
        "# Export: only what this node originates; everything else is rejected here.",
        "function calico_export_own() {",
        f"  if !({originated}) then reject;",
        "}",
    ]
    reflect = originated
    if intent.reflect_pools:
        pools = _prefix_set(intent.reflect_pools, "+")
        reflect = f"{originated} || (source = RTS_BGP && net ~ {pools})"
    out += [
        "# Route reflector (iBGP): also pass on learned routes within the advertised pools.",
        "function calico_export_reflect() {",
        f"  if !({reflect}) then reject;",
        "}",
        "",
    ]
    _communities_function(out, intent.communities)


def _communities_function(out: list[str], communities: Iterable[CommunityIntent]) -> None:
    out.append("# BGPConfiguration prefixAdvertisements: communities on our advertised prefixes.")
    out.append("function calico_communities() {")
    body: list[str] = []
    for community in communities:
        adds = [f"bgp_community.add(({a},{b}));" for a, b in community.standard]
        adds += [f"bgp_large_community.add(({a},{b},{c}));" for a, b, c in community.large]
        body.append(f"    if net ~ {community.prefix} then {{ {' '.join(adds)} }}")
    if body:
        out.append(f'  if proto = "{PROTO_BLOCKS}" || proto = "{PROTO_ADVERTS}" then {{')
        out += body
        out.append("  }")
    out += ["}", ""]


def bgp_filter_function(name: str, direction: str) -> str:
    """BIRD's (quoted) symbol for one BGPFilter's rules in one direction ("importV4")."""
    return f"'calico_bgpfilter_{name}_{direction}'"


def _rule_condition(rule: FilterRule) -> str:
    parts: list[str] = []
    if rule.cidr and rule.operator:
        net = ipaddress.ip_network(rule.cidr)
        match = rule.cidr
        if rule.min_length is not None or rule.max_length is not None:
            # A shorter minimum than the CIDR's own length could never match: clamp it.
            low = max(rule.min_length or 0, net.prefixlen)
            high = rule.max_length if rule.max_length is not None else net.max_prefixlen
            match = f"[ {rule.cidr}{{{low},{high}}} ]"
        parts.append(
            {
                "Equal": f"net = {rule.cidr}",
                "NotEqual": f"net != {rule.cidr}",
                "In": f"net ~ {match}",
                "NotIn": f"!(net ~ {match})",
            }[rule.operator]
        )
    if rule.source == "RemotePeers":
        parts.append("source = RTS_BGP")
    if rule.interface:
        parts.append(f'ifname ~ "{rule.interface}"')
    return " && ".join(f"({p})" for p in parts)


def _bgp_filter(out: list[str], bgp_filter: BGPFilterIntent) -> None:
    for direction, rules in (
        ("importV4", bgp_filter.import_v4),
        ("exportV4", bgp_filter.export_v4),
    ):
        out.append(f"# BGPFilter {bgp_filter.name} {direction}: the first matching rule decides.")
        out.append(f"function {bgp_filter_function(bgp_filter.name, direction)}() {{")
        for rule in rules:
            action = "accept" if rule.action == "Accept" else "reject"
            condition = _rule_condition(rule)
            out.append(f"  if {condition} then {action};" if condition else f"  {action};")
        out += ["}", ""]


def _import_chain(peer: PeerIntent) -> tuple[str, ...]:
    return (
        "calico_reject_own_blocks();",
        *(f"{bgp_filter_function(f, 'importV4')}();" for f in peer.filters),
    )


def _export_chain(peer: PeerIntent) -> tuple[str, ...]:
    return (
        "calico_export_reflect();" if peer.reflect else "calico_export_own();",
        "calico_communities();",
        *(f"{bgp_filter_function(f, 'exportV4')}();" for f in peer.filters),
    )


def _peer_filter_chains(
    out: list[str], peers: Iterable[PeerIntent]
) -> dict[tuple[str, tuple[str, ...]], str]:
    """One named filter per distinct import / export chain, shared by the peers that use it.

    Why named: BIRD parses and compiles an inline `filter { ... }` once per protocol; with
    1,000 peers, inline filters made `configure` take ~80 ms against ~30 ms with shared ones
    (benchmarks/bgp_convergence.py part c). Names follow first use, so rendering stays
    deterministic.
    """
    names: dict[tuple[str, tuple[str, ...]], str] = {}
    for peer in peers:
        for direction, chain in (("import", _import_chain(peer)), ("export", _export_chain(peer))):
            key = (direction, chain)
            if key in names:
                continue
            name = f"calico_{direction}_{sum(1 for d, _ in names if d == direction)}"
            names[key] = name
            out += [f"filter {name} {{", f"  {' '.join(chain)}", "  accept;", "}", ""]
    return names


def _bgp_protocol(
    out: list[str],
    intent: BGPIntent,
    peer: PeerIntent,
    options: RenderOptions,
    chains: dict[tuple[str, tuple[str, ...]], str],
) -> None:
    local_port = "" if intent.listen_port == 179 else f" port {intent.listen_port}"
    peer_port = "" if peer.port == 179 else f" port {peer.port}"
    described = f"{peer.type} {peer.node}" if peer.node else peer.type
    out += [
        f"protocol bgp {peer.protocol} {{",
        f'  description "{described}";',
        f"  local {intent.router_id}{local_port} as {intent.as_number};",
        f"  neighbor {peer.address}{peer_port} as {peer.as_number};",
    ]
    if intent.bind_node_ip:
        # The listening socket is bound to `local` (the node address). BIRD wants all or none
        # of the sessions on one port to say so: every protocol here does.
        out.append("  strict bind yes;")
    if peer.rr_client:
        out += ["  rr client;", f"  rr cluster id {intent.rr_cluster_id};"]
    out.append("  graceful restart on;  # peers keep our routes while BIRD restarts")
    if peer.restart_time is not None:
        out.append(f"  graceful restart time {peer.restart_time};")
    if options.connect_retry is not None:
        seconds = max(1, round(options.connect_retry))
        out += [
            f"  connect delay time {seconds};",
            f"  connect retry time {seconds};",
            f"  error wait time {seconds},{seconds};",
        ]
    out += [
        "  ipv4 {",
        f"    import filter {chains[('import', _import_chain(peer))]};",
        f"    export filter {chains[('export', _export_chain(peer))]};",
    ]
    if peer.next_hop == NEXT_HOP_SELF:
        out.append("    next hop self;")
    elif peer.next_hop == NEXT_HOP_KEEP and peer.ebgp:
        out.append("    next hop keep;")
    out += ["  };", "}", ""]
