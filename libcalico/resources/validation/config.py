"""FelixConfiguration, BGPConfiguration, BGPPeer and ClusterInformation specs.

FelixConfiguration has ~200 fields that grow every release; rather than freeze a list that
would reject valid newer ones, field names must be lowerCamelCase and the fields this project
reads are type-checked.
"""

from __future__ import annotations

import re
from typing import Any

from libcalico.resources.validation.endpoints import parse_as_number
from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_bool,
    as_int,
    as_list,
    as_mapping,
    as_str,
    as_str_list,
    check_dns_subdomain,
    check_selector,
    item,
    one_of,
    parse_cidr,
    parse_ip,
)

LOG_LEVELS = ("Trace", "Debug", "Info", "Warning", "Error", "Fatal")
_FIELD_NAME_RE = re.compile(r"^[a-z][A-Za-z0-9]*$")
_DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# BGP communities: standard "a:b" (16-bit halves) or large "a:b:c" (32-bit parts).
_STANDARD_COMMUNITY_RE = re.compile(r"^(\d+):(\d+)$")
_LARGE_COMMUNITY_RE = re.compile(r"^(\d+):(\d+):(\d+)$")


def duration_seconds(text: str) -> float:
    """A Go duration ("90s", "1m30s", "0") in seconds; ValueError when it is not one."""
    if not _DURATION_RE.match(text):
        raise ValueError(f"{text!r} is not a duration (e.g. 90s)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text))


def _duration(fields: Fields, key: str) -> str:
    text = as_str(fields.get(key), fields.at(key))
    if not _DURATION_RE.match(text):
        raise ValidationError(fields.at(key), f"{text!r} is not a duration (e.g. 120s)")
    return text


def parse_community(text: str) -> tuple[int, ...] | None:
    """(a, b) for a standard community, (a, b, c) for a large one, None if neither."""
    standard = _STANDARD_COMMUNITY_RE.match(text)
    if standard:
        parts = tuple(int(p) for p in standard.groups())
        return parts if all(p <= 0xFFFF for p in parts) else None
    large = _LARGE_COMMUNITY_RE.match(text)
    if large:
        parts = tuple(int(p) for p in large.groups())
        return parts if all(p <= 0xFFFFFFFF for p in parts) else None
    return None


_FELIX_BOOLS = (
    "ipipEnabled",
    "vxlanEnabled",
    "wireguardEnabled",
    "bpfEnabled",
    "healthEnabled",
    "prometheusMetricsEnabled",
    "usageReportingEnabled",
    "ipv6Support",
)
_FELIX_PORTS = ("healthPort", "prometheusMetricsPort", "vxlanPort", "wireguardListeningPort")
_FELIX_INTS = ("ipipMTU", "vxlanMTU", "vxlanMTUV6", "wireguardMTU", "vxlanVNI")
_FELIX_DURATIONS = (
    "reportingInterval",
    "reportingTTL",
    "iptablesRefreshInterval",
    "ipsetsRefreshInterval",
    "routeRefreshInterval",
)
_FELIX_ENUMS = {
    "logSeverityScreen": LOG_LEVELS,
    "logSeverityFile": LOG_LEVELS,
    "logSeveritySys": LOG_LEVELS,
    "defaultEndpointToHostAction": ("Drop", "Accept", "Return"),
    "iptablesFilterAllowAction": ("Accept", "Return"),
    "iptablesMangleAllowAction": ("Accept", "Return"),
    "routeSource": ("WorkloadIPs", "CalicoIPAM"),
    "nftablesMode": ("Disabled", "Enabled", "Auto"),
    "bpfLogLevel": ("Off", "Info", "Debug"),
    "serviceLoopPrevention": ("Drop", "Reject", "Disabled"),
}


def validate_felix_configuration_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    spec = as_mapping(value if value is not None else {}, "spec")
    for key in spec:
        if not _FIELD_NAME_RE.match(key):
            raise ValidationError(f"spec.{key}", "unknown field (not a FelixConfiguration field)")
    fields = Fields(spec, "spec", set(spec))
    out: dict[str, Any] = dict(fields.values)
    for key in _FELIX_BOOLS:
        if fields.has(key):
            out[key] = as_bool(fields.get(key), fields.at(key))
    for key in _FELIX_PORTS:
        if fields.has(key):
            out[key] = as_int(fields.get(key), fields.at(key), 1, 65535)
    for key in _FELIX_INTS:
        if fields.has(key):
            out[key] = as_int(fields.get(key), fields.at(key), 0)
    for key in _FELIX_DURATIONS:
        if fields.has(key):
            _duration(fields, key)
    for key, allowed in _FELIX_ENUMS.items():
        if fields.has(key):
            out[key] = one_of(fields.get(key), fields.at(key), allowed)
    return out


BGP_CONFIGURATION_FIELDS = frozenset(
    {
        "logSeverityScreen",
        "nodeToNodeMeshEnabled",
        "asNumber",
        "serviceLoadBalancerIPs",
        "serviceExternalIPs",
        "serviceClusterIPs",
        "listenPort",
        "bindMode",
        "communities",
        "prefixAdvertisements",
        "nodeMeshPassword",
        "nodeMeshMaxRestartTime",
        "ignoredInterfaces",
        "localWorkloadPeeringIPV4",
        "localWorkloadPeeringIPV6",
        "programClusterRoutes",
    }
)


def _cidr_blocks(fields: Fields, key: str) -> list[dict[str, str]]:
    at = fields.at(key)
    blocks = []
    for i, raw in enumerate(as_list(fields.get(key), at)):
        block = Fields(raw, item(at, i), {"cidr"})
        blocks.append({"cidr": str(parse_cidr(block.get("cidr"), block.at("cidr"), strict=False))})
    return blocks


def _community_value(value: Any, path: str) -> str:
    text = as_str(value, path)
    if parse_community(text) is None:
        raise ValidationError(
            path,
            f"{text!r} is not a BGP community: want aa:nn (each 0-65535) or a large community "
            "aa:nn:mm (each 0-4294967295)",
        )
    return text


def _communities(fields: Fields) -> list[dict[str, str]]:
    at = fields.at("communities")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, raw in enumerate(as_list(fields.get("communities"), at)):
        entry = Fields(raw, item(at, i), {"name", "value"})
        name = check_dns_subdomain(entry.get("name"), entry.at("name"))
        if name in seen:
            raise ValidationError(entry.at("name"), f"community {name!r} is defined twice")
        seen.add(name)
        if not entry.has("value"):
            raise ValidationError(entry.at("value"), "required")
        out.append({"name": name, "value": _community_value(entry.get("value"), entry.at("value"))})
    return out


def _prefix_advertisements(fields: Fields, community_names: set[str]) -> list[dict[str, Any]]:
    at = fields.at("prefixAdvertisements")
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(as_list(fields.get("prefixAdvertisements"), at)):
        entry = Fields(raw, item(at, i), {"cidr", "communities"})
        cidr = str(parse_cidr(entry.get("cidr"), entry.at("cidr"), strict=False))
        refs = as_str_list(entry.get("communities") or [], entry.at("communities"))
        for j, ref in enumerate(refs):
            if ref not in community_names and parse_community(ref) is None:
                raise ValidationError(
                    item(entry.at("communities"), j),
                    f"{ref!r} is neither a community defined in spec.communities nor a "
                    "community value (aa:nn or aa:nn:mm)",
                )
        out.append({"cidr": cidr, "communities": refs})
    return out


def validate_bgp_configuration_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", BGP_CONFIGURATION_FIELDS)
    out: dict[str, Any] = dict(fields.values)
    if fields.has("logSeverityScreen"):
        out["logSeverityScreen"] = one_of(
            fields.get("logSeverityScreen"), fields.at("logSeverityScreen"), LOG_LEVELS
        )
    if fields.has("nodeToNodeMeshEnabled"):
        out["nodeToNodeMeshEnabled"] = as_bool(
            fields.get("nodeToNodeMeshEnabled"), fields.at("nodeToNodeMeshEnabled")
        )
    if fields.has("asNumber"):
        out["asNumber"] = parse_as_number(fields.get("asNumber"), fields.at("asNumber"))
    for key in ("serviceLoadBalancerIPs", "serviceExternalIPs", "serviceClusterIPs"):
        if fields.has(key):
            out[key] = _cidr_blocks(fields, key)
    if fields.has("listenPort"):
        out["listenPort"] = as_int(fields.get("listenPort"), fields.at("listenPort"), 1, 65535)
    if fields.has("bindMode"):
        out["bindMode"] = one_of(fields.get("bindMode"), fields.at("bindMode"), ("None", "NodeIP"))
    if fields.has("ignoredInterfaces"):
        out["ignoredInterfaces"] = as_str_list(
            fields.get("ignoredInterfaces"), fields.at("ignoredInterfaces")
        )
    if fields.has("nodeMeshMaxRestartTime"):
        out["nodeMeshMaxRestartTime"] = _duration(fields, "nodeMeshMaxRestartTime")
    names: set[str] = set()
    if fields.has("communities"):
        out["communities"] = _communities(fields)
        names = {c["name"] for c in out["communities"]}
    if fields.has("prefixAdvertisements"):
        out["prefixAdvertisements"] = _prefix_advertisements(fields, names)
    if fields.get("nodeToNodeMeshEnabled") is False:
        for key in ("nodeMeshPassword", "nodeMeshMaxRestartTime"):
            if fields.has(key):
                raise ValidationError(
                    fields.at(key), "cannot be set if spec.nodeToNodeMeshEnabled is false"
                )
    return out


BGP_PEER_FIELDS = frozenset(
    {
        "node",
        "peerIP",
        "asNumber",
        "nodeSelector",
        "peerSelector",
        "keepOriginalNextHop",
        "nextHopMode",
        "password",
        "sourceAddress",
        "maxRestartTime",
        "numAllowedLocalASNumbers",
        "ttlSecurity",
        "filters",
        "reachableBy",
        "localWorkloadSelector",
        "localASNumber",
        "reversePeering",
    }
)
_PEER_ENUMS = {
    "sourceAddress": ("UseNodeIP", "None"),
    "nextHopMode": ("Auto", "Self", "Keep"),
    "reversePeering": ("Auto", "Manual"),
}
_IP_PORT_RE = re.compile(
    r"^(?P<ip>\d+\.\d+\.\d+\.\d+):(?P<port>\d+)$|^\[(?P<ip6>[0-9a-fA-F:.]+)\]:(?P<port6>\d+)$"
)


def _peer_ip(value: Any, path: str) -> str:
    text = as_str(value, path)
    match = _IP_PORT_RE.match(text)
    if match:
        address = match.group("ip") or match.group("ip6")
        port = int(match.group("port") or match.group("port6"))
        parse_ip(address, path)
        if not 1 <= port <= 65535:
            raise ValidationError(path, f"{text!r} has an invalid port")
        return text
    return str(parse_ip(text, path))


def validate_bgp_peer_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", BGP_PEER_FIELDS)
    out: dict[str, Any] = dict(fields.values)
    if fields.get("node"):
        out["node"] = check_dns_subdomain(fields.get("node"), fields.at("node"))
    if fields.get("peerIP"):
        out["peerIP"] = _peer_ip(fields.get("peerIP"), fields.at("peerIP"))
    for key in ("asNumber", "localASNumber"):
        if fields.has(key):
            out[key] = parse_as_number(fields.get(key), fields.at(key))
    for key in ("nodeSelector", "peerSelector", "localWorkloadSelector"):
        if fields.has(key):
            out[key] = check_selector(fields.get(key), fields.at(key))
    if fields.has("keepOriginalNextHop"):
        out["keepOriginalNextHop"] = as_bool(
            fields.get("keepOriginalNextHop"), fields.at("keepOriginalNextHop")
        )
    if fields.has("maxRestartTime"):
        out["maxRestartTime"] = _duration(fields, "maxRestartTime")
    if fields.has("filters"):
        at = fields.at("filters")
        out["filters"] = [
            check_dns_subdomain(name, item(at, i))
            for i, name in enumerate(as_list(fields.get("filters"), at))
        ]
    if fields.has("numAllowedLocalASNumbers"):
        out["numAllowedLocalASNumbers"] = as_int(
            fields.get("numAllowedLocalASNumbers"), fields.at("numAllowedLocalASNumbers"), 0, 10
        )
    if fields.has("ttlSecurity"):
        out["ttlSecurity"] = as_int(fields.get("ttlSecurity"), fields.at("ttlSecurity"), 0, 255)
    for key, allowed in _PEER_ENUMS.items():
        if fields.has(key):
            out[key] = one_of(fields.get(key), fields.at(key), allowed)
    if out.get("node") and out.get("nodeSelector"):
        raise ValidationError(
            fields.at("node"), "Node field must be empty when NodeSelector is specified"
        )
    if out.get("peerIP") and out.get("peerSelector"):
        raise ValidationError(
            fields.at("peerIP"), "PeerIP field must be empty when PeerSelector is specified"
        )
    if out.get("asNumber") and out.get("peerSelector"):
        raise ValidationError(
            fields.at("asNumber"), "ASNumber field must be empty when PeerSelector is specified"
        )
    if out.get("reachableBy"):
        if not out.get("peerIP"):
            raise ValidationError(
                fields.at("reachableBy"), "ReachableBy field must be empty when PeerIP is empty"
            )
        parse_ip(out["reachableBy"], fields.at("reachableBy"))
    return out


CLUSTER_INFORMATION_FIELDS = frozenset(
    {"clusterGUID", "clusterType", "calicoVersion", "datastoreReady", "variant"}
)


def validate_cluster_information_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", CLUSTER_INFORMATION_FIELDS)
    out: dict[str, Any] = {}
    for key in ("clusterGUID", "clusterType", "calicoVersion", "variant"):
        if fields.has(key):
            out[key] = as_str(fields.get(key), fields.at(key))
    if fields.has("datastoreReady"):
        out["datastoreReady"] = as_bool(fields.get("datastoreReady"), fields.at("datastoreReady"))
    return out
