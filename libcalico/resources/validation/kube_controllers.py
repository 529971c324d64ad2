"""KubeControllersConfiguration: which of calico-kube-controllers' controllers run, and how.

Calico's fields; a controller runs when its block is present under `spec.controllers` (even
empty: `policy: {}`). Durations are Go durations ("5m", "15m0s", "0" to turn a period off).
"""

from __future__ import annotations

from typing import Any

from libcalico.resources.validation.config import LOG_LEVELS, duration_seconds
from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_int,
    as_list,
    as_mapping,
    as_str,
    check_labels,
    check_selector,
    item,
    one_of,
    parse_cidr,
)

ENABLED_DISABLED = ("Enabled", "Disabled")
# Controllers that take only a reconciler period.
GENERIC_CONTROLLERS = ("policy", "workloadEndpoint", "serviceAccount", "namespace")
CONTROLLERS = ("node", *GENERIC_CONTROLLERS, "loadBalancer")


def _duration(fields: Fields, key: str) -> str:
    text = as_str(fields.get(key), fields.at(key))
    try:
        duration_seconds(text)
    except ValueError:
        raise ValidationError(fields.at(key), f"{text!r} is not a duration (e.g. 5m)") from None
    return text


def _template(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(
        value,
        path,
        {"generateName", "interfaceCIDRs", "interfacePattern", "labels", "nodeSelector"},
    )
    out: dict[str, Any] = {}
    for key in ("generateName", "interfacePattern"):
        if fields.has(key):
            out[key] = as_str(fields.get(key), fields.at(key))
    if fields.has("interfaceCIDRs"):
        at = fields.at("interfaceCIDRs")
        cidrs = []
        for i, raw in enumerate(as_list(fields.get("interfaceCIDRs"), at)):
            text = as_str(raw, item(at, i))
            parse_cidr(text, item(at, i), strict=False)
            cidrs.append(text)
        out["interfaceCIDRs"] = cidrs
    if fields.has("labels"):
        out["labels"] = check_labels(fields.get("labels"), fields.at("labels"))
    if fields.has("nodeSelector"):
        out["nodeSelector"] = check_selector(fields.get("nodeSelector"), fields.at("nodeSelector"))
    return out


def _host_endpoint(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(value, path, {"autoCreate", "createDefaultHostEndpoint", "templates"})
    out: dict[str, Any] = {}
    for key in ("autoCreate", "createDefaultHostEndpoint"):
        if fields.has(key):
            out[key] = one_of(fields.get(key), fields.at(key), ENABLED_DISABLED)
    if fields.has("templates"):
        at = fields.at("templates")
        out["templates"] = [
            _template(t, item(at, i)) for i, t in enumerate(as_list(fields.get("templates"), at))
        ]
    return out


def _node(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(
        value if value is not None else {},
        path,
        {"reconcilerPeriod", "leakGracePeriod", "syncLabels", "hostEndpoint"},
    )
    out: dict[str, Any] = {}
    for key in ("reconcilerPeriod", "leakGracePeriod"):
        if fields.has(key):
            out[key] = _duration(fields, key)
    if fields.has("syncLabels"):
        out["syncLabels"] = one_of(
            fields.get("syncLabels"), fields.at("syncLabels"), ENABLED_DISABLED
        )
    if fields.has("hostEndpoint"):
        out["hostEndpoint"] = _host_endpoint(fields.get("hostEndpoint"), fields.at("hostEndpoint"))
    return out


def _generic(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, path, {"reconcilerPeriod"})
    return (
        {"reconcilerPeriod": _duration(fields, "reconcilerPeriod")}
        if fields.has("reconcilerPeriod")
        else {}
    )


def _load_balancer(value: Any, path: str) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, path, {"assignIPs"})
    if not fields.has("assignIPs"):
        return {}
    return {
        "assignIPs": one_of(
            fields.get("assignIPs"),
            fields.at("assignIPs"),
            ("AllServices", "RequestedServicesOnly"),
        )
    }


def validate_kube_controllers_configuration_spec(
    value: Any, meta: dict[str, Any]
) -> dict[str, Any]:
    fields = Fields(
        value if value is not None else {},
        "spec",
        {
            "logSeverityScreen",
            "healthChecks",
            "etcdV3CompactionPeriod",
            "prometheusMetricsPort",
            "debugProfilePort",
            "controllers",
        },
    )
    out: dict[str, Any] = {}
    if fields.has("logSeverityScreen"):
        out["logSeverityScreen"] = one_of(
            fields.get("logSeverityScreen"), fields.at("logSeverityScreen"), LOG_LEVELS
        )
    if fields.has("healthChecks"):
        out["healthChecks"] = one_of(
            fields.get("healthChecks"), fields.at("healthChecks"), ENABLED_DISABLED
        )
    if fields.has("etcdV3CompactionPeriod"):
        out["etcdV3CompactionPeriod"] = _duration(fields, "etcdV3CompactionPeriod")
    for key in ("prometheusMetricsPort", "debugProfilePort"):
        if fields.has(key):
            out[key] = as_int(fields.get(key), fields.at(key), 0, 65535)
    if fields.has("controllers"):
        at = fields.at("controllers")
        controllers = Fields(as_mapping(fields.get("controllers"), at), at, CONTROLLERS)
        chosen: dict[str, Any] = {}
        for name in CONTROLLERS:
            if not controllers.has(name):
                continue
            raw, where = controllers.get(name), controllers.at(name)
            if name == "node":
                chosen[name] = _node(raw, where)
            elif name == "loadBalancer":
                chosen[name] = _load_balancer(raw, where)
            else:
                chosen[name] = _generic(raw, where)
        out["controllers"] = chosen
    return out
