"""Services (Felix as kube-proxy) in Felix's ``inet calico`` table: rendering and deltas.

Layout (kube-proxy's nftables mode is the anchor; names in ``svc_names``):

  svc-nat-prerouting (nat, dstnat)   ip daddr . meta l4proto . th dport vmap @cali-svc-ips
  svc-nat-output     (nat, dstnat)   fib daddr type local ip daddr != 127.0.0.0/8
                                       meta l4proto . th dport vmap @cali-svc-nodeports
  svc-nat-postrouting (nat, srcnat)  ct mark & 0x4000 != 0 masquerade fully-random
                                     ct status dnat ip saddr . ip daddr @cali-svc-hairpin
                                       masquerade fully-random        (hairpin)
  svc-prerouting / svc-output (filter, -90: after DNAT at -100, before routing and policy)
                                     ct state new jump cali-svc-check
  cali-svc-check     no-endpoint verdicts (@cali-svc-noep-ips / -nodeports: goto
                     cali-svc-reject or drop); a cluster IP on a port no service has: reject
  cali-svc-reject    TCP reset, else ICMP port unreachable

Per ServicePort (h = hash of its id):
  cali-svc-<h>   cluster policy: [masquerade non-pod sources to the cluster IP]; then DNAT
                 to a backend with equal weight: up to 16 backends a cascade of
                 ``numgen random mod (N-i) 0 dnat ip to addr:port`` rules, above that one
                 ``dnat ip to numgen random mod N map { i : addr . port }``
                 With affinity: ip saddr @cali-aff-<e> goto cali-sep-<e> per backend, then
                 numgen random mod N vmap { i : goto cali-sep-<e_i> }
  cali-svl-<h>   the same over this node's backends (internal/external traffic policy Local)
  cali-sxt-<h>   external entry (node port, external IPs, LB IPs): ETP Cluster marks for
                 masquerade and goes to cali-svc; ETP Local sends pods (source in
                 @cali-pod-cidrs) and the host to cali-svc (kube-proxy's short-circuits),
                 everything else to cali-svl with the client address kept
  cali-sep-<e>   (affinity only) update @cali-aff-<e> { ip saddr }; dnat ip to addr:port

Why no chain per endpoint (kube-proxy has one) and no anonymous verdict map per service
unless affinity needs them: measured here, a transaction's kernel cost grows with the
number of chains and of anonymous sets in the table (a jump's loop check walks every
verdict map of the table; an anonymous set's name allocation scans every set), which made a
full load of 10,000 services x 10 endpoints quadratic. Hairpin is therefore one shared set
of ``backend . backend`` pairs checked at postrouting, not a rule per endpoint.

Why a conntrack mark and not a packet mark for masquerade: between DNAT (prerouting) and
SNAT (postrouting) the packet crosses Felix's policy chains, which rewrite the packet mark
(cali-fw-* clears Calico's bits; any policy engine may); the conntrack entry's mark is not
touched, and postrouting's NAT sees only a connection's first packet anyway.

Deltas: every ServicePort renders to a ``PortRendering`` (its chains, affinity sets and map
entries, its cluster IPs and hairpin pairs). A change to one ServicePort diffs its old and
new rendering: only its chains, map elements, affinity sets and set elements are touched.
Map keys two ServicePorts share (an external IP claimed twice) go to the smallest id, in
full and delta renders alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.felix.calc.model import DataplaneState, ServiceBackend, ServicePort, StateDelta
from services.felix.dataplane.nft_render import FAMILY, TABLE, proto_number, tagged
from services.felix.dataplane.svc_names import (
    CT_MARK_MASQ,
    affinity_set,
    cluster_chain,
    endpoint_chain,
    external_chain,
    local_chain,
)

T = f"{FAMILY} {TABLE}"

SVC_IPS = "cali-svc-ips"  # cluster / external / LB IP . proto . port -> goto chain
SVC_NODEPORTS = "cali-svc-nodeports"  # proto . node port -> goto external chain
NOEP_IPS = "cali-svc-noep-ips"  # IP . proto . port -> goto reject | drop
NOEP_NODEPORTS = "cali-svc-noep-nodeports"  # proto . node port -> goto reject | drop
CLUSTER_IPS = "cali-svc-cluster-ips"  # every cluster IP (other ports are rejected)
HAIRPIN = "cali-svc-hairpin"  # backend . backend: a backend reaching itself is masqueraded
POD_CIDRS = "cali-pod-cidrs"  # the pools: sources that keep their address
CHECK = "cali-svc-check"
REJECT = "cali-svc-reject"
AFFINITY_PREFIX = "cali-aff-"
SERVICE_CHAIN_PREFIXES = ("cali-svc-", "cali-svl-", "cali-sxt-", "cali-sep-")

_IP_KEY = "ipv4_addr . inet_proto . inet_service"
_PORT_KEY = "inet_proto . inet_service"
# Backends above this are picked by an anonymous numgen map (one lookup), below by a
# cascade of numgen rules (no anonymous set; see _balance).
MAX_CASCADE = 16
MAPS: dict[str, str] = {
    SVC_IPS: _IP_KEY,
    SVC_NODEPORTS: _PORT_KEY,
    NOEP_IPS: _IP_KEY,
    NOEP_NODEPORTS: _PORT_KEY,
}
SHARED_SETS = (CLUSTER_IPS, HAIRPIN)  # elements several ServicePorts may hold
SETS: dict[str, str] = {
    CLUSTER_IPS: "type ipv4_addr;",
    HAIRPIN: "type ipv4_addr . ipv4_addr;",
    POD_CIDRS: "type ipv4_addr; flags interval;",
}

_LOCAL_DST = "fib daddr type local ip daddr != 127.0.0.0/8"
_MARK_MASQ = f"ct mark set ct mark | {CT_MARK_MASQ:#x}"
_DISPATCH = (
    f"ip daddr . meta l4proto . th dport vmap @{SVC_IPS}",
    f"{_LOCAL_DST} meta l4proto . th dport vmap @{SVC_NODEPORTS}",
)
_TO_CHECK = (f"ct state new jump {CHECK}",)
# Hooked chains: name -> (header, rules).
BASE_CHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "svc-nat-prerouting": ("type nat hook prerouting priority dstnat; policy accept;", _DISPATCH),
    "svc-nat-output": ("type nat hook output priority -100; policy accept;", _DISPATCH),
    "svc-nat-postrouting": (
        "type nat hook postrouting priority srcnat; policy accept;",
        (
            f"ct mark & {CT_MARK_MASQ:#x} != 0 masquerade fully-random",
            # Hairpin: the replies must come back through this node to be un-DNATed.
            f"ct status dnat ip saddr . ip daddr @{HAIRPIN} masquerade fully-random",
        ),
    ),
    "svc-prerouting": (
        "type filter hook prerouting priority -90; policy accept;",
        _TO_CHECK,
    ),
    "svc-output": ("type filter hook output priority -90; policy accept;", _TO_CHECK),
}
STATIC_CHAINS: dict[str, tuple[str, ...]] = {
    CHECK: (
        f"ip daddr . meta l4proto . th dport vmap @{NOEP_IPS}",
        f"{_LOCAL_DST} meta l4proto . th dport vmap @{NOEP_NODEPORTS}",
        # A cluster IP on a port that is no service port: refused, as kube-proxy does.
        f"ip daddr @{CLUSTER_IPS} goto {REJECT}",
    ),
    REJECT: ("meta l4proto tcp reject with tcp reset", "reject with icmpx port-unreachable"),
}


def static_chains() -> dict[str, list[str]]:
    chains = {name: [tagged(x) for x in rules] for name, (_, rules) in BASE_CHAINS.items()}
    chains.update({name: [tagged(x) for x in rules] for name, rules in STATIC_CHAINS.items()})
    return chains


def chain_header(name: str) -> str | None:
    """The ``add chain`` line of a hooked service chain; None for other chains."""
    base = BASE_CHAINS.get(name)
    return f"add chain {T} {name} {{ {base[0]} }}" if base else None


def declarations() -> list[str]:
    """Maps and sets every table has (idempotent ``add``)."""
    lines = [f"add map {T} {name} {{ type {key} : verdict; }}" for name, key in MAPS.items()]
    lines += [f"add set {T} {name} {{ {decl} }}" for name, decl in SETS.items()]
    return lines


def is_service_chain(name: str) -> bool:
    return name.startswith(SERVICE_CHAIN_PREFIXES)


# -- one ServicePort -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortRendering:
    chains: dict[str, list[str]]
    affinity_sets: dict[str, str]  # name -> "set <name> { ... }"
    entries: dict[str, dict[str, str]]  # map -> key -> verdict
    members: dict[str, tuple[str, ...]]  # shared set (CLUSTER_IPS, HAIRPIN) -> elements


def _ip_key(address: str, sp: ServicePort) -> str:
    return f"{address} . {sp.protocol} . {sp.port}"


def _dnat(sp: ServicePort, b: ServiceBackend) -> str:
    return f"meta l4proto {sp.protocol} dnat ip to {b.address}:{b.port}"


def _balance(sp: ServicePort, backends: tuple[ServiceBackend, ...], head: list[str]) -> list[str]:
    """Pick a backend with equal weight and DNAT to it."""
    rules = list(head)
    n = len(backends)
    if sp.affinity_timeout_s:
        # A client sent to a backend within the timeout goes there again; the endpoint
        # chains record the choice (``update @set``), so they exist only with affinity.
        rules += [
            f"ip saddr @{affinity_set(sp.id, b, sp.affinity_timeout_s)} "
            f"goto {endpoint_chain(sp.id, b)}"
            for b in backends
        ]
        if n == 1:
            rules.append(f"goto {endpoint_chain(sp.id, backends[0])}")
        else:
            targets = ", ".join(
                f"{i} : goto {endpoint_chain(sp.id, b)}" for i, b in enumerate(backends)
            )
            rules.append(f"numgen random mod {n} vmap {{ {targets} }}")
    elif n > MAX_CASCADE:
        targets = ", ".join(f"{i} : {b.address} . {b.port}" for i, b in enumerate(backends))
        rules.append(
            f"meta l4proto {sp.protocol} dnat ip to numgen random mod {n} map {{ {targets} }}"
        )
    else:
        # Backend i is taken with probability 1/(n-i) once 0..i-1 were not: 1/n each. No
        # anonymous set: the kernel's cost of adding one grows with the sets in the table.
        for i, b in enumerate(backends[:-1]):
            rules.append(f"numgen random mod {n - i} 0 {_dnat(sp, b)}")
        rules.append(_dnat(sp, backends[-1]))
    return [tagged(x) for x in rules]


def _endpoint_rules(sp: ServicePort, b: ServiceBackend, timeout_s: int) -> list[str]:
    rules = [f"update @{affinity_set(sp.id, b, timeout_s)} {{ ip saddr }}", _dnat(sp, b)]
    return [tagged(x) for x in rules]


def render_port(sp: ServicePort, masquerade_non_pods: bool) -> PortRendering:
    """The chains, affinity sets and map entries of one ServicePort (see the module doc)."""
    chains: dict[str, list[str]] = {}
    affinity: dict[str, str] = {}
    entries: dict[str, dict[str, str]] = {name: {} for name in MAPS}
    everywhere = sp.backends
    local = tuple(b for b in everywhere if b.local)
    internal = local if sp.internal_local else everywhere
    external = local if sp.external_local else everywhere
    externally = bool(sp.external_ips) or sp.node_port is not None
    no_internal = f"goto {REJECT}" if not everywhere else "drop"
    cips = sp.cluster_ips

    # Off-cluster sources to the cluster IP are masqueraded (kube-proxy's cluster-CIDR rule):
    # a route to the service range may send them via any node. Only with known pod CIDRs.
    masq_head: list[str] = []
    if masquerade_non_pods and cips:
        dst = cips[0] if len(cips) == 1 else "{ " + ", ".join(cips) + " }"
        masq_head.append(f"ip daddr {dst} th dport {sp.port} ip saddr != @{POD_CIDRS} {_MARK_MASQ}")
    if everywhere:
        head = [] if sp.internal_local else masq_head
        chains[cluster_chain(sp.id)] = _balance(sp, everywhere, head)
    if local and (sp.internal_local or sp.external_local):
        head = masq_head if sp.internal_local else []
        chains[local_chain(sp.id)] = _balance(sp, local, head)
    timeout = sp.affinity_timeout_s
    for b in everywhere if timeout else ():  # the cluster chain uses every backend
        assert timeout is not None
        name = affinity_set(sp.id, b, timeout)
        chains[endpoint_chain(sp.id, b)] = _endpoint_rules(sp, b, timeout)
        affinity[name] = (
            f"set {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
        )

    internal_chain = local_chain(sp.id) if sp.internal_local else cluster_chain(sp.id)
    for cip in cips:
        if internal:
            entries[SVC_IPS][_ip_key(cip, sp)] = f"goto {internal_chain}"
        else:
            entries[NOEP_IPS][_ip_key(cip, sp)] = no_internal

    if externally:
        xchain = external_chain(sp.id)
        if everywhere:
            if sp.external_local:
                rules = [
                    # Pods and the host reach any backend (kube-proxy's short-circuits); the
                    # host's own source address needs masquerade to get the replies back.
                    f"ip saddr @{POD_CIDRS} goto {cluster_chain(sp.id)}",
                    f"fib saddr type local {_MARK_MASQ}",
                    f"fib saddr type local goto {cluster_chain(sp.id)}",
                ]
                if local:
                    rules.append(f"goto {local_chain(sp.id)}")
            else:
                rules = [_MARK_MASQ, f"goto {cluster_chain(sp.id)}"]
            chains[xchain] = [tagged(x) for x in rules]
        no_external = f"goto {REJECT}" if not everywhere else "drop"
        for eip in sp.external_ips:
            if everywhere:
                entries[SVC_IPS][_ip_key(eip, sp)] = f"goto {xchain}"
            if not external:
                # Whatever the external chain did not send on (no DNAT) is dropped/refused.
                entries[NOEP_IPS][_ip_key(eip, sp)] = no_external
        if sp.node_port is not None:
            key = f"{sp.protocol} . {sp.node_port}"
            if everywhere:
                entries[SVC_NODEPORTS][key] = f"goto {xchain}"
            if not external:
                entries[NOEP_NODEPORTS][key] = no_external
    members = {
        CLUSTER_IPS: cips,
        HAIRPIN: tuple(sorted({f"{b.address} . {b.address}" for b in everywhere})),
    }
    return PortRendering(chains, affinity, entries, members)


# -- all ServicePorts ----------------------------------------------------------------------------


def pod_cidr_elements(cidrs: Iterable[str]) -> set[str]:
    nets = [ipaddress.IPv4Network(c, strict=False) for c in cidrs if ":" not in c]
    return {
        str(n.network_address) if n.prefixlen == 32 else str(n)
        for n in ipaddress.collapse_addresses(nets)
    }


@dataclass(slots=True)
class ServiceRendering:
    """What the kernel holds for services (``maps``, ``sets``, ``affinity``) and, for the
    intended state, how it was derived (``parts`` per ServicePort, key owners, IP refs)."""

    maps: dict[str, dict[str, str]] = field(default_factory=dict)  # map -> key -> verdict
    sets: dict[str, set[str]] = field(default_factory=dict)  # CLUSTER_IPS, POD_CIDRS
    affinity: dict[str, str] = field(default_factory=dict)  # name -> declaration
    parts: dict[str, PortRendering] = field(default_factory=dict)
    ports: dict[str, ServicePort] = field(default_factory=dict)
    owners: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    refs: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # set -> elem -> ids
    masquerade_non_pods: bool = False

    def chains(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for part in self.parts.values():
            out.update(part.chains)
        return out

    def _winner(self, map_key: tuple[str, str]) -> str | None:
        owners = self.owners.get(map_key)
        return owners[min(owners)] if owners else None

    def add(self, sp: ServicePort, part: PortRendering) -> set[tuple[str, str]]:
        """Record ``part``; returns the map keys it holds."""
        self.parts[sp.id] = part
        self.ports[sp.id] = sp
        self.affinity.update(part.affinity_sets)
        keys = set()
        for map_name, entries in part.entries.items():
            for key, verdict in entries.items():
                self.owners.setdefault((map_name, key), {})[sp.id] = verdict
                keys.add((map_name, key))
        for set_name, members in part.members.items():
            refs = self.refs.setdefault(set_name, {})
            for member in members:
                refs.setdefault(member, set()).add(sp.id)
        return keys

    def remove(self, sp_id: str) -> tuple[PortRendering | None, set[tuple[str, str]]]:
        part = self.parts.pop(sp_id, None)
        self.ports.pop(sp_id, None)
        keys: set[tuple[str, str]] = set()
        if part is None:
            return None, keys
        for name in part.affinity_sets:
            self.affinity.pop(name, None)
        for map_name, entries in part.entries.items():
            for key in entries:
                owners = self.owners.get((map_name, key), {})
                owners.pop(sp_id, None)
                if not owners:
                    self.owners.pop((map_name, key), None)
                keys.add((map_name, key))
        for set_name, members in part.members.items():
            refs = self.refs.get(set_name, {})
            for member in members:
                ids = refs.get(member, set())
                ids.discard(sp_id)
                if not ids:
                    refs.pop(member, None)
        return part, keys

    def settle(self, keys: Iterable[tuple[str, str]]) -> None:
        """Bring ``maps`` to the owners' winners for ``keys``."""
        for map_name, key in keys:
            verdict = self._winner((map_name, key))
            entries = self.maps.setdefault(map_name, {})
            if verdict is None:
                entries.pop(key, None)
            else:
                entries[key] = verdict


def render_services(state: DataplaneState) -> ServiceRendering:
    out = ServiceRendering(masquerade_non_pods=bool(state.pod_cidrs))
    out.maps = {name: {} for name in MAPS}
    keys: set[tuple[str, str]] = set()
    for sp_id in sorted(state.service_ports):
        sp = state.service_ports[sp_id]
        keys |= out.add(sp, render_port(sp, out.masquerade_non_pods))
    out.settle(keys)
    out.sets = {name: set(out.refs.get(name, {})) for name in SHARED_SETS}
    out.sets[POD_CIDRS] = pod_cidr_elements(state.pod_cidrs)
    return out


# -- deltas --------------------------------------------------------------------------------------


@dataclass(slots=True)
class ServiceDelta:
    """Script pieces, in the order the driver places them."""

    sets: list[str] = field(default_factory=list)  # affinity sets created (before rules)
    headers: list[str] = field(default_factory=list)  # new chains (before any rule)
    rules: list[str] = field(default_factory=list)  # flush + rules of new/changed chains
    elements: list[str] = field(default_factory=list)  # map/set elements (after rules)
    gone_chains: list[str] = field(default_factory=list)  # flushed, then deleted
    gone_sets: list[str] = field(default_factory=list)  # deleted last
    chains: dict[str, list[str] | None] = field(default_factory=dict)  # None: deleted
    old_ports: dict[str, ServicePort | None] = field(default_factory=dict)  # before the change

    def __bool__(self) -> bool:
        return bool(self.sets or self.headers or self.rules or self.elements or self.gone_chains)


def _declare(decl: str) -> str:
    return f"add {decl.replace('set ', f'set {T} ', 1)}"


def _elements_line(op: str, name: str, values: Iterable[str]) -> list[str]:
    text = ", ".join(sorted(values))
    return [f"{op} element {T} {name} {{ {text} }}"] if text else []


def apply_delta(svc: ServiceRendering, state: DataplaneState, delta: StateDelta) -> ServiceDelta:
    """Update ``svc`` in place to ``state`` for the changed ServicePorts; return the script."""
    out = ServiceDelta()
    changed = set(delta.service_ports)
    masq = bool(state.pod_cidrs)
    if delta.pod_cidrs and masq != svc.masquerade_non_pods:
        # The cluster-IP masquerade rule needs pod CIDRs: every service chain changes.
        changed |= set(svc.parts) | set(state.service_ports)
        svc.masquerade_non_pods = masq
    keys: set[tuple[str, str]] = set()
    old_members = {name: set(svc.refs.get(name, {})) for name in SHARED_SETS}
    for sp_id in sorted(changed):
        sp = state.service_ports.get(sp_id)
        new_part = render_port(sp, masq) if sp is not None else None
        if svc.parts.get(sp_id) == new_part:
            continue
        out.old_ports[sp_id] = svc.ports.get(sp_id)
        old_part, old_keys = svc.remove(sp_id)
        keys |= old_keys
        old_chains = old_part.chains if old_part else {}
        new_chains = new_part.chains if new_part else {}
        if sp is not None and new_part is not None:
            keys |= svc.add(sp, new_part)
        old_sets = old_part.affinity_sets if old_part else {}
        new_sets = new_part.affinity_sets if new_part else {}
        out.sets += [_declare(d) for n, d in new_sets.items() if n not in old_sets]
        out.gone_sets += [n for n in old_sets if n not in new_sets]
        for name, rules in new_chains.items():
            old_rules = old_chains.get(name)
            if old_rules == rules:
                continue
            if old_rules is None:
                out.headers.append(f"add chain {T} {name}")
            else:
                out.rules.append(f"flush chain {T} {name}")
            out.rules += [f"add rule {T} {name} {rule}" for rule in rules]
            out.chains[name] = rules
        for name in old_chains:
            if name not in new_chains:
                out.gone_chains.append(name)
                out.chains[name] = None
    # Map entries: compare each touched key's kernel value with its new winner.
    before = {k: svc.maps.get(k[0], {}).get(k[1]) for k in keys}
    svc.settle(keys)
    deletes: dict[str, list[str]] = {}
    adds: dict[str, list[str]] = {}
    for (map_name, key), old in sorted(before.items()):
        new = svc.maps.get(map_name, {}).get(key)
        if old == new:
            continue
        if old is not None:
            deletes.setdefault(map_name, []).append(key)
        if new is not None:
            adds.setdefault(map_name, []).append(f"{key} : {new}")
    for map_name, values in deletes.items():
        out.elements += _elements_line("delete", map_name, values)
    for map_name, values in adds.items():
        out.elements += _elements_line("add", map_name, values)
    for name, old_set in old_members.items():
        new_set = set(svc.refs.get(name, {}))
        out.elements += _elements_line("delete", name, old_set - new_set)
        out.elements += _elements_line("add", name, new_set - old_set)
        svc.sets[name] = new_set
    if delta.pod_cidrs:
        old_cidrs = svc.sets.get(POD_CIDRS, set())
        new_cidrs = pod_cidr_elements(state.pod_cidrs)
        out.elements += _elements_line("delete", POD_CIDRS, old_cidrs - new_cidrs)
        out.elements += _elements_line("add", POD_CIDRS, new_cidrs - old_cidrs)
        svc.sets[POD_CIDRS] = new_cidrs
    return out


# -- refresh -------------------------------------------------------------------------------------


@dataclass(slots=True)
class ServiceRepair:
    sets: list[str] = field(default_factory=list)  # before chain rules
    elements: list[str] = field(default_factory=list)  # after chain rules
    gone_sets: list[str] = field(default_factory=list)  # last
    repairs: int = 0


def repair(want: ServiceRendering, have: ServiceRendering) -> ServiceRepair:
    """Lines that bring the kernel's service maps and sets (``have``) to ``want``; chains are
    compared by the driver with every other chain. Affinity sets are compared by name only:
    their elements are the kernel's own (clients seen)."""
    out = ServiceRepair()
    for name, decl in SETS.items():
        wanted = want.sets.get(name, set())
        found = have.sets.get(name)
        if found == wanted:
            continue
        out.repairs += 1
        if found is None:
            out.sets.append(f"add set {T} {name} {{ {decl} }}")
        else:
            out.sets.append(f"flush set {T} {name}")
        out.sets += _elements_line("add", name, wanted)
    for name, decl in want.affinity.items():
        if name not in have.affinity:
            out.repairs += 1
            out.sets.append(_declare(decl))
    extra = [n for n in have.affinity if n not in want.affinity]
    out.gone_sets += extra
    out.repairs += len(extra)
    for name, key_type in MAPS.items():
        wanted_map = want.maps.get(name, {})
        found_map = have.maps.get(name)
        if found_map is None:
            out.repairs += 1
            out.elements.append(f"add map {T} {name} {{ type {key_type} : verdict; }}")
            found_map = {}
        if found_map == wanted_map:
            continue
        out.repairs += 1
        stale = [k for k, v in found_map.items() if wanted_map.get(k) != v]
        missing = [f"{k} : {v}" for k, v in wanted_map.items() if found_map.get(k) != v]
        out.elements += _elements_line("delete", name, stale)
        out.elements += _elements_line("add", name, missing)
    return out


def _key_text(key: Any) -> str:
    if isinstance(key, dict) and "concat" in key:
        parts = key["concat"]
        if len(parts) == 3:
            return f"{parts[0]} . {proto_number(parts[1])} . {parts[2]}"
        return f"{proto_number(parts[0])} . {parts[1]}"
    return str(key)


def _verdict_text(verdict: Any) -> str:
    if isinstance(verdict, dict):
        for kind in ("goto", "jump"):
            if kind in verdict:
                return f"{kind} {verdict[kind]['target']}"
        return next(iter(verdict), "")
    return str(verdict)


def _element_value(elem: Any) -> str:
    if isinstance(elem, dict):
        if "concat" in elem:
            return " . ".join(_element_value(e) for e in elem["concat"])
        if "prefix" in elem:
            return f"{elem['prefix']['addr']}/{elem['prefix']['len']}"
        if "elem" in elem:
            return _element_value(elem["elem"].get("val"))
        if "range" in elem:
            low, high = elem["range"]
            return f"{low}-{high}"
    return str(elem)


def parse_item(item: dict[str, Any], out: ServiceRendering) -> bool:
    """Take a listed set or map that belongs to services; False for anything else."""
    if "map" in item and item["map"]["name"] in MAPS:
        m = item["map"]
        out.maps[m["name"]] = {_key_text(k): _verdict_text(v) for k, v in m.get("elem", [])}
        return True
    if "set" in item:
        s = item["set"]
        if s["name"] in SETS:
            out.sets[s["name"]] = {_element_value(e) for e in s.get("elem", [])}
            return True
        if s["name"].startswith(AFFINITY_PREFIX):
            out.affinity[s["name"]] = ""
            return True
    return False
