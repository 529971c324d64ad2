"""BGPFilter spec: ordered import/export rules per address family.

    spec:
      exportV4: [{action: Reject, matchOperator: In, cidr: 10.0.0.0/8,
                  prefixLength: {min: 24, max: 32}, source: RemotePeers, interface: "eth*"}]
      importV4 / exportV6 / importV6: the same, with the family's CIDRs

A rule matches a route when every condition it gives holds; the first matching rule's action
wins, and a route no rule matches goes on to the next filter (then to Calico's default).
"""

from __future__ import annotations

import re
from typing import Any

from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_int,
    as_list,
    as_str,
    item,
    one_of,
    parse_cidr,
)

RULE_LISTS = {"exportV4": 4, "importV4": 4, "exportV6": 6, "importV6": 6}
MATCH_OPERATORS = ("Equal", "NotEqual", "In", "NotIn")
ACTIONS = ("Accept", "Reject")
SOURCES = ("RemotePeers",)
_RULE_FIELDS = frozenset({"cidr", "matchOperator", "action", "prefixLength", "source", "interface"})
# An interface name or a glob over names (BIRD's `ifname ~ "pattern"`): no quotes or spaces.
_INTERFACE_RE = re.compile(r"^[A-Za-z0-9_.:@*?\-]{1,64}$")
_MAX_PREFIX_LENGTH = {4: 32, 6: 128}


def _prefix_length(value: Any, path: str, version: int) -> dict[str, int]:
    fields = Fields(value, path, {"min", "max"})
    top = _MAX_PREFIX_LENGTH[version]
    out = {
        key: as_int(fields.get(key), fields.at(key), 0, top)
        for key in ("min", "max")
        if fields.has(key)
    }
    if "min" in out and "max" in out and out["min"] > out["max"]:
        raise ValidationError(fields.at("min"), f"{out['min']} is greater than max {out['max']}")
    return out


def _rule(value: Any, path: str, version: int) -> dict[str, Any]:
    fields = Fields(value, path, _RULE_FIELDS)
    if not fields.has("action"):
        raise ValidationError(fields.at("action"), f"required (one of {', '.join(ACTIONS)})")
    out: dict[str, Any] = {"action": one_of(fields.get("action"), fields.at("action"), ACTIONS)}
    if fields.has("cidr") != fields.has("matchOperator"):
        missing = "matchOperator" if fields.has("cidr") else "cidr"
        given = "cidr" if missing == "matchOperator" else "matchOperator"
        raise ValidationError(fields.at(missing), f"required when {given} is set")
    if fields.has("cidr"):
        network = parse_cidr(fields.get("cidr"), fields.at("cidr"), strict=True)
        if network.version != version:
            raise ValidationError(
                fields.at("cidr"), f"{network} is not an IPv{version} CIDR (a V{version} rule list)"
            )
        out["cidr"] = str(network)
        out["matchOperator"] = one_of(
            fields.get("matchOperator"), fields.at("matchOperator"), MATCH_OPERATORS
        )
    if fields.has("prefixLength"):
        if out.get("matchOperator") not in ("In", "NotIn"):
            raise ValidationError(
                fields.at("prefixLength"), "only valid with a cidr and matchOperator In or NotIn"
            )
        out["prefixLength"] = _prefix_length(
            fields.get("prefixLength"), fields.at("prefixLength"), version
        )
    if fields.has("source"):
        out["source"] = one_of(fields.get("source"), fields.at("source"), SOURCES)
    if fields.has("interface"):
        text = as_str(fields.get("interface"), fields.at("interface"))
        if not _INTERFACE_RE.match(text):
            raise ValidationError(
                fields.at("interface"),
                f"{text!r} is not an interface name or glob (letters, digits, _.:@-*?)",
            )
        out["interface"] = text
    return out


def validate_bgp_filter_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", set(RULE_LISTS))
    out: dict[str, Any] = {}
    for key, version in RULE_LISTS.items():
        if fields.has(key):
            at = fields.at(key)
            rules = as_list(fields.get(key), at)
            out[key] = [_rule(raw, item(at, i), version) for i, raw in enumerate(rules)]
    return out
