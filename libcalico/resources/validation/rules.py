"""Calico policy rules (Rule, EntityRule, ICMP and HTTP matches), shared by every policy kind.

Normalization follows what Calico prints back: ports as ints or "a:b", nets as canonical
CIDRs, empty match fields dropped, `source` and `destination` always present.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_int,
    as_list,
    as_str,
    as_str_list,
    check_annotations,
    check_selector,
    child,
    item,
    one_of,
    parse_cidr,
    parse_port,
    parse_protocol,
    protocol_supports_ports,
)

Direction = Literal["ingress", "egress"]

ACTIONS = ("Allow", "Deny", "Log", "Pass")
MAX_RULES_PER_DIRECTION = 1024

RULE_FIELDS = frozenset(
    {
        "action",
        "ipVersion",
        "protocol",
        "icmp",
        "notProtocol",
        "notICMP",
        "source",
        "destination",
        "http",
        "metadata",
    }
)
ENTITY_FIELDS = frozenset(
    {
        "nets",
        "notNets",
        "selector",
        "notSelector",
        "namespaceSelector",
        "services",
        "ports",
        "notPorts",
        "serviceAccounts",
    }
)

PORTS_NEED_PROTOCOL = "rules that specify ports must set protocol to TCP or UDP or SCTP"
ICMP_NEEDS_PROTOCOL = "rules that specify ICMP fields must set protocol to ICMP or ICMPv6"
GLOBAL_ONLY_IN_NAMESPACE_SELECTOR = "global() can only be used in an EntityRule namespaceSelector"
_GLOBAL_ALONE_RE = re.compile(r"^\s*global\(\s*\)\s*$")


def contains_global(selector: str) -> bool:
    return "global(" in selector


def validate_rules(
    value: Any, path: str, direction: Direction, *, global_policy: bool
) -> list[dict[str, Any]]:
    rules = as_list(value, path)
    if len(rules) > MAX_RULES_PER_DIRECTION:
        raise ValidationError(
            path, f"too many rules: {len(rules)} (at most {MAX_RULES_PER_DIRECTION})"
        )
    return [
        validate_rule(rule, item(path, i), direction, global_policy=global_policy)
        for i, rule in enumerate(rules)
    ]


def validate_rule(
    value: Any, path: str, direction: Direction, *, global_policy: bool
) -> dict[str, Any]:
    fields = Fields(value, path, RULE_FIELDS)
    out: dict[str, Any] = {}

    if not fields.has("action"):
        raise ValidationError(fields.at("action"), f"required: one of {', '.join(ACTIONS)}")
    out["action"] = one_of(fields.get("action"), fields.at("action"), ACTIONS)

    ip_version: int | None = None
    if fields.has("ipVersion"):
        ip_version = as_int(fields.get("ipVersion"), fields.at("ipVersion"))
        if ip_version not in (4, 6):
            raise ValidationError(fields.at("ipVersion"), f"{ip_version} must be 4 or 6")
        out["ipVersion"] = ip_version

    protocol = _optional_protocol(fields, "protocol", out)
    not_protocol = _optional_protocol(fields, "notProtocol", out)

    for key in ("icmp", "notICMP"):
        if fields.has(key):
            out[key] = _icmp(fields.get(key), fields.at(key))
    if "icmp" in out and protocol not in ("ICMP", "ICMPv6"):
        raise ValidationError(fields.at("icmp"), ICMP_NEEDS_PROTOCOL)
    for name, version in (("ICMP", 4), ("ICMPv6", 6)):
        if name in (protocol, not_protocol) and ip_version not in (None, version):
            raise ValidationError(fields.at("ipVersion"), f"must be {version} with protocol {name}")

    for side in ("source", "destination"):
        out[side] = _entity(fields.get(side), fields.at(side))

    _check_ports_protocol(out, fields, protocol)
    _check_net_versions(out, fields, ip_version)
    _check_services(out, fields, direction, global_policy)

    if fields.has("http"):
        out["http"] = _http(fields.get("http"), fields.at("http"))
        if out["action"] != "Allow":
            raise ValidationError(fields.at("http"), "only valid for Allow rules")
        if direction == "egress":
            raise ValidationError(fields.at("http"), "not allowed in egress rules")
        if protocol is not None and protocol != "TCP":
            raise ValidationError(
                fields.at("protocol"), "rules that specify HTTP fields must set protocol to TCP"
            )

    if fields.has("metadata"):
        meta = Fields(fields.get("metadata"), fields.at("metadata"), {"annotations"})
        out["metadata"] = {}
        if meta.has("annotations"):
            out["metadata"]["annotations"] = check_annotations(
                meta.get("annotations"), meta.at("annotations")
            )
    return out


def _optional_protocol(fields: Fields, key: str, out: dict[str, Any]) -> int | str | None:
    if not fields.has(key):
        return None
    protocol = parse_protocol(fields.get(key), fields.at(key))
    out[key] = protocol
    return protocol


def _icmp(value: Any, path: str) -> dict[str, int]:
    fields = Fields(value, path, {"type", "code"})
    out: dict[str, int] = {}
    if fields.has("type"):
        out["type"] = as_int(fields.get("type"), fields.at("type"), 0, 254)
    if fields.has("code"):
        out["code"] = as_int(fields.get("code"), fields.at("code"), 0, 255)
        if "type" not in out:
            raise ValidationError(fields.at("code"), "ICMP code specified without an ICMP type")
    return out


def _entity(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    fields = Fields(value, path, ENTITY_FIELDS)
    out: dict[str, Any] = {}

    for key in ("nets", "notNets"):
        if fields.has(key):
            at = fields.at(key)
            nets = [
                str(parse_cidr(v, item(at, i), strict=True))
                for i, v in enumerate(as_list(fields.get(key), at))
            ]
            if nets:
                out[key] = nets

    for key in ("selector", "notSelector"):
        if fields.has(key):
            text = check_selector(fields.get(key), fields.at(key))
            if contains_global(text):
                raise ValidationError(fields.at(key), GLOBAL_ONLY_IN_NAMESPACE_SELECTOR)
            if text:
                out[key] = text

    if fields.has("namespaceSelector"):
        text = check_selector(fields.get("namespaceSelector"), fields.at("namespaceSelector"))
        if contains_global(text) and not _GLOBAL_ALONE_RE.match(text):
            raise ValidationError(
                fields.at("namespaceSelector"), "global() cannot be combined with other selectors"
            )
        if text:
            out["namespaceSelector"] = text

    for key in ("ports", "notPorts"):
        if fields.has(key):
            at = fields.at(key)
            ports = [parse_port(v, item(at, i)) for i, v in enumerate(as_list(fields.get(key), at))]
            if ports:
                out[key] = ports

    if fields.has("serviceAccounts"):
        accounts = Fields(
            fields.get("serviceAccounts"), fields.at("serviceAccounts"), {"names", "selector"}
        )
        match: dict[str, Any] = {}
        if accounts.has("names"):
            names = as_str_list(accounts.get("names"), accounts.at("names"))
            if names:
                match["names"] = names
        if accounts.has("selector"):
            selector = check_selector(accounts.get("selector"), accounts.at("selector"))
            if contains_global(selector):
                raise ValidationError(accounts.at("selector"), GLOBAL_ONLY_IN_NAMESPACE_SELECTOR)
            if selector:
                match["selector"] = selector
        out["serviceAccounts"] = match

    if fields.has("services"):
        out["services"] = _services(fields, out)
    return out


def _services(fields: Fields, entity: dict[str, Any]) -> dict[str, str]:
    at = fields.at("services")
    services = Fields(fields.get("services"), at, {"name", "namespace"})
    out = {
        k: as_str(services.get(k), services.at(k)) for k in ("name", "namespace") if services.has(k)
    }
    if not out.get("name"):
        raise ValidationError(services.at("name"), "must specify a service name")
    conflicts = (
        ("namespaceSelector", "NamespaceSelector"),
        ("selector", "Selector/NotSelector"),
        ("notSelector", "Selector/NotSelector"),
        ("serviceAccounts", "ServiceAccounts"),
        ("nets", "Nets/NotNets"),
        ("notNets", "Nets/NotNets"),
    )
    for key, label in conflicts:
        if key in entity:
            raise ValidationError(at, f"cannot specify {label} and Services on the same rule")
    return out


def _check_ports_protocol(out: dict[str, Any], fields: Fields, protocol: int | str | None) -> None:
    if protocol_supports_ports(protocol):
        return
    for side in ("source", "destination"):
        for key in ("ports", "notPorts"):
            if key in out[side]:
                raise ValidationError(child(fields.at(side), key), PORTS_NEED_PROTOCOL)


def _check_net_versions(out: dict[str, Any], fields: Fields, ip_version: int | None) -> None:
    """One rule matches one IP family: its nets must agree with each other and ipVersion."""
    seen: set[int] = set()
    for side in ("source", "destination"):
        for key in ("nets", "notNets"):
            nets = out[side].get(key)
            if not nets:
                continue
            path = child(fields.at(side), key)
            versions = {6 if ":" in n else 4 for n in nets}
            if ip_version is not None and versions != {ip_version}:
                raise ValidationError(path, "rule IP version doesn't match CIDR version")
            seen |= versions
            if len(seen) > 1:
                raise ValidationError(path, "rule contains both IPv4 and IPv6 CIDRs")


def _check_services(
    out: dict[str, Any], fields: Fields, direction: Direction, global_policy: bool
) -> None:
    # Services select a rule's peer: the source of ingress, the destination of egress.
    wrong_side = "destination" if direction == "ingress" else "source"
    if "services" in out[wrong_side]:
        raise ValidationError(
            child(fields.at(wrong_side), "services"),
            f"not allowed in {direction} rule {wrong_side}",
        )
    peer = "source" if direction == "ingress" else "destination"
    services = out[peer].get("services")
    if services is None:
        return
    for key in ("ports", "notPorts"):
        if peer == "destination" and key in out[peer]:
            raise ValidationError(
                child(fields.at(peer), key), f"cannot specify {key} with a service selector"
            )
    if global_policy and not services.get("namespace"):
        raise ValidationError(
            child(child(fields.at(peer), "services"), "namespace"), "must specify a namespace"
        )


def _http(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(value, path, {"methods", "paths"})
    out: dict[str, Any] = {}
    if fields.has("methods"):
        methods = as_str_list(fields.get("methods"), fields.at("methods"))
        if len(set(methods)) != len(methods):
            raise ValidationError(fields.at("methods"), f"duplicate methods: {methods}")
        out["methods"] = methods
    if fields.has("paths"):
        at = fields.at("paths")
        paths: list[dict[str, str]] = []
        for i, raw in enumerate(as_list(fields.get("paths"), at)):
            entry = Fields(raw, item(at, i), {"exact", "prefix"})
            kinds = [k for k in ("exact", "prefix") if entry.get(k)]
            if len(kinds) != 1:
                raise ValidationError(item(at, i), "exactly one of 'exact' or 'prefix' must be set")
            text = as_str(entry.get(kinds[0]), entry.at(kinds[0]))
            if not text.startswith("/") or any(c in text for c in "? #"):
                raise ValidationError(
                    entry.at(kinds[0]),
                    f"invalid path {text!r}: must start with '/' and not contain '?', ' ' or '#'",
                )
            paths.append({kinds[0]: text})
        out["paths"] = paths
    return out
