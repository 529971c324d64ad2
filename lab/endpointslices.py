"""The lab's EndpointSlice controller: `discovery.k8s.io/v1` EndpointSlices in step with the
lab's pods and its Services, in every datastore (the lab runs no kube-controller-manager).

    async with LabStore(lab.state) as store:
        await sync(lab.state, store)      # after any change to pods, labels, readiness, Services

What Kubernetes' controller does, for what the lab makes: a Service with a non-empty selector
gets slices listing the pods of its namespace whose labels match (and that have an address),
each endpoint with its address, `nodeName`, `targetRef` and conditions ready/serving/
terminating (a not-ready pod stays listed with ready=serving=false). Ports are resolved per pod:
a numeric targetPort is taken as is; a named one resolves to the pod's container port of that
name and of the service port's protocol, and a pod without one is left out of that port. Pods
whose resolved ports differ go into different slices (a slice has one port list), named
`<service>-<hash of the port list>`. Every slice the lab writes carries the label
`endpointslice.kubernetes.io/managed-by: calico-lab`; `sync` rewrites only those that changed
and deletes those no longer wanted (a deleted Service's, a selector that matches nothing).

There is no watch: the lab calls `sync` after each change it makes itself (lab/pods.py,
lab/services.py, the conformance runner). A change made around the lab (kubectl) is picked up
by the next one, or by `calico-lab svc sync`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.objects import port_name
from lab.state import LabState, PodState
from lab.store import LabStore

API_VERSION = "discovery.k8s.io/v1"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "calico-lab"


@dataclass(frozen=True)
class PodEndpoint:
    """What the controller needs of a pod."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str
    node: str
    ready: bool
    ports: tuple[tuple[str, str, int], ...]  # (container port name, PROTOCOL, number)


def pod_endpoint(pod: PodState) -> PodEndpoint:
    ports = []
    for entry in pod.serve:
        proto, _, number = entry.partition(":")
        ports.append((port_name(int(number), proto), proto.upper(), int(number)))
    return PodEndpoint(
        pod.namespace, pod.name, dict(pod.labels), pod.ip, pod.node, pod.ready, tuple(ports)
    )


def _resolve(service_port: Mapping[str, Any], pod: PodEndpoint) -> int | None:
    protocol = service_port.get("protocol", "TCP")
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for name, proto, number in pod.ports:
        if name == target and proto == protocol:
            return number
    return None


def _selected(service: Mapping[str, Any], pods: Iterable[PodEndpoint]) -> list[PodEndpoint]:
    meta = service.get("metadata") or {}
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return []
    return sorted(
        (
            p
            for p in pods
            if p.namespace == meta.get("namespace")
            and p.ip
            and all(p.labels.get(k) == v for k, v in selector.items())
        ),
        key=lambda p: p.name,
    )


def slice_name(service_name: str, ports: Sequence[Mapping[str, Any]]) -> str:
    digest = hashlib.sha1(json.dumps(list(ports), sort_keys=True).encode()).hexdigest()[:5]
    return f"{service_name[:57]}-{digest}"


def desired_slices(service: Mapping[str, Any], pods: Iterable[PodEndpoint]) -> list[dict[str, Any]]:
    """The EndpointSlices of one Service, by name."""
    meta = service.get("metadata") or {}
    service_ports = (service.get("spec") or {}).get("ports") or []
    groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for pod in _selected(service, pods):
        ports = []
        for service_port in service_ports:
            number = _resolve(service_port, pod)
            if number is not None:
                ports.append(
                    {
                        "name": service_port.get("name") or "",
                        "protocol": service_port.get("protocol", "TCP"),
                        "port": number,
                    }
                )
        endpoint = {
            "addresses": [pod.ip],
            "nodeName": pod.node,
            "conditions": {"ready": pod.ready, "serving": pod.ready, "terminating": False},
            "targetRef": {"kind": "Pod", "namespace": pod.namespace, "name": pod.name},
        }
        name = slice_name(str(meta["name"]), ports)
        groups.setdefault(name, (ports, []))[1].append(endpoint)
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {SERVICE_NAME_LABEL: meta["name"], MANAGED_BY_LABEL: MANAGED_BY},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }
        for name, (ports, endpoints) in sorted(groups.items())
    ]


def _same(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return bool(
        (current.get("metadata") or {}).get("labels") == wanted["metadata"]["labels"]
        and current.get("addressType") == wanted["addressType"]
        and (current.get("endpoints") or []) == wanted["endpoints"]
        and (current.get("ports") or []) == wanted["ports"]
    )


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


async def sync(state: LabState, store: LabStore) -> int:
    """Bring every lab-managed EndpointSlice in line with the Services and the lab's pods;
    returns how many slices were written or deleted."""
    pods = [pod_endpoint(p) for p in state.pods.values()]
    services = await store.list_objects("v1", "Service")
    wanted = {_key(s): s for svc in services for s in desired_slices(svc, pods)}
    current = {
        _key(s): s
        for s in await store.list_objects(API_VERSION, "EndpointSlice")
        if ((s.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
    }
    changes = 0
    for key, obj in wanted.items():
        if key not in current or not _same(current[key], obj):
            await store.put_object(obj)
            changes += 1
    for key, obj in current.items():
        if key not in wanted:
            await store.remove_object(obj)
            changes += 1
    return changes
