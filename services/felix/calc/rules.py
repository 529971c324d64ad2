"""Calico v3 rules (as stored JSON) compiled into ``model.Rule`` and the IP sets they need.

Entity selectors are made effective here: a namespaced policy's rule selector without a
namespaceSelector sees only its own namespace (so does a notSelector-only or
serviceAccounts-only rule, whose positive selector becomes that namespace); a
namespaceSelector becomes a selector over the endpoints' inherited ``pcns.`` labels.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from libcalico.selector import Selector, make_unique_id, parse
from libcalico.selector.nodes import Node
from services.felix.calc.model import (
    PROTOCOL_NUMBERS,
    Action,
    IPSetKind,
    IPSetSpec,
    Match,
    PortRange,
    Rule,
)
from services.felix.calc.selectors import (
    combine,
    in_namespace,
    namespace_selector_node,
    service_accounts_node,
)


class RuleError(ValueError):
    """A rule that cannot be compiled (the policy is then rendered without it)."""


def protocol_number(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    number = PROTOCOL_NUMBERS.get(text.upper())
    if number is None:
        raise RuleError(f"unknown protocol {value!r}")
    return number


def selector_ipset(selector: Selector) -> IPSetSpec:
    return IPSetSpec(make_unique_id("s", selector.canonical), IPSetKind.NETS, selector.canonical)


def named_port_ipset(selector: Selector, protocol: int, name: str) -> IPSetSpec:
    content = f"{selector.canonical}|{protocol}|{name}"
    return IPSetSpec(
        make_unique_id("n", content), IPSetKind.NAMED_PORTS, selector.canonical, protocol, name
    )


def _nets(values: Any) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or ():
        try:
            out.append(str(ipaddress.ip_network(str(value), strict=False)))
        except ValueError as exc:
            raise RuleError(f"bad CIDR {value!r}") from exc
    return tuple(dict.fromkeys(out))


def _split_ports(values: Any) -> tuple[list[PortRange], list[str]]:
    ranges: list[PortRange] = []
    names: list[str] = []
    for value in values or ():
        if isinstance(value, int):
            ranges.append((value, value))
            continue
        text = str(value).strip()
        if text.isdigit():
            ranges.append((int(text), int(text)))
        elif ":" in text:
            low, _, high = text.partition(":")
            if not (low.isdigit() and high.isdigit()) or int(low) > int(high):
                raise RuleError(f"bad port range {value!r}")
            ranges.append((int(low), int(high)))
        elif text:
            names.append(text)
    return ranges, names


class RuleCompiler:
    """Compiles rules of one policy, collecting the IP sets they reference."""

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self.ipsets: dict[str, IPSetSpec] = {}
        self.selectors: dict[str, Selector] = {}  # by IP set id

    def compile(self, raw: dict[str, Any], ingress: bool) -> Rule:
        try:
            action = Action(raw.get("action", "Allow"))
        except ValueError as exc:
            raise RuleError(f"unknown action {raw.get('action')!r}") from exc
        protocol = protocol_number(raw.get("protocol"))
        not_protocol = protocol_number(raw.get("notProtocol"))
        icmp = raw.get("icmp") or {}
        not_icmp = raw.get("notICMP") or {}
        src_raw = raw.get("source") or {}
        dst_raw = raw.get("destination") or {}
        # Named ports resolve on the entity that owns the port: for ingress rules the
        # destination is the local endpoint, but the set is built from the selector anyway.
        src = self._match(src_raw, protocol)
        dst = self._match(dst_raw, protocol)
        if (src.has_ports or dst.has_ports or src.not_ports or dst.not_ports) and (
            protocol is None
        ):
            raise RuleError("ports need protocol TCP, UDP or SCTP")
        ip_version = raw.get("ipVersion")
        return Rule(
            action=action,
            protocol=protocol,
            not_protocol=not_protocol,
            icmp_type=icmp.get("type"),
            icmp_code=icmp.get("code"),
            not_icmp_type=not_icmp.get("type"),
            not_icmp_code=not_icmp.get("code"),
            ip_version=int(ip_version) if ip_version else None,
            src=src,
            dst=dst,
        )

    def _entity_selector(self, raw: dict[str, Any]) -> Selector | None:
        selector = raw.get("selector") or ""
        ns_selector = raw.get("namespaceSelector") or ""
        sa = raw.get("serviceAccounts") or {}
        sa_node = service_accounts_node(list(sa.get("names") or []), sa.get("selector"))
        parts: list[Node] = []
        if selector:
            parts.append(parse(selector).root)
        if ns_selector:
            parts.append(namespace_selector_node(ns_selector))
        elif self.namespace and (selector or raw.get("notSelector") or sa_node is not None):
            parts.append(in_namespace(self.namespace))
        if sa_node is not None:
            parts.append(sa_node)
        return combine(parts) if parts else None

    def _add(self, spec: IPSetSpec, selector: Selector) -> str:
        self.ipsets[spec.id] = spec
        self.selectors[spec.id] = selector
        return spec.id

    def _match(self, raw: dict[str, Any], protocol: int | None) -> Match:
        selector = self._entity_selector(raw)
        not_selector = raw.get("notSelector") or ""
        ports, port_names = _split_ports(raw.get("ports"))
        not_ports, not_port_names = _split_ports(raw.get("notPorts"))
        # A named port is looked up among the entities the rule's selector matches (all
        # endpoints when it has none).
        owner = selector or combine([])
        proto = protocol or 0
        ipset = not_ipset = None
        if selector is not None:
            ipset = self._add(selector_ipset(selector), selector)
        if not_selector:
            negated = parse(not_selector)
            not_ipset = self._add(selector_ipset(negated), negated)
        return Match(
            nets=_nets(raw.get("nets")),
            not_nets=_nets(raw.get("notNets")),
            ipset=ipset,
            not_ipset=not_ipset,
            ports=tuple(ports),
            port_sets=tuple(
                self._add(named_port_ipset(owner, proto, n), owner) for n in port_names
            ),
            not_ports=tuple(not_ports),
            not_port_sets=tuple(
                self._add(named_port_ipset(owner, proto, n), owner) for n in not_port_names
            ),
        )
