"""WorkloadEndpoint, HostEndpoint and Node specs, and the network sets."""

from __future__ import annotations

import re
from typing import Any

from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_int,
    as_list,
    as_mapping,
    as_str,
    as_str_list,
    check_dns_subdomain,
    check_port_name,
    item,
    parse_cidr,
    parse_ip,
    parse_protocol,
    protocol_supports_ports,
)

_INTERFACE_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
_CONTAINER_ID_RE = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_MAC_RE = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")

WORKLOAD_ENDPOINT_FIELDS = frozenset(
    {
        "orchestrator",
        "workload",
        "node",
        "containerID",
        "pod",
        "endpoint",
        "serviceAccountName",
        "ipNetworks",
        "ipv4Gateway",
        "ipv6Gateway",
        "ipNATs",
        "profiles",
        "interfaceName",
        "mac",
        "ports",
        "allowSpoofedSourcePrefixes",
        "awsElasticIPs",
        "qosControls",
    }
)
HOST_ENDPOINT_FIELDS = frozenset({"node", "interfaceName", "expectedIPs", "profiles", "ports"})
NODE_FIELDS = frozenset(
    {
        "bgp",
        "ipv4VXLANTunnelAddr",
        "vxlanTunnelMACAddr",
        "ipv6VXLANTunnelAddr",
        "vxlanTunnelMACAddrV6",
        "orchRefs",
        "wireguard",
        "addresses",
        "interfaces",
    }
)
NODE_BGP_FIELDS = frozenset(
    {"asNumber", "ipv4Address", "ipv6Address", "ipv4IPIPTunnelAddr", "routeReflectorClusterID"}
)


def _interface(value: Any, path: str, *, allow_wildcard: bool = False) -> str:
    text = as_str(value, path)
    if not (allow_wildcard and text == "*") and not _INTERFACE_RE.match(text):
        raise ValidationError(path, f"{text!r} is not a valid interface name")
    return text


def _mac(value: Any, path: str) -> str:
    text = as_str(value, path)
    if not _MAC_RE.match(text):
        raise ValidationError(path, f"{text!r} is not a valid MAC address")
    return text


def _profiles(fields: Fields) -> list[str]:
    at = fields.at("profiles")
    return [
        check_dns_subdomain(v, item(at, i))
        for i, v in enumerate(as_list(fields.get("profiles"), at))
    ]


def _endpoint_ports(value: Any, path: str, *, workload: bool) -> list[dict[str, Any]]:
    allowed = {"name", "protocol", "port", "hostPort", "hostIP"}
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(as_list(value, path)):
        fields = Fields(raw, item(path, i), allowed)
        port: dict[str, Any] = {}
        if fields.has("name"):
            port["name"] = check_port_name(
                as_str(fields.get("name"), fields.at("name")), fields.at("name")
            )
        if not fields.has("protocol"):
            raise ValidationError(fields.at("protocol"), "required")
        port["protocol"] = parse_protocol(fields.get("protocol"), fields.at("protocol"))
        if not protocol_supports_ports(port["protocol"]):
            raise ValidationError(fields.at("protocol"), "protocol does not support ports")
        port["port"] = as_int(fields.get("port"), fields.at("port"), 1, 65535)
        if fields.has("hostPort"):
            port["hostPort"] = as_int(fields.get("hostPort"), fields.at("hostPort"), 0, 65535)
        if fields.has("hostIP"):
            port["hostIP"] = str(parse_ip(fields.get("hostIP"), fields.at("hostIP")))
        if "name" not in port and not (workload and port.get("hostPort")):
            raise ValidationError(fields.at("name"), "port name must not be empty")
        out.append(port)
    return out


def validate_workload_endpoint_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", WORKLOAD_ENDPOINT_FIELDS)
    out: dict[str, Any] = dict(fields.values)
    for key in ("orchestrator", "workload", "node", "pod", "endpoint", "serviceAccountName"):
        if fields.has(key):
            out[key] = as_str(fields.get(key), fields.at(key))
    if fields.get("containerID"):
        container_id = as_str(fields.get("containerID"), fields.at("containerID"))
        if not _CONTAINER_ID_RE.match(container_id):
            raise ValidationError(fields.at("containerID"), f"{container_id!r} is not valid")
    networks: list[str] = []
    if fields.has("ipNetworks"):
        at = fields.at("ipNetworks")
        for i, raw in enumerate(as_list(fields.get("ipNetworks"), at)):
            network = parse_cidr(raw, item(at, i), strict=False)
            if network.prefixlen != network.max_prefixlen:
                raise ValidationError(item(at, i), "IP network contains multiple addresses")
            networks.append(str(network))
        out["ipNetworks"] = networks
    for key, version in (("ipv4Gateway", 4), ("ipv6Gateway", 6)):
        if fields.get(key):
            gateway = parse_ip(fields.get(key), fields.at(key))
            if gateway.version != version:
                raise ValidationError(fields.at(key), f"invalid IPv{version} gateway address")
            out[key] = str(gateway)
    if fields.has("ipNATs"):
        at = fields.at("ipNATs")
        nats = []
        for i, raw in enumerate(as_list(fields.get("ipNATs"), at)):
            nat = Fields(raw, item(at, i), {"internalIP", "externalIP"})
            internal = parse_ip(nat.get("internalIP"), nat.at("internalIP"))
            external = parse_ip(nat.get("externalIP"), nat.at("externalIP"))
            if internal.version != external.version:
                raise ValidationError(nat.at("externalIP"), "mismatched IP versions")
            if not any(internal in parse_cidr(n, "", strict=False) for n in networks):
                raise ValidationError(item(at, i), "NAT is not in the endpoint networks")
            nats.append({"internalIP": str(internal), "externalIP": str(external)})
        out["ipNATs"] = nats
    if fields.has("profiles"):
        out["profiles"] = _profiles(fields)
    if fields.get("interfaceName"):
        out["interfaceName"] = _interface(fields.get("interfaceName"), fields.at("interfaceName"))
    if fields.get("mac"):
        out["mac"] = _mac(fields.get("mac"), fields.at("mac"))
    if fields.has("ports"):
        out["ports"] = _endpoint_ports(fields.get("ports"), fields.at("ports"), workload=True)
    if fields.has("allowSpoofedSourcePrefixes"):
        at = fields.at("allowSpoofedSourcePrefixes")
        out["allowSpoofedSourcePrefixes"] = [
            str(parse_cidr(v, item(at, i), strict=False))
            for i, v in enumerate(as_list(fields.get("allowSpoofedSourcePrefixes"), at))
        ]
    if fields.has("awsElasticIPs"):
        out["awsElasticIPs"] = as_str_list(fields.get("awsElasticIPs"), fields.at("awsElasticIPs"))
    if fields.has("qosControls"):
        out["qosControls"] = dict(as_mapping(fields.get("qosControls"), fields.at("qosControls")))
    return out


def validate_host_endpoint_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", HOST_ENDPOINT_FIELDS)
    out: dict[str, Any] = {}
    if not fields.get("node"):
        raise ValidationError(fields.at("node"), "no node has been specified")
    out["node"] = check_dns_subdomain(fields.get("node"), fields.at("node"))
    if fields.get("interfaceName"):
        out["interfaceName"] = _interface(
            fields.get("interfaceName"), fields.at("interfaceName"), allow_wildcard=True
        )
    if fields.has("expectedIPs"):
        at = fields.at("expectedIPs")
        out["expectedIPs"] = [
            str(parse_ip(v, item(at, i)))
            for i, v in enumerate(as_list(fields.get("expectedIPs"), at))
        ]
    if "interfaceName" not in out and not out.get("expectedIPs"):
        raise ValidationError(
            fields.at("interfaceName"), "no interface or expected IPs have been specified"
        )
    if fields.has("profiles"):
        out["profiles"] = _profiles(fields)
    if fields.has("ports"):
        out["ports"] = _endpoint_ports(fields.get("ports"), fields.at("ports"), workload=False)
    return out


def parse_as_number(value: Any, path: str) -> int:
    """An AS number: 1-4294967295, or "high.low" asdot notation (stored as the number).

    0 is reserved (RFC 7607) and BIRD refuses it, so it is rejected here rather than later.
    """
    if isinstance(value, str) and "." in value:
        high, _, low = value.partition(".")
        if not (high.isdigit() and low.isdigit()) or int(high) > 65535 or int(low) > 65535:
            raise ValidationError(path, f"{value!r} is not a valid AS number")
        value = (int(high) << 16) | int(low)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return as_int(value, path, 1, 4294967295)


def validate_node_spec(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", NODE_FIELDS)
    out: dict[str, Any] = dict(fields.values)
    if fields.has("bgp"):
        bgp = Fields(fields.get("bgp"), fields.at("bgp"), NODE_BGP_FIELDS)
        if not bgp.values:
            raise ValidationError(fields.at("bgp"), "Spec.BGP should not be empty")
        spec_bgp: dict[str, Any] = {}
        for key in ("ipv4Address", "ipv6Address"):
            if bgp.get(key):
                network = parse_cidr(bgp.get(key), bgp.at(key), strict=False)
                if network.version != (4 if key == "ipv4Address" else 6):
                    raise ValidationError(bgp.at(key), "wrong IP version")
                spec_bgp[key] = as_str(bgp.get(key), bgp.at(key))
        if bgp.get("ipv4IPIPTunnelAddr"):
            spec_bgp["ipv4IPIPTunnelAddr"] = str(
                parse_ip(bgp.get("ipv4IPIPTunnelAddr"), bgp.at("ipv4IPIPTunnelAddr"))
            )
        if bgp.has("asNumber"):
            spec_bgp["asNumber"] = parse_as_number(bgp.get("asNumber"), bgp.at("asNumber"))
        if bgp.has("routeReflectorClusterID"):
            spec_bgp["routeReflectorClusterID"] = str(
                parse_ip(bgp.get("routeReflectorClusterID"), bgp.at("routeReflectorClusterID"))
            )
        out["bgp"] = spec_bgp
    for key in ("ipv4VXLANTunnelAddr", "ipv6VXLANTunnelAddr"):
        if fields.get(key):
            out[key] = str(parse_ip(fields.get(key), fields.at(key)))
    for key in ("vxlanTunnelMACAddr", "vxlanTunnelMACAddrV6"):
        if fields.get(key):
            out[key] = _mac(fields.get(key), fields.at(key))
    if fields.has("orchRefs"):
        at = fields.at("orchRefs")
        refs = []
        for i, raw in enumerate(as_list(fields.get("orchRefs"), at)):
            ref = Fields(raw, item(at, i), {"nodeName", "orchestrator"})
            refs.append({k: as_str(ref.get(k), ref.at(k)) for k in ref.values})
        out["orchRefs"] = refs
    if fields.has("addresses"):
        at = fields.at("addresses")
        addresses = []
        for i, raw in enumerate(as_list(fields.get("addresses"), at)):
            address = Fields(raw, item(at, i), {"address", "type"})
            entry = {k: as_str(address.get(k), address.at(k)) for k in address.values}
            if "address" not in entry:
                raise ValidationError(address.at("address"), "required")
            parse_cidr(entry["address"], address.at("address"), strict=False)
            addresses.append(entry)
        out["addresses"] = addresses
    if fields.has("wireguard"):
        wireguard = Fields(
            fields.get("wireguard"),
            fields.at("wireguard"),
            {"interfaceIPv4Address", "interfaceIPv6Address"},
        )
        out["wireguard"] = {
            k: str(parse_ip(wireguard.get(k), wireguard.at(k))) for k in wireguard.values
        }
    return out


def _nets(value: Any, meta: dict[str, Any]) -> dict[str, Any]:
    fields = Fields(value if value is not None else {}, "spec", {"nets"})
    out: dict[str, Any] = {}
    if fields.has("nets"):
        at = fields.at("nets")
        # Calico's `cidr` validator: host bits allowed; stored here as the network they mean.
        out["nets"] = [
            str(parse_cidr(v, item(at, i), strict=False))
            for i, v in enumerate(as_list(fields.get("nets"), at))
        ]
    return out


validate_network_set_spec = _nets
validate_global_network_set_spec = _nets
