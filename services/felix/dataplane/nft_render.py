"""The intended state as nftables text: sets, policy chains, endpoint chains, dispatch.

Layout of ``table inet calico``:

  forward (hook):  ct established,related accept; ct invalid drop;
                   iifname "cali*" jump cali-from-wl; oifname "cali*" jump cali-to-wl
  input (hook):    from a cali* interface: same conntrack rules, then jump cali-from-wl
  output (hook):   to a cali* interface Felix does not know: drop (host->pod not policed)
  cali-from-wl:    iifname vmap @cali-fw-dispatch (goto cali-fw-<if>); drop   <- unknown cali*
  cali-to-wl:      oifname vmap @cali-tw-dispatch (goto cali-tw-<if>); drop
  cali-fw-<if>:    clear marks; each egress policy's rules in order, inline (a policy that
                   has a Pass rule: jump cali-po-<p>, return if accept mark; later policies
                   guarded by "pass mark clear"); end-of-tier drop; profiles; drop
  cali-tw-<if>:    the same for ingress (cali-pi-<p> for policies with Pass)
  rules:           egress Allow sets the accept mark and returns; Deny drops; Pass sets the
                   pass mark and returns; Log logs and continues. Ingress Allow is
                   ``accept``: ingress is the last check a packet meets (forward: source
                   egress first, then destination ingress).
  cali-pri/pro-<p> profile chains (jumped to after the policies).

Policy rules sit inline in the endpoint chains: measured here, a jump per policy costs more
per new connection than the policy's own rules (100 jumps: ~15% of a connection's cost).
Runs of inline rules are shortened exactly by ``rule_opt`` (dead duplicates dropped; rules
differing only in a selector set merged onto a union set ``u-``/``ui-``): 100 policies on a
server cost a SYN 3 rules instead of 198.

A from-workload chain returns only with the accept mark: the packet goes on to the
destination endpoint's ingress (or out). Every rule carries a ``cali:<hash>`` comment so the
periodic refresh can compare the kernel with the intended rules without parsing them.

Selector sets holding only host addresses are hash sets (``s-<hash>``); once a member is a
prefix (a network set) the set becomes an interval set (``si-<hash>``): interval lookups cost
several times more per packet, and most selector sets never need them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from services.felix.calc.model import (
    Action,
    DataplaneState,
    EndpointPolicy,
    IPSetKind,
    IPSetSpec,
    Match,
    PolicyProgram,
    PortRange,
    Rule,
)
from services.felix.dataplane.names import (
    LOG_PREFIX,
    MARK_ACCEPT,
    MARK_MASK,
    MARK_PASS,
    nft_set_name,
    policy_chain,
    rule_tag,
)
from services.felix.dataplane.rule_opt import Item, is_union, optimise

TABLE = "calico"
FAMILY = "inet"
FW_DISPATCH = "cali-fw-dispatch"
TW_DISPATCH = "cali-tw-dispatch"
LOCAL_IFACES = "cali-local-ifaces"
FROM_WL = "cali-from-wl"
TO_WL = "cali-to-wl"
WORKLOAD_IFACE = '"cali*"'

# Chains with a hook: (name, hook) -> rules. They and the dispatch chains are static.
_CT_RULES = ("ct state established,related accept", "ct state invalid drop")
BASE_CHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "forward": (
        "type filter hook forward priority filter; policy accept;",
        (
            *_CT_RULES,
            f"iifname {WORKLOAD_IFACE} jump {FROM_WL}",
            f"oifname {WORKLOAD_IFACE} jump {TO_WL}",
        ),
    ),
    "input": (
        "type filter hook input priority filter; policy accept;",
        (
            f"iifname {WORKLOAD_IFACE} ct state established,related accept",
            f"iifname {WORKLOAD_IFACE} ct state invalid drop",
            f"iifname {WORKLOAD_IFACE} jump {FROM_WL}",
        ),
    ),
    "output": (
        "type filter hook output priority filter; policy accept;",
        (f"oifname {WORKLOAD_IFACE} oifname != @{LOCAL_IFACES} drop",),
    ),
}
DISPATCH_CHAINS: dict[str, tuple[str, ...]] = {
    FROM_WL: (f"iifname vmap @{FW_DISPATCH}", "drop"),
    TO_WL: (f"oifname vmap @{TW_DISPATCH}", "drop"),
}

_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}


def tagged(rule: str) -> str:
    return f'{rule} comment "{rule_tag(rule)}"'


# -- sets ------------------------------------------------------------------------------------


SetNames = Callable[[str], str]


def needs_interval(spec: IPSetSpec, members: Iterable[str]) -> bool:
    """Only sets holding prefixes need an interval (rbtree) set: host-only sets are hash
    sets, several times cheaper per lookup on the packet path."""
    return spec.kind is IPSetKind.NETS and any(
        not m.endswith("/32") and ":" not in m for m in members
    )


def kernel_set_name(spec: IPSetSpec, members: Iterable[str]) -> str:
    name = nft_set_name(spec.id)
    return name.replace("-", "i-", 1) if needs_interval(spec, members) else name


def state_set_names(state: DataplaneState) -> SetNames:
    """Kernel names by set id, memoised: valid for one rendering of ``state``."""
    cache: dict[str, str] = {}

    def name(set_id: str) -> str:
        found = cache.get(set_id)
        if found is None:
            spec = state.ipsets[set_id]
            found = cache[set_id] = kernel_set_name(spec, state.ipset_members.get(set_id, ()))
        return found

    return name


def set_declaration(spec: IPSetSpec, members: Iterable[str]) -> str:
    name = kernel_set_name(spec, members)
    if spec.kind is IPSetKind.NAMED_PORTS:
        return f"set {name} {{ type ipv4_addr . inet_proto . inet_service; }}"
    if needs_interval(spec, members):
        return f"set {name} {{ type ipv4_addr; flags interval; }}"
    return f"set {name} {{ type ipv4_addr; }}"


def set_elements(spec: IPSetSpec, members: Iterable[str]) -> set[str]:
    """Kernel elements for the members: IPv4 only, non-overlapping for interval sets."""
    if spec.kind is IPSetKind.NAMED_PORTS:
        out = set()
        for member in members:
            address, proto, port = member.split(",")
            if ":" not in address:
                out.add(f"{address} . {proto} . {port}")
        return out
    # Members are canonical CIDRs (the calc graph normalises them): host-only sets need no
    # parsing (a full resync renders ~20k members; ipaddress would dominate its cost).
    v4_text = [m for m in members if ":" not in m]
    if all(m.endswith("/32") for m in v4_text):
        return {m[:-3] for m in v4_text}
    v4 = [ipaddress.IPv4Network(m) for m in v4_text]
    # Interval sets refuse overlapping elements: merge them first.
    return {
        str(n.network_address) if n.prefixlen == 32 else str(n)
        for n in ipaddress.collapse_addresses(v4)
    }


# -- rules -----------------------------------------------------------------------------------


def _one_or_set(values: list[str]) -> str:
    # A single value is a plain compare (or range/prefix): cheaper than an anonymous set.
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _ports(ranges: tuple[PortRange, ...]) -> str:
    return _one_or_set([str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges])


def _nets(nets: tuple[str, ...]) -> str:
    return _one_or_set(list(nets))


def _v4_only(nets: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in nets if ":" not in n)


def _side_terms(
    m: Match, field: str, port_set: str | None, numeric: bool, names: SetNames
) -> list[str] | None:
    """Match terms for one side; None if the side can never match in IPv4."""
    addr = f"ip {field}"
    port = f"th {'s' if field == 'saddr' else 'd'}port"
    terms: list[str] = []
    if m.nets:
        nets = _v4_only(m.nets)
        if not nets:
            return None
        terms.append(f"{addr} {_nets(nets)}")
    if m.not_nets and _v4_only(m.not_nets):
        terms.append(f"{addr} != {_nets(_v4_only(m.not_nets))}")
    if m.ipset:
        terms.append(f"{addr} @{names(m.ipset)}")
    if m.not_ipset:
        terms.append(f"{addr} != @{names(m.not_ipset)}")
    if numeric and m.ports:
        terms.append(f"{port} {_ports(m.ports)}")
    if port_set:
        terms.append(f"{addr} . meta l4proto . {port} @{names(port_set)}")
    if m.not_ports:
        terms.append(f"{port} != {_ports(m.not_ports)}")
    for not_set in m.not_port_sets:
        terms.append(f"{addr} . meta l4proto . {port} != @{names(not_set)}")
    return terms


def _port_variants(m: Match) -> list[tuple[bool, str | None]]:
    """Ports match numeric ranges OR any named-port set: one rendered rule per alternative."""
    if not m.has_ports:
        return [(False, None)]
    variants: list[tuple[bool, str | None]] = [(True, None)] if m.ports else []
    variants += [(False, s) for s in m.port_sets]
    return variants


def _action(action: Action, inbound: bool) -> str:
    if action is Action.ALLOW:
        # Ingress is the last check a packet meets (after the source's egress), so an
        # ingress Allow is final; an egress Allow marks and returns so ingress still runs.
        if inbound:
            return "accept"
        return f"meta mark set meta mark | {MARK_ACCEPT:#x} return"
    if action is Action.PASS:
        return f"meta mark set meta mark | {MARK_PASS:#x} return"
    if action is Action.DENY:
        return "drop"
    return f'log prefix "{LOG_PREFIX}"'


def render_rule(rule: Rule, inbound: bool, names: SetNames) -> list[str]:
    """nft rule texts (without comment) for one policy rule; [] if it can never match."""
    if rule.ip_version == 6:
        return []  # IPv6 is not rendered yet (see POLICY.md)
    # No "meta nfproto ipv4": address matches imply it, and a rule without addresses applies
    # to every family (one expression less per rule on the packet path).
    head: list[str] = []
    if rule.protocol is not None:
        head.append(f"meta l4proto {rule.protocol}")
    if rule.not_protocol is not None:
        head.append(f"meta l4proto != {rule.not_protocol}")
    icmp = "icmpv6" if rule.protocol == 58 else "icmp"
    if rule.icmp_type is not None:
        head.append(f"{icmp} type {rule.icmp_type}")
        if rule.icmp_code is not None:
            head.append(f"{icmp} code {rule.icmp_code}")
    if rule.not_icmp_type is not None:
        if rule.not_icmp_code is not None:
            head.append(
                f"{icmp} type . {icmp} code != {{ {rule.not_icmp_type} . {rule.not_icmp_code} }}"
            )
        else:
            head.append(f"{icmp} type != {rule.not_icmp_type}")
    out: list[str] = []
    for src_numeric, src_set in _port_variants(rule.src):
        src = _side_terms(rule.src, "saddr", src_set, src_numeric, names)
        if src is None:
            return []
        for dst_numeric, dst_set in _port_variants(rule.dst):
            dst = _side_terms(rule.dst, "daddr", dst_set, dst_numeric, names)
            if dst is None:
                return []
            out.append(" ".join([*head, *src, *dst, _action(rule.action, inbound)]))
    return out


def policy_rules(program: PolicyProgram, inbound: bool, names: SetNames) -> list[str]:
    rules = program.inbound if inbound else program.outbound
    return [tagged(text) for rule in rules for text in render_rule(rule, inbound, names)]


# -- endpoint chains -------------------------------------------------------------------------


def has_pass(program: PolicyProgram, inbound: bool) -> bool:
    return any(r.action is Action.PASS for r in (program.inbound if inbound else program.outbound))


def policy_needs_chain(program: PolicyProgram, inbound: bool, profile: bool) -> bool:
    """Profiles, and policies with a Pass rule, get a chain of their own; the rules of other
    policies are placed inline in the endpoint chains (a jump per policy per new connection
    measurably costs more than the policy's rules themselves)."""
    rules = program.inbound if inbound else program.outbound
    return bool(rules) and (profile or has_pass(program, inbound))


def union_spec(set_id: str) -> IPSetSpec:
    return IPSetSpec(set_id, IPSetKind.NETS, "")


def union_members(state: DataplaneState, constituents: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for set_id in constituents:
        out |= state.ipset_members.get(set_id, set())
    return out


def endpoint_rules(
    ep: EndpointPolicy,
    inbound: bool,
    state: DataplaneState,
    present: set[str],
    names: SetNames,
    unions: dict[str, tuple[str, ...]] | None = None,
) -> list[str]:
    """The endpoint's chain: each policy's rules in order (inline, or a jump to its chain
    when it can Pass); ``present`` names the profile/policy chains that exist. Runs of inline
    rules are shortened by ``rule_opt`` (dead rules dropped, unions of selector sets); the
    union sets used are added to ``unions``."""
    used: dict[str, tuple[str, ...]] = {} if unions is None else unions
    union_names: dict[str, str] = {}

    def name(set_id: str) -> str:
        if not is_union(set_id):
            return names(set_id)
        if set_id not in union_names:
            members = union_members(state, used[set_id])
            union_names[set_id] = kernel_set_name(union_spec(set_id), members)
        return union_names[set_id]

    rules = [tagged(f"meta mark set meta mark & {~MARK_MASK & 0xFFFFFFFF:#x}")]
    segment: list[Item] = []

    def flush() -> None:
        for guard, rule in optimise(segment, used):
            rules.extend(tagged(guard + text) for text in render_rule(rule, inbound, name))
        segment.clear()

    policy_ids = ep.ingress_policies if inbound else ep.egress_policies
    pass_possible = False
    for policy_id in policy_ids:
        program = state.policies.get(policy_id)
        if program is None:
            continue
        # After a policy that can Pass, the rest of the tier is skipped once it did.
        guard = f"meta mark & {MARK_PASS:#x} == 0 " if pass_possible else ""
        chain = policy_chain(policy_id, inbound)
        if chain in present:
            flush()
            rules.append(tagged(f"{guard}jump {chain}"))
            if not inbound:
                rules.append(tagged(f"meta mark & {MARK_ACCEPT:#x} != 0 return"))
            pass_possible = True
            continue
        segment += [(guard, rule) for rule in (program.inbound if inbound else program.outbound)]
    flush()
    if policy_ids:
        end_of_tier = f"meta mark & {MARK_PASS:#x} == 0 drop" if pass_possible else "drop"
        rules.append(tagged(end_of_tier))
    for profile in ep.profiles:
        chain = policy_chain(profile, inbound, profile=True)
        if chain in present:
            rules.append(tagged(f"jump {chain}"))
            if not inbound:
                rules.append(tagged(f"meta mark & {MARK_ACCEPT:#x} != 0 return"))
    rules.append(tagged("drop"))
    return rules


def static_chains() -> dict[str, list[str]]:
    chains = {name: [tagged(r) for r in rules] for name, (_, rules) in BASE_CHAINS.items()}
    chains.update({name: [tagged(r) for r in rules] for name, rules in DISPATCH_CHAINS.items()})
    return chains


def chain_header(name: str) -> str:
    base = BASE_CHAINS.get(name)
    return f"add chain {FAMILY} {TABLE} {name}" + (f" {{ {base[0]} }}" if base else "")


def proto_number(value: object) -> str:
    """Normalise an inet_proto as nft prints it ("tcp") to its number."""
    if isinstance(value, int):
        return str(value)
    for number, name in _PROTO_NAMES.items():
        if value == name:
            return str(number)
    return str(value)
