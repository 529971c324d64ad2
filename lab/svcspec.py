"""v1 Service objects as the lab writes them: built from `calico-lab svc create` arguments,
checked, and completed with the API server's defaults.

    service = from_cli("y/web", selector="app=web", ports=["80:serve-80-tcp/tcp"])
    check(service)                 # SpecError naming the field
    service = with_defaults(service)

The lab plays the API server where there is none (embedded and etcd datastores), so it applies
the same defaults (protocol TCP, targetPort = port, type ClusterIP, sessionAffinity None,
timeoutSeconds 10800 under ClientIP, externalTrafficPolicy Cluster where it applies,
internalTrafficPolicy Cluster, single-stack IPv4) and refuses what the API server would, naming
the field. Allocation (cluster IPs, node ports) is `lab/services.py`'s; this module is pure.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
PROTOCOLS = ("TCP", "UDP", "SCTP")
TRAFFIC_POLICIES = ("Cluster", "Local")
AFFINITIES = ("None", "ClientIP")
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400
NODE_PORT_RANGE = (30000, 32767)  # as the lab's kube-apiserver (apiserver.py) is started
HEADLESS = "None"
# A DNS-1035 label (Service names) and an IANA service name (named ports).
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_PORT_SPEC = re.compile(r"^(\d+)(?::([^/:]+))?(?:/([A-Za-z]+))?$")


class SpecError(ValueError):
    """A Service field the API server would refuse; `field` is its path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def is_port_name(text: str) -> bool:
    """An IANA service name: what a container port's name (and a named targetPort) is."""
    return (
        len(text) <= 15
        and bool(_PORT_NAME.match(text))
        and "--" not in text
        and any(c.isalpha() for c in text)
    )


def parse_port(text: str, where: str = "--port") -> dict[str, Any]:
    """ "80", "80:8080", "80:serve-80-tcp/udp" -> a ServicePort (named `<proto>-<port>`)."""
    match = _PORT_SPEC.match(text.strip())
    if match is None:
        raise SpecError(where, f"{text!r}: expected PORT[:TARGET][/tcp|udp|sctp]")
    port_text, target, proto = match.groups()
    protocol = (proto or "tcp").upper()
    if protocol not in PROTOCOLS:
        raise SpecError(where, f"{text!r}: protocol {proto!r} is not tcp, udp or sctp")
    port: dict[str, Any] = {
        "name": f"{protocol.lower()}-{int(port_text)}",
        "protocol": protocol,
        "port": int(port_text),
    }
    if target is not None:
        port["targetPort"] = int(target) if target.isdigit() else target
    return port


def parse_selector(text: str) -> dict[str, str]:
    """ "k=v,k2=v2" -> {"k": "v", "k2": "v2"}."""
    out: dict[str, str] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise SpecError("--selector", f"{entry!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def parse_affinity(text: str) -> tuple[str, int | None]:
    """ "ClientIP" / "ClientIP:60" / "None" -> (sessionAffinity, timeoutSeconds or None)."""
    kind, _, seconds = text.partition(":")
    if kind not in AFFINITIES:
        raise SpecError("--affinity", f"{text!r}: expected ClientIP[:SECONDS] or None")
    if not seconds:
        return kind, None
    if kind != "ClientIP" or not seconds.isdigit():
        raise SpecError("--affinity", f"{text!r}: expected ClientIP[:SECONDS]")
    return kind, int(seconds)


def from_cli(
    key: str,
    selector: str = "",
    ports: Sequence[str] = (),
    type_: str = "ClusterIP",
    node_ports: Sequence[int] = (),
    affinity: str = "",
    external_traffic_policy: str = "",
    internal_traffic_policy: str = "",
    external_ips: Sequence[str] = (),
    load_balancer_ips: Sequence[str] = (),
) -> dict[str, Any]:
    """A Service object from `svc create`'s arguments (checked; no defaults applied yet)."""
    namespace, sep, name = key.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise SpecError("NS/NAME", f"{key!r}: expected NAMESPACE/NAME")
    if not ports:
        raise SpecError("--port", "at least one --port is needed")
    if type_ not in TYPES:
        raise SpecError("--type", f"{type_!r}: expected one of {', '.join(TYPES)}")
    spec: dict[str, Any] = {"type": type_, "ports": [parse_port(p) for p in ports]}
    labels = parse_selector(selector)
    if labels:
        spec["selector"] = labels
    if node_ports:
        if type_ == "ClusterIP":
            raise SpecError("--node-port", "needs --type NodePort or LoadBalancer")
        if len(node_ports) > len(spec["ports"]):
            raise SpecError("--node-port", "more node ports than --port entries")
        for port, node_port in zip(spec["ports"], node_ports, strict=False):
            port["nodePort"] = int(node_port)
    if affinity:
        kind, seconds = parse_affinity(affinity)
        spec["sessionAffinity"] = kind
        if seconds is not None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": seconds}}
    if external_traffic_policy:
        spec["externalTrafficPolicy"] = external_traffic_policy
    if internal_traffic_policy:
        spec["internalTrafficPolicy"] = internal_traffic_policy
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    if load_balancer_ips:
        if type_ != "LoadBalancer":
            raise SpecError("--load-balancer-ip", "needs --type LoadBalancer")
        service["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in load_balancer_ips]}}
    check(service)
    return service


def _ipv4(value: Any, field: str) -> None:
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise SpecError(field, f"{value!r} is not an IP address") from None
    if address.version != 4:
        raise SpecError(field, f"{value}: the lab's Services are IPv4 single-stack")


def check(service: Mapping[str, Any]) -> None:
    """SpecError naming the first field the API server would refuse."""
    meta = service.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not _DNS1035.match(name):
        raise SpecError("metadata.name", f"{name!r} is not a DNS-1035 label")
    namespace = str(meta.get("namespace") or "")
    if not _DNS1123.match(namespace):
        raise SpecError("metadata.namespace", f"{namespace!r} is not a DNS-1123 label")
    spec = service.get("spec") or {}
    type_ = spec.get("type", "ClusterIP")
    if type_ not in TYPES:
        raise SpecError("spec.type", f"{type_!r}: expected one of {', '.join(TYPES)}")
    for key, value in (spec.get("selector") or {}).items():
        if not _LABEL_KEY.match(str(key)):
            raise SpecError(f"spec.selector[{key}]", "not a valid label key")
        if not _LABEL_VALUE.match(str(value)) or len(str(value)) > 63:
            raise SpecError(f"spec.selector[{key}]", f"{value!r} is not a valid label value")
    cluster_ip = spec.get("clusterIP")
    if cluster_ip not in (None, "", HEADLESS):
        _ipv4(cluster_ip, "spec.clusterIP")
    families = spec.get("ipFamilies")
    if families not in (None, [], ["IPv4"]):
        raise SpecError("spec.ipFamilies", f"{families}: the lab's Services are IPv4 only")
    ports = spec.get("ports") or []
    if not ports and cluster_ip != HEADLESS:
        raise SpecError("spec.ports", "at least one port is required")
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        protocol = port.get("protocol", "TCP")
        if protocol not in PROTOCOLS:
            raise SpecError(f"{where}.protocol", f"{protocol!r}: expected TCP, UDP or SCTP")
        number = port.get("port")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise SpecError(f"{where}.port", f"{number!r}: must be 1-65535")
        if (number, protocol) in seen_ports:
            raise SpecError(f"{where}.port", f"{number}/{protocol} appears twice")
        seen_ports.add((number, protocol))
        port_name = port.get("name") or ""
        if len(ports) > 1 and not port_name:
            raise SpecError(f"{where}.name", "required when there is more than one port")
        if port_name:
            if not _DNS1123.match(port_name):
                raise SpecError(f"{where}.name", f"{port_name!r} is not a DNS-1123 label")
            if port_name in seen_names:
                raise SpecError(f"{where}.name", f"{port_name!r} appears twice")
            seen_names.add(port_name)
        target = port.get("targetPort")
        if isinstance(target, bool):
            raise SpecError(f"{where}.targetPort", f"{target!r}: a number or a port name")
        if isinstance(target, int) and not 1 <= target <= 65535:
            raise SpecError(f"{where}.targetPort", f"{target}: must be 1-65535")
        if isinstance(target, str) and not is_port_name(target):
            raise SpecError(f"{where}.targetPort", f"{target!r} is not a valid port name")
        node_port = port.get("nodePort")
        if node_port is not None:
            if type_ == "ClusterIP":
                raise SpecError(f"{where}.nodePort", "may not be used when type is ClusterIP")
            low, high = NODE_PORT_RANGE
            if not isinstance(node_port, int) or not low <= node_port <= high:
                raise SpecError(f"{where}.nodePort", f"{node_port!r}: must be {low}-{high}")
    affinity = spec.get("sessionAffinity", "None")
    if affinity not in AFFINITIES:
        raise SpecError("spec.sessionAffinity", f"{affinity!r}: expected None or ClientIP")
    timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
        "timeoutSeconds"
    )
    if timeout is not None:
        if affinity != "ClientIP":
            raise SpecError("spec.sessionAffinityConfig", "only with sessionAffinity ClientIP")
        if not isinstance(timeout, int) or not 1 <= timeout <= MAX_AFFINITY_TIMEOUT:
            raise SpecError(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                f"{timeout!r}: must be 1-{MAX_AFFINITY_TIMEOUT}",
            )
    for field in ("externalTrafficPolicy", "internalTrafficPolicy"):
        policy = spec.get(field)
        if policy is not None and policy not in TRAFFIC_POLICIES:
            raise SpecError(f"spec.{field}", f"{policy!r}: expected Cluster or Local")
    if spec.get("externalTrafficPolicy") and type_ == "ClusterIP" and not spec.get("externalIPs"):
        raise SpecError("spec.externalTrafficPolicy", "only for NodePort and LoadBalancer")
    for i, address in enumerate(spec.get("externalIPs") or []):
        _ipv4(address, f"spec.externalIPs[{i}]")
    status = service.get("status") or {}
    for i, ingress in enumerate((status.get("loadBalancer") or {}).get("ingress") or []):
        if "ip" in ingress:
            _ipv4(ingress["ip"], f"status.loadBalancer.ingress[{i}].ip")


def needs_node_ports(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("type", "ClusterIP") in ("NodePort", "LoadBalancer")


def with_defaults(service: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the API server's defaults filled in (allocations left to the caller)."""
    out = copy.deepcopy(dict(service))
    spec = out.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        client_ip = spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {})
        client_ip.setdefault("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
    if needs_node_ports(out):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port["port"])
        if not needs_node_ports(out):
            port.pop("nodePort", None)
    return out
