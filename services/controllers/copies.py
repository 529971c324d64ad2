"""What the etcd datastore keeps of each Kubernetes kind the copying controllers handle.

The copy holds what the project's readers use (Felix's pod cache: labels, service account,
named ports; profiles from namespaces and service accounts; Kubernetes NetworkPolicy for the
policy engine; Services and EndpointSlices for Felix's load balancing, services/felix/calc/
services.py), and leaves out what changes without meaning anything to them (pod and service
conditions, managedFields, resourceVersion, kubectl's last-applied annotation, an endpoint's
targetRef, zone and hints), so that those changes cost
no write. Each copy is validated and normalised as any stored resource is; one that does not
validate is not written (the caller logs it, naming the object and the field).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.keys import (
    GROUP_CORE,
    GROUP_DISCOVERY,
    GROUP_NETWORKING,
    resource_key,
    resource_prefix,
)
from libcalico.resources.serialization import to_json_bytes
from libcalico.resources.validation import validate
from services.controllers import run_config
from services.controllers.informer import ObjectKey

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
Projection = Callable[[dict[str, Any]], dict[str, Any]]


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {"name": meta.get("name")}
    for key in ("namespace", "uid", "creationTimestamp", "labels"):
        if meta.get(key):
            out[key] = meta[key]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    if annotations:
        out["annotations"] = annotations
    return out


def pod_copy(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    kept_status = {k: status[k] for k in ("phase", "podIP", "podIPs", "hostIP") if status.get(k)}
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(obj),
        "spec": obj.get("spec") or {},
    }
    if kept_status:
        out["status"] = kept_status
    return out


def namespace_copy(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": _metadata(obj)}
    phase = (obj.get("status") or {}).get("phase")
    if phase:
        out["status"] = {"phase": phase}
    return out


def service_account_copy(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(obj),
    }
    if obj.get("automountServiceAccountToken") is not None:
        out["automountServiceAccountToken"] = obj["automountServiceAccountToken"]
    return out


def network_policy_copy(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(obj),
        "spec": obj.get("spec") or {},
    }


def service_copy(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(obj),
        "spec": obj.get("spec") or {},
    }
    # The load balancer's ingress IPs are external IPs Felix serves; conditions are not read.
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    if ingress:
        out["status"] = {"loadBalancer": {"ingress": ingress}}
    return out


_ENDPOINT_FIELDS = ("addresses", "conditions", "nodeName")
_SLICE_PORT_FIELDS = ("name", "protocol", "port")


def endpoint_slice_copy(obj: dict[str, Any]) -> dict[str, Any]:
    # Every slice, whoever manages it: Felix picks its service by the service-name label.
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _metadata(obj),
        "addressType": obj.get("addressType"),
        "endpoints": [
            {k: e[k] for k in _ENDPOINT_FIELDS if e.get(k) is not None}
            for e in obj.get("endpoints") or ()
        ],
        "ports": [
            {k: p[k] for k in _SLICE_PORT_FIELDS if p.get(k) is not None}
            for p in obj.get("ports") or ()
        ],
    }


@dataclass(frozen=True, slots=True)
class CopiedKind:
    controller: str  # its name in spec.controllers
    kind: str
    api_path: str  # the collection in the API, all namespaces
    group: str  # where the copy lives: /calico/resources/v3/<group>/<plural>/...
    plural: str
    project: Projection

    @property
    def prefix(self) -> str:
        return resource_prefix(self.group, self.plural)

    def key(self, okey: ObjectKey) -> str:
        namespace, name = okey
        return resource_key(self.group, self.plural, name, namespace or None)

    def document(self, obj: dict[str, Any]) -> bytes:
        """The stored bytes for an API object; ValidationError when it does not validate."""
        return to_json_bytes(validate(self.project(obj)))


PODS = CopiedKind(run_config.WORKLOAD_ENDPOINT, "Pod", "/api/v1/pods", GROUP_CORE, "pods", pod_copy)
NAMESPACES = CopiedKind(
    run_config.NAMESPACE,
    "Namespace",
    "/api/v1/namespaces",
    GROUP_CORE,
    "namespaces",
    namespace_copy,
)
SERVICE_ACCOUNTS = CopiedKind(
    run_config.SERVICE_ACCOUNT,
    "ServiceAccount",
    "/api/v1/serviceaccounts",
    GROUP_CORE,
    "serviceaccounts",
    service_account_copy,
)
NETWORK_POLICIES = CopiedKind(
    run_config.POLICY,
    "NetworkPolicy",
    "/apis/networking.k8s.io/v1/networkpolicies",
    GROUP_NETWORKING,
    "networkpolicies",
    network_policy_copy,
)
SERVICES = CopiedKind(
    run_config.WORKLOAD_ENDPOINT,
    "Service",
    "/api/v1/services",
    GROUP_CORE,
    "services",
    service_copy,
)
ENDPOINT_SLICES = CopiedKind(
    run_config.WORKLOAD_ENDPOINT,
    "EndpointSlice",
    "/apis/discovery.k8s.io/v1/endpointslices",
    GROUP_DISCOVERY,
    "endpointslices",
    endpoint_slice_copy,
)
# Every copied kind, each run by its controller: workloadEndpoint copies what Felix reads
# about workloads (Pods, and the Services and EndpointSlices that load-balance to them).
COPIED_KINDS = (PODS, SERVICES, ENDPOINT_SLICES, NAMESPACES, SERVICE_ACCOUNTS, NETWORK_POLICIES)
