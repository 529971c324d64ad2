"""Services in a lab: `calico-lab svc create|rm|ls|sync` and the conformance runner's Services.

    async with LabStore(lab.state) as store:
        stored = await apply_service(lab.state, store, service)   # create or replace
        await remove_service(lab.state, store, "y", "web")

Where the lab runs an API server, the real kube-apiserver checks the Service, applies its
defaults and allocates its cluster IP (`--service-cluster-ip-range`, lab/apiserver.py) and node
ports. Without one (embedded and etcd datastores) the lab plays that part: lab/svcspec.py
checks and defaults, and this module allocates the lowest free cluster IP of SERVICE_RANGE
(which overlaps no pool, node address or 192.0.2.0/24) and the lowest free node port of
30000-32767. Either way a replaced Service keeps its cluster IP, and the node ports its new
type still uses. For a LoadBalancer the lab also plays the cloud controller: it writes
`status.loadBalancer.ingress` as the object gives it, or else one free address of LB_RANGE
(with an API server through the status subresource). After every change the lab's
EndpointSlice controller runs (lab/endpointslices.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from lab import apiserver, endpointslices, svcspec
from lab.state import LabState
from lab.store import LabStore

# The project's shared Service validator (libcalico), where the branch has it.
shared_check: Callable[[Mapping[str, Any]], object] | None
try:
    from libcalico.resources.validation.services import (  # type: ignore[import-not-found,unused-ignore]
        check_service as _check_service,
    )

    shared_check = _check_service
except ImportError:  # TODO(issue 14): drop once libcalico's Service validator is merged
    shared_check = None

SERVICE_RANGE = ipaddress.ip_network(apiserver.SERVICE_CLUSTER_IP_RANGE)
# Reserved as in a cluster: the network address, and the first address (the `kubernetes`
# Service's, which the lab does not make).
FIRST_ALLOCATED = 2
TEST_NET = ipaddress.ip_network("192.0.2.0/24")  # externalIPs and load-balancer addresses
LB_RANGE = ipaddress.ip_network("192.0.2.128/25")  # load-balancer addresses the lab picks


class ServiceError(ValueError):
    """A Service that cannot be written; the message names the field."""


def ref(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
    }


def cluster_ip(service: Mapping[str, Any]) -> str:
    return str((service.get("spec") or {}).get("clusterIP") or "")


def key_of(service: Mapping[str, Any]) -> str:
    meta = service.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _lowest_free_ip(used: set[str]) -> str:
    for offset in range(FIRST_ALLOCATED, SERVICE_RANGE.num_addresses - 1):
        candidate = str(SERVICE_RANGE.network_address + offset)
        if candidate not in used:
            return candidate
    raise ServiceError(f"spec.clusterIP: the service range {SERVICE_RANGE} is full")


def _lowest_free_node_port(used: set[int]) -> int:
    low, high = svcspec.NODE_PORT_RANGE
    for port in range(low, high + 1):
        if port not in used:
            return port
    raise ServiceError(f"spec.ports.nodePort: the node port range {low}-{high} is full")


def _node_ports(service: Mapping[str, Any]) -> set[int]:
    return {
        int(p["nodePort"])
        for p in (service.get("spec") or {}).get("ports") or []
        if p.get("nodePort")
    }


def _lb_ips(service: Mapping[str, Any]) -> set[str]:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return {str(i["ip"]) for i in ingress if i.get("ip")}


def _allocate(
    service: dict[str, Any], current: Mapping[str, Any] | None, others: list[dict[str, Any]]
) -> None:
    """What the API server allocates (lab without one): cluster IP and node ports, kept from
    `current` on replacement; in place."""
    spec = service["spec"]
    used_ips = {cluster_ip(o) for o in others}
    wanted_ip = spec.get("clusterIP") or ""
    if wanted_ip == svcspec.HEADLESS:
        spec["clusterIPs"] = [svcspec.HEADLESS]
    else:
        if not wanted_ip and current is not None and cluster_ip(current) != svcspec.HEADLESS:
            wanted_ip = cluster_ip(current)
        if wanted_ip:
            if ipaddress.ip_address(wanted_ip) not in SERVICE_RANGE:
                raise ServiceError(f"spec.clusterIP: {wanted_ip} is not in {SERVICE_RANGE}")
            if wanted_ip in used_ips:
                raise ServiceError(f"spec.clusterIP: {wanted_ip} is already allocated")
        else:
            wanted_ip = _lowest_free_ip(used_ips)
        spec["clusterIP"] = wanted_ip
        spec["clusterIPs"] = [wanted_ip]
    if not svcspec.needs_node_ports(service):
        return
    used_ports = set().union(*(_node_ports(o) for o in others)) if others else set()
    kept = {
        (p.get("port"), p.get("protocol", "TCP")): p["nodePort"]
        for p in ((current or {}).get("spec") or {}).get("ports") or []
        if p.get("nodePort")
    }
    for i, port in enumerate(spec.get("ports") or []):
        node_port = port.get("nodePort") or kept.get((port["port"], port["protocol"]))
        if node_port:
            if node_port in used_ports:
                raise ServiceError(f"spec.ports[{i}].nodePort: {node_port} is already allocated")
        else:
            node_port = _lowest_free_node_port(used_ports)
        port["nodePort"] = node_port
        used_ports.add(node_port)


def _load_balancer_status(
    service: dict[str, Any], current: Mapping[str, Any] | None, others: list[dict[str, Any]]
) -> None:
    """The cloud controller's part: the object's own ingress, else the one it had, else a
    free address of LB_RANGE."""
    if (service["spec"].get("type")) != "LoadBalancer":
        service.pop("status", None)
        return
    if _lb_ips(service):
        return
    kept = _lb_ips(current or {})
    if not kept:
        used = set().union(*(_lb_ips(o) for o in others)) if others else set()
        used |= {ip for o in others for ip in (o.get("spec") or {}).get("externalIPs") or []}
        kept = {next(str(ip) for ip in LB_RANGE.hosts() if str(ip) not in used)}
    service["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in sorted(kept)]}}


async def apply_service(
    state: LabState, store: LabStore, service: Mapping[str, Any]
) -> dict[str, Any]:
    """Create or replace a Service (checked, defaulted, allocated), then bring the
    EndpointSlices in line; returns the Service as stored. ServiceError names the field."""
    try:
        svcspec.check(service)
    except svcspec.SpecError as exc:
        raise ServiceError(str(exc)) from None
    wanted = svcspec.with_defaults(service)
    meta = wanted["metadata"]
    current = await store.get_object(ref(meta["namespace"], meta["name"]))
    everything = await store.list_objects("v1", "Service")
    others = [s for s in everything if key_of(s) != key_of(wanted)]
    if not store.has_api:
        _allocate(wanted, current, others)
    _load_balancer_status(wanted, current, others)
    if shared_check is not None and not store.has_api:  # the API server checks its own
        try:
            shared_check(wanted)
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
    stored = await store.put_object(wanted)
    await endpointslices.sync(state, store)
    return stored


async def remove_service(state: LabState, store: LabStore, namespace: str, name: str) -> bool:
    """Delete a Service and its EndpointSlices; False when there was none."""
    removed = await store.remove_object(ref(namespace, name))
    await endpointslices.sync(state, store)
    return removed


async def list_services(store: LabStore) -> list[dict[str, Any]]:
    return await store.list_objects("v1", "Service")


def describe(service: Mapping[str, Any]) -> str:
    """One `svc ls` line: ns/name type cluster-ip ports [external addresses] selector."""
    spec = service.get("spec") or {}
    ports = []
    for port in spec.get("ports") or []:
        text = f"{port['port']}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        text += f"/{port.get('protocol', 'TCP')}"
        if port.get("targetPort") not in (None, port["port"]):
            text += f"->{port['targetPort']}"
        ports.append(text)
    external = sorted(set(spec.get("externalIPs") or []) | _lb_ips(service))
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    extras = []
    if spec.get("sessionAffinity") == "ClientIP":
        seconds = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
            "timeoutSeconds"
        )
        extras.append(f"affinity=ClientIP:{seconds}")
    for field in ("externalTrafficPolicy", "internalTrafficPolicy"):
        if spec.get(field) == "Local":
            extras.append(f"{field}=Local")
    return "  ".join(
        [
            key_of(service),
            spec.get("type", "ClusterIP"),
            cluster_ip(service) or "-",
            ",".join(ports) or "-",
            ",".join(external) or "-",
            selector or "-",
            *extras,
        ]
    )
