"""Services and EndpointSlices -> ServicePorts (model.py), incrementally, as kube-proxy reads them.

The index keeps every Service and EndpointSlice (parsed to the few fields used) and, per
service, the ServicePorts last computed. A change to one Service or one slice recomputes that
one service and reports the ServicePort ids that changed or vanished; nothing else is touched.

Rules (kube-proxy's):
- IPv4 only: the IPv4 entries of spec.clusterIPs (or spec.clusterIP); a headless (`None`) or
  ExternalName Service, or one without an IPv4 cluster IP, has no ServicePort.
- Slices belong to a service by the label `kubernetes.io/service-name`; only IPv4 slices count.
- A service port (name, protocol; protocol defaults to TCP) takes, from each slice, the slice
  port with the same name and protocol; its `port` is the target port for that slice's
  endpoints (a named targetPort may resolve differently per slice).
- An endpoint is its first address; conditions default as the API says (ready absent = true,
  serving absent = ready, terminating absent = false). The same address in several slices
  counts once (a ready copy wins over a not-ready one). Usable: the ready endpoints, or the
  serving-and-terminating ones when none is ready.
- nodePort only for NodePort/LoadBalancer; external IPs are spec.externalIPs and the status'
  load-balancer ingress IPs (IPv4); sessionAffinity ClientIP -> timeoutSeconds (default
  10800); externalTrafficPolicy Local only where traffic can come from outside
  (NodePort/LoadBalancer, or external IPs).

Input must be valid (libcalico's check_service / check_endpoint_slice): an update that fails
raises ValidationError and changes nothing; the caller logs it and keeps the previous version.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libcalico.resources.validation.services import (
    DEFAULT_AFFINITY_TIMEOUT_S,
    SERVICE_NAME_LABEL,
    check_endpoint_slice,
    check_service,
)
from services.felix.calc.model import PROTOCOL_NUMBERS, ServiceBackend, ServicePort

ServiceName = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class SvcPortSpec:
    name: str
    protocol: int
    port: int
    node_port: int | None


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """The fields of a Service that ServicePorts are made of (ports without endpoints)."""

    cluster_ips: tuple[str, ...]  # IPv4; empty: nothing to program
    ports: tuple[SvcPortSpec, ...]
    external_ips: tuple[str, ...]
    affinity_timeout_s: int | None
    internal_local: bool
    external_local: bool


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    address: str
    ready: bool
    serving: bool
    terminating: bool
    local: bool


@dataclass(frozen=True, slots=True)
class SliceInfo:
    service: ServiceName | None  # None: no service-name label, or not IPv4 (ignored)
    ports: Mapping[tuple[str, int], int]  # (name, protocol number) -> target port
    endpoints: tuple[SliceEndpoint, ...]


def _ipv4(values: Any) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            continue
        if address.version == 4 and str(address) not in out:
            out.append(str(address))
    return tuple(out)


def parse_service(obj: Mapping[str, Any]) -> ServiceInfo:
    """The ServicePort-relevant fields of a Service; ValidationError when it is invalid."""
    check_service(obj)
    spec = obj.get("spec") or {}
    service_type = spec.get("type") or "ClusterIP"
    raw_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    cluster_ips = () if service_type == "ExternalName" else _ipv4(raw_ips)
    node_ports = service_type in ("NodePort", "LoadBalancer")
    ports = tuple(
        SvcPortSpec(
            name=port.get("name") or "",
            protocol=PROTOCOL_NUMBERS[port.get("protocol") or "TCP"],
            port=int(port["port"]),
            node_port=int(port["nodePort"]) if node_ports and port.get("nodePort") else None,
        )
        for port in spec.get("ports") or ()
    )
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    # An ingress in ipMode Proxy is reached through the load balancer, not at its IP.
    lb_ips = [i.get("ip") for i in ingress if i.get("ip") and i.get("ipMode") != "Proxy"]
    external_ips = _ipv4([*(spec.get("externalIPs") or ()), *lb_ips])
    timeout: int | None = None
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        timeout = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT_S)
    externally_reachable = node_ports or bool(spec.get("externalIPs"))
    return ServiceInfo(
        cluster_ips=cluster_ips,
        ports=ports,
        external_ips=external_ips,
        affinity_timeout_s=timeout,
        internal_local=spec.get("internalTrafficPolicy") == "Local",
        external_local=externally_reachable and spec.get("externalTrafficPolicy") == "Local",
    )


def parse_slice(namespace: str, obj: Mapping[str, Any], nodename: str) -> SliceInfo:
    """An EndpointSlice's ports and endpoints; ValidationError when it is invalid."""
    check_endpoint_slice(obj)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service_name = labels.get(SERVICE_NAME_LABEL)
    if not service_name or obj.get("addressType") != "IPv4":
        return SliceInfo(None, {}, ())
    ports: dict[tuple[str, int], int] = {}
    for port in obj.get("ports") or ():
        if port.get("port") is None:
            continue  # no port: the slice's endpoints serve nothing for this name
        ports[port.get("name") or "", PROTOCOL_NUMBERS[port.get("protocol") or "TCP"]] = int(
            port["port"]
        )
    endpoints: list[SliceEndpoint] = []
    for endpoint in obj.get("endpoints") or ():
        conditions = endpoint.get("conditions") or {}
        ready = conditions.get("ready")
        ready = True if ready is None else bool(ready)
        serving = conditions.get("serving")
        serving = ready if serving is None else bool(serving)
        endpoints.append(
            SliceEndpoint(
                address=endpoint["addresses"][0],  # validated: a canonical IPv4 address
                ready=ready,
                serving=serving,
                terminating=bool(conditions.get("terminating") or False),
                local=bool(nodename) and endpoint.get("nodeName") == nodename,
            )
        )
    return SliceInfo((namespace, str(service_name)), ports, tuple(endpoints))


def port_id(service: ServiceName, name: str, protocol: int) -> str:
    return f"{service[0]}/{service[1]}/{name}/{protocol}"


class ServiceIndex:
    """Services and EndpointSlices in, ServicePorts (by id) out; see the module note.

    ``ports`` is the current ServicePort of every id (the caller may share it as its state);
    each update returns the ids whose ServicePort changed or was removed.
    """

    def __init__(self, nodename: str, ports: dict[str, ServicePort] | None = None) -> None:
        self.nodename = nodename
        self.ports: dict[str, ServicePort] = ports if ports is not None else {}
        self._services: dict[ServiceName, ServiceInfo] = {}
        self._slices: dict[ServiceName, SliceInfo] = {}  # by (namespace, slice name)
        self._slices_of: dict[ServiceName, set[str]] = {}  # service -> its slices' names
        self._ids_of: dict[ServiceName, set[str]] = {}  # service -> its ServicePort ids

    # -- input -----------------------------------------------------------------------------

    def update_service(self, namespace: str, name: str, obj: Mapping[str, Any]) -> set[str]:
        info = parse_service(obj)
        service = (namespace, name)
        if self._services.get(service) == info:
            return set()
        self._services[service] = info
        return self._recompute(service)

    def delete_service(self, namespace: str, name: str) -> set[str]:
        service = (namespace, name)
        if self._services.pop(service, None) is None:
            return set()
        return self._recompute(service)

    def update_slice(self, namespace: str, name: str, obj: Mapping[str, Any]) -> set[str]:
        info = parse_slice(namespace, obj, self.nodename)
        key = (namespace, name)
        old = self._slices.get(key)
        if old == info:
            return set()
        self._slices[key] = info
        changed: set[str] = set()
        if old is not None and old.service is not None and old.service != info.service:
            self._slices_of[old.service].discard(name)
            changed |= self._recompute(old.service)
        if info.service is not None:
            self._slices_of.setdefault(info.service, set()).add(name)
            changed |= self._recompute(info.service)
        return changed

    def delete_slice(self, namespace: str, name: str) -> set[str]:
        old = self._slices.pop((namespace, name), None)
        if old is None or old.service is None:
            return set()
        self._slices_of[old.service].discard(name)
        return self._recompute(old.service)

    # -- computing -------------------------------------------------------------------------

    def _recompute(self, service: ServiceName) -> set[str]:
        new = {sp.id: sp for sp in self._service_ports(service)}
        old_ids = self._ids_of.pop(service, set())
        changed = {i for i in old_ids if i not in new}
        for i in changed:
            del self.ports[i]
        for i, sp in new.items():
            if self.ports.get(i) != sp:
                self.ports[i] = sp
                changed.add(i)
        if new:
            self._ids_of[service] = set(new)
        if not self._slices_of.get(service):
            self._slices_of.pop(service, None)
        return changed

    def _service_ports(self, service: ServiceName) -> list[ServicePort]:
        info = self._services.get(service)
        if info is None or not info.cluster_ips:
            return []
        slices = [
            self._slices[service[0], name] for name in sorted(self._slices_of.get(service, ()))
        ]
        return [
            ServicePort(
                id=port_id(service, spec.name, spec.protocol),
                namespace=service[0],
                service=service[1],
                port_name=spec.name,
                protocol=spec.protocol,
                port=spec.port,
                cluster_ips=info.cluster_ips,
                node_port=spec.node_port,
                external_ips=info.external_ips,
                affinity_timeout_s=info.affinity_timeout_s,
                internal_local=info.internal_local,
                external_local=info.external_local,
                backends=_backends(spec, slices),
            )
            for spec in info.ports
        ]


def _backends(spec: SvcPortSpec, slices: list[SliceInfo]) -> tuple[ServiceBackend, ...]:
    """The usable endpoints of one service port across its slices (see the module note)."""
    found: dict[str, tuple[SliceEndpoint, int]] = {}
    for info in slices:  # in slice-name order: the result does not depend on arrival order
        target = info.ports.get((spec.name, spec.protocol))
        if target is None:
            continue
        for endpoint in info.endpoints:
            seen = found.get(endpoint.address)
            if seen is None or (endpoint.ready and not seen[0].ready):
                found[endpoint.address] = (endpoint, target)
    usable = [(e, t) for e, t in found.values() if e.ready]
    if not usable:
        usable = [(e, t) for e, t in found.values() if e.serving and e.terminating]
    backends = [ServiceBackend(e.address, t, e.local) for e, t in usable]
    backends.sort(key=lambda b: (socket.inet_aton(b.address), b.port))
    return tuple(backends)
