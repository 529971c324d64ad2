"""Calico NetworkPolicy, GlobalNetworkPolicy and Profile specs."""

from __future__ import annotations

from typing import Any

from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    DNS1123_LABEL_RE,
    Fields,
    as_bool,
    as_list,
    as_number,
    as_str,
    check_labels,
    check_selector,
    item,
    one_of,
)
from libcalico.resources.validation.rules import (
    GLOBAL_ONLY_IN_NAMESPACE_SELECTOR,
    contains_global,
    validate_rules,
)

POLICY_TYPES = ("Ingress", "Egress")
DEFAULT_TIER = "default"
PERFORMANCE_HINTS = ("AssumeNeededOnEveryNode",)

NETWORK_POLICY_FIELDS = frozenset(
    {
        "tier",
        "order",
        "selector",
        "types",
        "ingress",
        "egress",
        "serviceAccountSelector",
        "performanceHints",
    }
)
GLOBAL_NETWORK_POLICY_FIELDS = NETWORK_POLICY_FIELDS | {
    "doNotTrack",
    "preDNAT",
    "applyOnForward",
    "namespaceSelector",
}


def default_policy_types(has_ingress: bool, has_egress: bool) -> list[str]:
    """Calico's default for an empty `types`: Ingress unless the policy has only egress rules."""
    if not has_egress:
        return ["Ingress"]
    if not has_ingress:
        return ["Egress"]
    return ["Ingress", "Egress"]


def validate_network_policy_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    return _policy_spec(value, NETWORK_POLICY_FIELDS, global_policy=False)


def validate_global_network_policy_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    out = _policy_spec(value, GLOBAL_NETWORK_POLICY_FIELDS, global_policy=True)
    fields = Fields(value if value is not None else {}, "spec", GLOBAL_NETWORK_POLICY_FIELDS)
    for key in ("doNotTrack", "preDNAT", "applyOnForward"):
        if fields.has(key):
            out[key] = as_bool(fields.get(key), fields.at(key))
    do_not_track = out.get("doNotTrack", False)
    pre_dnat = out.get("preDNAT", False)
    if do_not_track and pre_dnat:
        raise ValidationError(
            "spec.preDNAT", "PreDNAT and DoNotTrack cannot both be true, for a given PolicySpec"
        )
    if pre_dnat and out.get("egress"):
        raise ValidationError("spec.egress", "PreDNAT PolicySpec cannot have any Egress rules")
    if pre_dnat and "Egress" in out["types"]:
        raise ValidationError("spec.types", "PreDNAT PolicySpec cannot have 'Egress' Type")
    if (do_not_track or pre_dnat) and not out.get("applyOnForward", False):
        raise ValidationError(
            "spec.applyOnForward",
            "ApplyOnForward must be true if either PreDNAT or DoNotTrack is true, for a given "
            "PolicySpec",
        )
    if fields.has("namespaceSelector"):
        text = check_selector(fields.get("namespaceSelector"), "spec.namespaceSelector")
        if contains_global(text):
            raise ValidationError("spec.namespaceSelector", GLOBAL_ONLY_IN_NAMESPACE_SELECTOR)
        if text:
            out["namespaceSelector"] = text
    return out


def _policy_spec(value: Any, allowed: frozenset[str], *, global_policy: bool) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", allowed)
    out: dict[str, Any] = {}

    tier = as_str(fields.get("tier") or DEFAULT_TIER, fields.at("tier"))
    if not DNS1123_LABEL_RE.match(tier):
        raise ValidationError(fields.at("tier"), f"{tier!r} is not a valid tier name")
    out["tier"] = tier

    if fields.has("order"):
        out["order"] = as_number(fields.get("order"), fields.at("order"))

    for key in ("selector", "serviceAccountSelector"):
        if fields.has(key):
            text = check_selector(fields.get(key), fields.at(key))
            if contains_global(text):
                raise ValidationError(fields.at(key), GLOBAL_ONLY_IN_NAMESPACE_SELECTOR)
            if text:
                out[key] = text

    for direction in ("ingress", "egress"):
        if fields.has(direction):
            rules = validate_rules(
                fields.get(direction),
                fields.at(direction),
                direction,
                global_policy=global_policy,
            )
            if rules:
                out[direction] = rules

    types: list[str] = []
    if fields.has("types"):
        at = fields.at("types")
        for i, raw in enumerate(as_list(fields.get("types"), at)):
            policy_type = one_of(raw, item(at, i), POLICY_TYPES)
            if policy_type in types:
                raise ValidationError(item(at, i), f"'{policy_type}' type specified more than once")
            types.append(policy_type)
    out["types"] = types or default_policy_types("ingress" in out, "egress" in out)

    if fields.has("performanceHints"):
        at = fields.at("performanceHints")
        out["performanceHints"] = [
            one_of(raw, item(at, i), PERFORMANCE_HINTS)
            for i, raw in enumerate(as_list(fields.get("performanceHints"), at))
        ]
    return out


def validate_profile_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(
        value if value is not None else {}, "spec", {"ingress", "egress", "labelsToApply"}
    )
    out: dict[str, Any] = {}
    for direction in ("ingress", "egress"):
        if fields.has(direction):
            rules = validate_rules(
                fields.get(direction), fields.at(direction), direction, global_policy=True
            )
            if rules:
                out[direction] = rules
    if fields.has("labelsToApply"):
        out["labelsToApply"] = check_labels(fields.get("labelsToApply"), fields.at("labelsToApply"))
    return out
