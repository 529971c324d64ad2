"""The Kubernetes kinds the project stores: Namespace, Pod, ServiceAccount, NetworkPolicy.

Only what the project reads is checked; Pod and Namespace keep every other field untouched
(Kubernetes has far more than we model). NetworkPolicy is checked as the API server would,
with its defaults (port protocol TCP, policyTypes from the rules present).
"""

from __future__ import annotations

from typing import Any

from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_bool,
    as_int,
    as_list,
    as_mapping,
    as_str,
    check_dns_subdomain,
    check_label_value,
    check_labels,
    check_port_name,
    check_qualified_name,
    child,
    item,
    one_of,
    parse_cidr,
    parse_ip,
)

SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
NETWORK_POLICY_PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")


def validate_label_selector(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(value, path, {"matchLabels", "matchExpressions"})
    out: dict[str, Any] = {}
    if fields.has("matchLabels"):
        out["matchLabels"] = check_labels(fields.get("matchLabels"), fields.at("matchLabels"))
    if fields.has("matchExpressions"):
        at = fields.at("matchExpressions")
        expressions = []
        for i, raw in enumerate(as_list(fields.get("matchExpressions"), at)):
            expr = Fields(raw, item(at, i), {"key", "operator", "values"})
            key = as_str(expr.get("key"), expr.at("key"), allow_empty=False)
            check_qualified_name(key, expr.at("key"))
            operator = one_of(expr.get("operator"), expr.at("operator"), SELECTOR_OPERATORS)
            values: list[str] = []
            if expr.has("values"):
                vat = expr.at("values")
                for j, v in enumerate(as_list(expr.get("values"), vat)):
                    text = as_str(v, item(vat, j))
                    check_label_value(text, item(vat, j))
                    values.append(text)
            if operator in ("In", "NotIn") and not values:
                raise ValidationError(
                    expr.at("values"), f"must be specified when operator is {operator}"
                )
            if operator in ("Exists", "DoesNotExist") and values:
                raise ValidationError(
                    expr.at("values"), f"may not be specified when operator is {operator}"
                )
            entry: dict[str, Any] = {"key": key, "operator": operator}
            if values:
                entry["values"] = values
            expressions.append(entry)
        out["matchExpressions"] = expressions
    return out


def _peer(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(value, path, {"podSelector", "namespaceSelector", "ipBlock"})
    out: dict[str, Any] = {}
    for key in ("podSelector", "namespaceSelector"):
        if fields.has(key):
            out[key] = validate_label_selector(fields.get(key), fields.at(key))
    if fields.has("ipBlock"):
        if out:
            raise ValidationError(
                fields.at("ipBlock"), "may not be specified with podSelector or namespaceSelector"
            )
        out["ipBlock"] = _ip_block(fields.get("ipBlock"), fields.at("ipBlock"))
    if not out:
        raise ValidationError(
            path, "must specify a peer (podSelector, namespaceSelector or ipBlock)"
        )
    return out


def _ip_block(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(value, path, {"cidr", "except"})
    if not fields.has("cidr"):
        raise ValidationError(fields.at("cidr"), "required")
    cidr = as_str(fields.get("cidr"), fields.at("cidr"))
    network = parse_cidr(cidr, fields.at("cidr"), strict=False)
    out: dict[str, Any] = {"cidr": cidr}
    if fields.has("except"):
        at = fields.at("except")
        excepts = []
        for i, raw in enumerate(as_list(fields.get("except"), at)):
            text = as_str(raw, item(at, i))
            excluded = parse_cidr(text, item(at, i), strict=False)
            if (
                excluded.version != network.version
                or not excluded.subnet_of(network)  # type: ignore[arg-type]
                or excluded.prefixlen <= network.prefixlen
            ):
                raise ValidationError(item(at, i), f"must be a strict subset of `cidr` {cidr}")
            excepts.append(text)
        out["except"] = excepts
    return out


def _port(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(value, path, {"protocol", "port", "endPort"})
    out: dict[str, Any] = {
        "protocol": one_of(fields.get("protocol"), fields.at("protocol"), NETWORK_POLICY_PROTOCOLS)
        if fields.has("protocol")
        else "TCP"
    }
    if fields.has("port"):
        port = fields.get("port")
        if isinstance(port, str):
            out["port"] = check_port_name(port, fields.at("port"))
        else:
            out["port"] = as_int(port, fields.at("port"), 1, 65535)
    if fields.has("endPort"):
        end = as_int(fields.get("endPort"), fields.at("endPort"), 1, 65535)
        if not isinstance(out.get("port"), int):
            raise ValidationError(fields.at("endPort"), "may only be specified with a numeric port")
        if end < out["port"]:
            raise ValidationError(
                fields.at("endPort"), f"must be greater than or equal to port {out['port']}"
            )
        out["endPort"] = end
    return out


def _np_rules(value: Any, path: str, peers_key: str) -> list[dict[str, Any]]:
    rules = []
    for i, raw in enumerate(as_list(value, path)):
        fields = Fields(raw, item(path, i), {peers_key, "ports"})
        rule: dict[str, Any] = {}
        if fields.has("ports"):
            at = fields.at("ports")
            rule["ports"] = [
                _port(p, item(at, j)) for j, p in enumerate(as_list(fields.get("ports"), at))
            ]
        if fields.has(peers_key):
            at = fields.at(peers_key)
            rule[peers_key] = [
                _peer(p, item(at, j)) for j, p in enumerate(as_list(fields.get(peers_key), at))
            ]
        rules.append(rule)
    return rules


def validate_k8s_network_policy_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(
        value if value is not None else {},
        "spec",
        {"podSelector", "ingress", "egress", "policyTypes"},
    )
    out: dict[str, Any] = {
        "podSelector": validate_label_selector(fields.get("podSelector") or {}, "spec.podSelector")
    }
    if fields.has("ingress"):
        out["ingress"] = _np_rules(fields.get("ingress"), fields.at("ingress"), "from")
    if fields.has("egress"):
        out["egress"] = _np_rules(fields.get("egress"), fields.at("egress"), "to")
    types: list[str] = []
    if fields.has("policyTypes"):
        at = fields.at("policyTypes")
        for i, raw in enumerate(as_list(fields.get("policyTypes"), at)):
            policy_type = one_of(raw, item(at, i), POLICY_TYPES)
            if policy_type in types:
                raise ValidationError(item(at, i), f"duplicate value {policy_type!r}")
            types.append(policy_type)
    # The API server's default: Ingress always, Egress when there are egress rules.
    out["policyTypes"] = types or (["Ingress", "Egress"] if out.get("egress") else ["Ingress"])
    return out


def validate_pod_body(fields: Fields, meta: dict[str, Any]) -> dict[str, Any]:
    """Pod: everything kept; the fields the project reads are checked."""
    out: dict[str, Any] = {}
    if fields.has("spec"):
        spec = dict(as_mapping(fields.get("spec"), "spec"))
        if spec.get("serviceAccountName"):
            check_dns_subdomain(spec["serviceAccountName"], "spec.serviceAccountName")
        if spec.get("nodeName") is not None:
            as_str(spec["nodeName"], "spec.nodeName")
        if spec.get("hostNetwork") is not None:
            as_bool(spec["hostNetwork"], "spec.hostNetwork")
        for i, container in enumerate(as_list(spec.get("containers") or [], "spec.containers")):
            at = item("spec.containers", i)
            container = as_mapping(container, at)
            ports_at = child(at, "ports")
            for j, port in enumerate(as_list(container.get("ports") or [], ports_at)):
                port = as_mapping(port, item(ports_at, j))
                port_path = item(ports_at, j)
                if port.get("name"):
                    check_port_name(
                        as_str(port["name"], child(port_path, "name")), child(port_path, "name")
                    )
                as_int(port.get("containerPort"), child(port_path, "containerPort"), 1, 65535)
                if port.get("protocol") is not None:
                    one_of(port["protocol"], child(port_path, "protocol"), NETWORK_POLICY_PROTOCOLS)
        out["spec"] = spec
    if fields.has("status"):
        status = dict(as_mapping(fields.get("status"), "status"))
        if status.get("podIP"):
            parse_ip(status["podIP"], "status.podIP")
        for i, entry in enumerate(as_list(status.get("podIPs") or [], "status.podIPs")):
            at = item("status.podIPs", i)
            parse_ip(as_mapping(entry, at).get("ip"), child(at, "ip"))
        out["status"] = status
    return out


# The API server sets this label on every Namespace, equal to its name, whatever a client
# writes; namespaceSelectors (`kubernetes.io/metadata.name in {...}`) rely on it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def validate_namespace_body(fields: Fields, meta: dict[str, Any]) -> dict[str, Any]:
    meta["labels"] = {**(meta.get("labels") or {}), NAMESPACE_NAME_LABEL: meta["name"]}
    return {k: dict(as_mapping(fields.get(k), k)) for k in ("spec", "status") if fields.has(k)}


def validate_service_account_body(fields: Fields, meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("secrets", "imagePullSecrets"):
        if fields.has(key):
            out[key] = as_list(fields.get(key), key)
    if fields.has("automountServiceAccountToken"):
        out["automountServiceAccountToken"] = as_bool(
            fields.get("automountServiceAccountToken"), "automountServiceAccountToken"
        )
    return out
