"""The values Felix's endpoint code passes around: endpoint ids and WorkloadEndpoints."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ORCHESTRATOR_K8S = "k8s"
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
# Namespace labels are copied onto endpoints under this prefix (Calico applies them the same
# way through the namespace's kns.<ns> profile), so namespaceSelector can see them.
NAMESPACE_LABEL_PREFIX = "pcns."
LABEL_NAMESPACE_NAME = "projectcalico.org/name"
NAMESPACE_PROFILE_PREFIX = "kns."
SERVICE_ACCOUNT_PROFILE_PREFIX = "ksa."
WEP_API_VERSION = "projectcalico.org/v3"
WEP_KIND = "WorkloadEndpoint"


@dataclass(frozen=True, slots=True)
class EndpointID:
    """Which pod interface a CNI call is about."""

    container_id: str
    namespace: str
    pod: str
    interface_name: str

    @property
    def pod_key(self) -> PodKey:
        return PodKey(self.namespace, self.pod)


@dataclass(frozen=True, slots=True)
class PodKey:
    namespace: str
    pod: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod}"


@dataclass(frozen=True, slots=True)
class NamedPort:
    name: str
    protocol: str
    port: int
    host_port: int = 0
    host_ip: str = ""

    def to_resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "protocol": self.protocol, "port": self.port}
        if self.host_port:
            out["hostPort"] = self.host_port
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    @classmethod
    def from_resource(cls, obj: Mapping[str, Any]) -> NamedPort:
        return cls(
            name=str(obj.get("name", "")),
            protocol=str(obj.get("protocol", "TCP")),
            port=int(obj.get("port", 0)),
            host_port=int(obj.get("hostPort", 0) or 0),
            host_ip=str(obj.get("hostIP", "") or ""),
        )


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    """A projectcalico.org/v3 WorkloadEndpoint, as Felix writes it for a k8s pod."""

    namespace: str
    name: str
    node: str
    pod: str
    endpoint: str  # the interface inside the pod
    container_id: str
    ip_networks: tuple[str, ...]
    interface_name: str  # the host-side veth
    mac: str  # the pod-side MAC
    profiles: tuple[str, ...]
    ports: tuple[NamedPort, ...]
    service_account: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # Set by the store at creation and kept on every rewrite (bookkeeping, not content).
    uid: str = field(default="", compare=False)
    creation_timestamp: str = field(default="", compare=False)

    @property
    def pod_key(self) -> PodKey:
        return PodKey(self.namespace, self.pod)

    def to_resource(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "orchestrator": ORCHESTRATOR_K8S,
            "node": self.node,
            "pod": self.pod,
            "endpoint": self.endpoint,
            "containerID": self.container_id,
            "ipNetworks": list(self.ip_networks),
            "interfaceName": self.interface_name,
            "mac": self.mac,
            "profiles": list(self.profiles),
        }
        if self.ports:
            spec["ports"] = [p.to_resource() for p in self.ports]
        if self.service_account:
            spec["serviceAccountName"] = self.service_account
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": dict(sorted(self.labels.items())),
        }
        if self.uid:
            metadata["uid"] = self.uid
        if self.creation_timestamp:
            metadata["creationTimestamp"] = self.creation_timestamp
        return {"apiVersion": WEP_API_VERSION, "kind": WEP_KIND, "metadata": metadata, "spec": spec}

    @classmethod
    def from_resource(cls, obj: Mapping[str, Any]) -> WorkloadEndpoint:
        """Parse a stored endpoint; KeyError/TypeError/ValueError when it is malformed."""
        meta = obj["metadata"]
        spec = obj["spec"]
        return cls(
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            node=str(spec.get("node", "")),
            pod=str(spec.get("pod", "")),
            endpoint=str(spec.get("endpoint", "")),
            container_id=str(spec.get("containerID", "")),
            ip_networks=tuple(str(n) for n in spec.get("ipNetworks") or ()),
            interface_name=str(spec.get("interfaceName", "")),
            mac=str(spec.get("mac", "")),
            profiles=tuple(str(p) for p in spec.get("profiles") or ()),
            ports=tuple(NamedPort.from_resource(p) for p in spec.get("ports") or ()),
            service_account=str(spec.get("serviceAccountName", "")),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            uid=str(meta.get("uid", "")),
            creation_timestamp=str(meta.get("creationTimestamp", "")),
        )

    def endpoint_id(self) -> EndpointID:
        return EndpointID(self.container_id, self.namespace, self.pod, self.endpoint)

    def ips(self) -> tuple[IPAddress, ...]:
        return tuple(ipaddress.ip_interface(n).ip for n in self.ip_networks)
