"""A reference evaluator of ``DataplaneState``: the verdict a correct dataplane must give.

It walks the intended state the way the rendered chains do (egress of the source endpoint,
then ingress of the destination; policies in order; first Allow/Deny wins; Pass jumps to the
profiles; a direction with policies and no verdict is denied), so calc-graph semantics can
be checked against the conformance cases without a kernel.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from services.felix.calc.model import (
    Action,
    DataplaneState,
    EndpointPolicy,
    IPSetKind,
    Match,
    PolicyProgram,
    Rule,
)


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    protocol: int
    sport: int
    dport: int


def _in_nets(address: str, nets: tuple[str, ...] | set[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(n) for n in nets)


def _in_ports(port: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


def _in_set(state: DataplaneState, set_id: str, address: str, proto: int, port: int) -> bool:
    members = state.ipset_members[set_id]
    if state.ipsets[set_id].kind is IPSetKind.NETS:
        return _in_nets(address, members)
    return f"{address},{proto},{port}" in members


def _side(state: DataplaneState, m: Match, address: str, proto: int, port: int) -> bool:
    if m.nets and not _in_nets(address, m.nets):
        return False
    if m.not_nets and _in_nets(address, m.not_nets):
        return False
    if m.ipset and not _in_set(state, m.ipset, address, proto, port):
        return False
    if m.not_ipset and _in_set(state, m.not_ipset, address, proto, port):
        return False
    if m.has_ports and not (
        _in_ports(port, m.ports)
        or any(_in_set(state, s, address, proto, port) for s in m.port_sets)
    ):
        return False
    if m.not_ports and _in_ports(port, m.not_ports):
        return False
    return not any(_in_set(state, s, address, proto, port) for s in m.not_port_sets)


def rule_matches(state: DataplaneState, rule: Rule, pkt: Packet) -> bool:
    if rule.protocol is not None and rule.protocol != pkt.protocol:
        return False
    if rule.not_protocol is not None and rule.not_protocol == pkt.protocol:
        return False
    if rule.ip_version == 6:
        return False
    return _side(state, rule.src, pkt.src, pkt.protocol, pkt.sport) and _side(
        state, rule.dst, pkt.dst, pkt.protocol, pkt.dport
    )


def _run(
    state: DataplaneState, programs: list[PolicyProgram], inbound: bool, pkt: Packet
) -> Action | None:
    """First terminal action over the programs; None when nothing decided."""
    for program in programs:
        for rule in program.inbound if inbound else program.outbound:
            if rule_matches(state, rule, pkt) and rule.action is not Action.LOG:
                return rule.action
    return None


def endpoint_allows(state: DataplaneState, ep: EndpointPolicy, inbound: bool, pkt: Packet) -> bool:
    policy_ids = ep.ingress_policies if inbound else ep.egress_policies
    for policy_id in policy_ids:
        verdict = _run(state, [state.policies[policy_id]], inbound, pkt)
        if verdict is Action.ALLOW:
            return True
        if verdict is Action.DENY:
            return False
        if verdict is Action.PASS:
            break
    else:
        if policy_ids:
            return False
    for profile in ep.profiles:
        program = state.profiles.get(profile)
        if program is None:
            continue
        verdict = _run(state, [program], inbound, pkt)
        if verdict is Action.ALLOW:
            return True
        if verdict is Action.DENY:
            return False
    return False


def connection_allowed(
    state: DataplaneState,
    src: EndpointPolicy | None,
    dst: EndpointPolicy | None,
    pkt: Packet,
) -> bool:
    if src is not None and not endpoint_allows(state, src, False, pkt):
        return False
    return dst is None or endpoint_allows(state, dst, True, pkt)
