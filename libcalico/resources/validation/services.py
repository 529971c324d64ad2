"""Service (v1) and EndpointSlice (discovery.k8s.io/v1): the checks the API server makes on the
fields Felix load-balances with, as one place for calicoctl, the lab and Felix.

    check_service(obj)          a whole Service as stored; ValidationError naming the field
    check_endpoint_slice(obj)   the same for an EndpointSlice

Fields the project does not read are kept untouched (Kubernetes has more than we model); the
ones it reads are checked as the API server would (ports, protocols, IP families, cluster and
external IPs, session affinity, traffic policies), so an object that passes here is one the
API server would have accepted, as far as Felix can tell.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Any

from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_bool,
    as_int,
    as_list,
    as_mapping,
    as_str,
    as_str_map,
    check_dns_label,
    check_port_name,
    child,
    item,
    one_of,
)

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
SERVICE_PROTOCOLS = ("TCP", "UDP", "SCTP")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
SESSION_AFFINITIES = ("None", "ClientIP")
TRAFFIC_POLICIES = ("Cluster", "Local")
# The API server's default --service-node-port-range.
NODE_PORT_RANGE = (30000, 32767)
DEFAULT_AFFINITY_TIMEOUT_S = 10800  # 3 hours, Kubernetes' default
MAX_AFFINITY_TIMEOUT_S = 86400
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
MAX_ENDPOINTS_PER_SLICE = 1000
MAX_PORTS_PER_SLICE = 100
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# DNS-1035 label: a Service name must start with a letter (it becomes a DNS name and env vars).
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_service_name(value: Any, path: str) -> str:
    text = as_str(value, path, allow_empty=False)
    if len(text) > 63 or not _DNS1035_RE.match(text):
        raise ValidationError(
            path,
            f"{text!r} is not a valid Service name: at most 63 lower case alphanumeric "
            f"characters or '-', starting with a letter and ending with an alphanumeric",
        )
    return text


def _ip(value: Any, path: str) -> IPAddress:
    text = as_str(value, path, allow_empty=False)
    try:  # the common case, fast (slices hold many addresses): canonical dotted IPv4
        packed = socket.inet_pton(socket.AF_INET, text)
        if socket.inet_ntop(socket.AF_INET, packed) == text:
            return ipaddress.IPv4Address(packed)
    except OSError:
        pass
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValidationError(path, f"{text!r} is not a valid IP address") from None
    if str(address) != text:
        raise ValidationError(path, f"{text!r} is not in canonical form ({address})")
    return address


def _family(address: IPAddress) -> str:
    return "IPv4" if address.version == 4 else "IPv6"


def _target_port(value: Any, path: str) -> int | str:
    """An int 1-65535, or an IANA service name (a named container port)."""
    if isinstance(value, str):
        return check_port_name(value, path)
    return as_int(value, path, 1, 65535)


def _service_ports(spec: Mapping[str, Any], service_type: str, headless: bool) -> None:
    at = "spec.ports"
    raw_ports = as_list(spec.get("ports") or [], at)
    if service_type != "ExternalName" and not raw_ports and not headless:
        raise ValidationError(at, "required: a Service needs at least one port")
    seen_ports: dict[tuple[int, str], int] = {}
    seen_names: dict[str, int] = {}
    seen_node_ports: dict[tuple[int, str], int] = {}
    for i, raw in enumerate(raw_ports):
        path = item(at, i)
        port = as_mapping(raw, path)
        name = port.get("name")
        if name is not None and name != "":
            check_dns_label(name, child(path, "name"))
            if name in seen_names:
                raise ValidationError(
                    child(path, "name"), f"duplicate name {name!r} (spec.ports[{seen_names[name]}])"
                )
            seen_names[name] = i
        elif len(raw_ports) > 1:
            raise ValidationError(child(path, "name"), "required when a Service has several ports")
        protocol = port.get("protocol")
        protocol = (
            "TCP"
            if protocol is None
            else one_of(protocol, child(path, "protocol"), SERVICE_PROTOCOLS)
        )
        if "port" not in port or port["port"] is None:
            raise ValidationError(child(path, "port"), "required")
        number = as_int(port["port"], child(path, "port"), 1, 65535)
        if (number, protocol) in seen_ports:
            raise ValidationError(
                path,
                f"duplicate port {number}/{protocol} (spec.ports[{seen_ports[number, protocol]}])",
            )
        seen_ports[number, protocol] = i
        if port.get("targetPort") is not None:
            _target_port(port["targetPort"], child(path, "targetPort"))
        if port.get("nodePort") not in (None, 0):
            node_port = as_int(port["nodePort"], child(path, "nodePort"))
            if service_type not in ("NodePort", "LoadBalancer"):
                raise ValidationError(
                    child(path, "nodePort"),
                    f"may not be used when type is {service_type}",
                )
            low, high = NODE_PORT_RANGE
            if not low <= node_port <= high:
                raise ValidationError(
                    child(path, "nodePort"),
                    f"{node_port} is not in the node port range {low}-{high}",
                )
            if (node_port, protocol) in seen_node_ports:
                raise ValidationError(
                    child(path, "nodePort"), f"duplicate node port {node_port}/{protocol}"
                )
            seen_node_ports[node_port, protocol] = i
        if port.get("appProtocol") is not None:
            as_str(port["appProtocol"], child(path, "appProtocol"))


def _cluster_ips(spec: Mapping[str, Any], service_type: str) -> tuple[bool, list[IPAddress]]:
    """(headless, the cluster IPs); checks clusterIP/clusterIPs/ipFamilies agree."""
    cluster_ip = spec.get("clusterIP")
    if cluster_ip is not None:
        as_str(cluster_ip, "spec.clusterIP")
    raw_ips = as_list(spec.get("clusterIPs") or [], "spec.clusterIPs")
    if cluster_ip not in (None, "") and raw_ips and raw_ips[0] != cluster_ip:
        raise ValidationError("spec.clusterIPs[0]", f"must equal spec.clusterIP ({cluster_ip})")
    texts = [as_str(v, item("spec.clusterIPs", i)) for i, v in enumerate(raw_ips)]
    if not texts and cluster_ip not in (None, ""):
        texts = [cluster_ip]
        where = ["spec.clusterIP"]
    else:
        where = [item("spec.clusterIPs", i) for i in range(len(texts))]
    if service_type == "ExternalName":
        if texts and texts != ["None"]:
            raise ValidationError(where[0], "may not be set when type is ExternalName")
        return False, []
    headless = bool(texts) and texts[0] == "None"
    if headless:
        if len(texts) > 1:
            raise ValidationError(where[1], "must be empty when the Service is headless (None)")
        if service_type != "ClusterIP":
            raise ValidationError(where[0], f"may not be None when type is {service_type}")
        return True, []
    if len(texts) > 2:
        raise ValidationError(where[2], "at most two cluster IPs (one per IP family)")
    addresses = [_ip(text, path) for text, path in zip(texts, where, strict=True)]
    if len(addresses) == 2 and addresses[0].version == addresses[1].version:
        raise ValidationError(where[1], "must be of the other IP family than the first")
    return False, addresses


def _ip_families(spec: Mapping[str, Any], addresses: list[IPAddress]) -> None:
    at = "spec.ipFamilies"
    families = [
        one_of(v, item(at, i), IP_FAMILIES)
        for i, v in enumerate(as_list(spec.get("ipFamilies") or [], at))
    ]
    if len(families) > 2:
        raise ValidationError(item(at, 2), "at most two IP families")
    if len(families) == 2 and families[0] == families[1]:
        raise ValidationError(item(at, 1), f"duplicate IP family {families[1]}")
    policy = spec.get("ipFamilyPolicy")
    if policy is not None:
        policy = one_of(policy, "spec.ipFamilyPolicy", IP_FAMILY_POLICIES)
        if policy == "SingleStack" and len(families) > 1:
            raise ValidationError(at, "must hold one IP family when ipFamilyPolicy is SingleStack")
    for i, address in enumerate(addresses):
        if i < len(families) and _family(address) != families[i]:
            path = "spec.clusterIPs" if "clusterIPs" in spec else "spec.clusterIP"
            raise ValidationError(
                item(path, i) if path == "spec.clusterIPs" else path,
                f"{address} is not of IP family {families[i]} (spec.ipFamilies[{i}])",
            )


def _session_affinity(spec: Mapping[str, Any]) -> None:
    affinity = spec.get("sessionAffinity")
    affinity = (
        "None" if affinity is None else one_of(affinity, "spec.sessionAffinity", SESSION_AFFINITIES)
    )
    config = spec.get("sessionAffinityConfig")
    if config is None:
        return
    at = "spec.sessionAffinityConfig"
    fields = Fields(config, at, {"clientIP"})
    if not fields.has("clientIP"):
        return
    if affinity != "ClientIP":
        raise ValidationError(
            fields.at("clientIP"), "may only be set when sessionAffinity is ClientIP"
        )
    client = Fields(fields.get("clientIP"), fields.at("clientIP"), {"timeoutSeconds"})
    if client.has("timeoutSeconds"):
        as_int(client.get("timeoutSeconds"), client.at("timeoutSeconds"), 1, MAX_AFFINITY_TIMEOUT_S)


def _check_status(obj: Mapping[str, Any]) -> None:
    status = obj.get("status")
    if status is None:
        return
    status = as_mapping(status, "status")
    balancer = status.get("loadBalancer")
    if balancer is None:
        return
    balancer = as_mapping(balancer, "status.loadBalancer")
    at = "status.loadBalancer.ingress"
    ingress = as_list(balancer.get("ingress") or [], at)
    service_type = (obj.get("spec") or {}).get("type") or "ClusterIP"
    if ingress and service_type != "LoadBalancer":
        raise ValidationError(
            at, f"may only be used when spec.type is LoadBalancer, not {service_type}"
        )
    for i, raw in enumerate(ingress):
        entry = as_mapping(raw, item(at, i))
        if entry.get("ip") not in (None, ""):
            _ip(entry["ip"], child(item(at, i), "ip"))
        if entry.get("hostname") is not None:
            as_str(entry["hostname"], child(item(at, i), "hostname"))


def check_service_spec(value: Any) -> None:
    spec = as_mapping(value if value is not None else {}, "spec")
    service_type = spec.get("type")
    service_type = (
        "ClusterIP" if service_type is None else one_of(service_type, "spec.type", SERVICE_TYPES)
    )
    if service_type == "ExternalName":
        name = spec.get("externalName")
        if name in (None, ""):
            raise ValidationError("spec.externalName", "required when type is ExternalName")
        as_str(name, "spec.externalName")
    headless, addresses = _cluster_ips(spec, service_type)
    _ip_families(spec, addresses)
    _service_ports(spec, service_type, headless)
    if spec.get("selector") is not None:
        as_str_map(spec["selector"], "spec.selector")
    at = "spec.externalIPs"
    for i, raw in enumerate(as_list(spec.get("externalIPs") or [], at)):
        address = _ip(raw, item(at, i))
        if address.is_unspecified or address.is_loopback or address.is_link_local:
            raise ValidationError(item(at, i), f"{address} may not be an external IP")
    _session_affinity(spec)
    for key in ("externalTrafficPolicy", "internalTrafficPolicy"):
        if spec.get(key) is not None:
            one_of(spec[key], f"spec.{key}", TRAFFIC_POLICIES)
    # As the API server: only where traffic can come from outside (kube-proxy's "externally
    # accessible": NodePort, LoadBalancer, or external IPs).
    reachable = service_type in ("NodePort", "LoadBalancer") or bool(spec.get("externalIPs"))
    if spec.get("externalTrafficPolicy") is not None and not reachable:
        raise ValidationError(
            "spec.externalTrafficPolicy", "may only be set for externally-accessible services"
        )
    if spec.get("publishNotReadyAddresses") is not None:
        as_bool(spec["publishNotReadyAddresses"], "spec.publishNotReadyAddresses")


def check_service(obj: Mapping[str, Any]) -> None:
    """A whole Service as stored (spec and status); ValidationError naming the field."""
    check_service_spec(obj.get("spec"))
    _check_status(obj)


def validate_service_body(fields: Fields, meta: dict[str, Any]) -> dict[str, Any]:
    """calicoctl/the lab: a Service kept as written, once its fields check out."""
    check_service_name(meta["name"], "metadata.name")
    out: dict[str, Any] = {"spec": dict(as_mapping(fields.get("spec") or {}, "spec"))}
    if fields.has("status"):
        out["status"] = dict(as_mapping(fields.get("status"), "status"))
    check_service(out)
    return out


# ---- EndpointSlice ----


def _slice_port(value: Any, path: str) -> None:
    port = as_mapping(value, path)
    if port.get("name") not in (None, ""):
        name = as_str(port["name"], child(path, "name"))
        check_dns_label(name, child(path, "name"))
    if port.get("protocol") is not None:
        one_of(port["protocol"], child(path, "protocol"), SERVICE_PROTOCOLS)
    if port.get("port") is not None:
        as_int(port["port"], child(path, "port"), 1, 65535)
    if port.get("appProtocol") is not None:
        as_str(port["appProtocol"], child(path, "appProtocol"))


def _slice_endpoint(value: Any, path: str, address_type: str) -> None:
    endpoint = as_mapping(value, path)
    at = child(path, "addresses")
    if endpoint.get("addresses") is None:
        raise ValidationError(at, "required")
    addresses = as_list(endpoint["addresses"], at)
    if not 1 <= len(addresses) <= 100:
        raise ValidationError(at, "must hold between 1 and 100 addresses")
    for i, raw in enumerate(addresses):
        if address_type == "FQDN":
            as_str(raw, item(at, i), allow_empty=False)
            continue
        address = _ip(raw, item(at, i))
        if _family(address) != address_type:
            raise ValidationError(item(at, i), f"{address} is not an {address_type} address")
    conditions = endpoint.get("conditions")
    if conditions is not None:
        conditions = as_mapping(conditions, child(path, "conditions"))
        for key in ("ready", "serving", "terminating"):
            if conditions.get(key) is not None:
                as_bool(conditions[key], child(child(path, "conditions"), key))
    for key in ("nodeName", "hostname"):
        if endpoint.get(key) is not None:
            as_str(endpoint[key], child(path, key))


def check_endpoint_slice(obj: Mapping[str, Any]) -> None:
    """A whole EndpointSlice as stored; ValidationError naming the field."""
    if obj.get("addressType") is None:
        raise ValidationError("addressType", "required")
    address_type = one_of(obj["addressType"], "addressType", ADDRESS_TYPES)
    endpoints = as_list(obj.get("endpoints") or [], "endpoints")
    if len(endpoints) > MAX_ENDPOINTS_PER_SLICE:
        raise ValidationError("endpoints", f"at most {MAX_ENDPOINTS_PER_SLICE} endpoints")
    for i, raw in enumerate(endpoints):
        _slice_endpoint(raw, item("endpoints", i), address_type)
    ports = as_list(obj.get("ports") or [], "ports")
    if len(ports) > MAX_PORTS_PER_SLICE:
        raise ValidationError("ports", f"at most {MAX_PORTS_PER_SLICE} ports")
    seen: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(ports):
        _slice_port(raw, item("ports", i))
        port = as_mapping(raw, item("ports", i))
        name_proto = (port.get("name") or "", port.get("protocol") or "TCP")
        if name_proto in seen:
            raise ValidationError(
                item("ports", i),
                f"duplicate port {name_proto[0]!r}/{name_proto[1]} (ports[{seen[name_proto]}])",
            )
        seen[name_proto] = i
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if isinstance(labels, Mapping) and labels.get(SERVICE_NAME_LABEL) is not None:
        as_str(labels[SERVICE_NAME_LABEL], f"metadata.labels.{SERVICE_NAME_LABEL}")


def validate_endpoint_slice_body(fields: Fields, meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("addressType", "endpoints", "ports"):
        if fields.has(key):
            out[key] = fields.get(key)
    check_endpoint_slice({**out, "metadata": meta})
    if "endpoints" not in out:
        out["endpoints"] = []
    return out
