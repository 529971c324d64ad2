"""Stored resources (JSON) parsed into the few fields the calculation graph uses."""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.keys import (
    GROUP_CALICO,
    GROUP_CORE,
    GROUP_DISCOVERY,
    GROUP_NETWORKING,
    ResourceKey,
    parse_resource_key,
)
from libcalico.selector import NAMESPACE_LABEL, Selector, parse
from libcalico.selector.nodes import Node
from services.felix.calc.k8s import convert_network_policy
from services.felix.calc.rules import protocol_number
from services.felix.calc.selectors import (
    NAME_LABEL,
    NAMESPACE_PREFIX,
    ORCHESTRATOR_LABEL,
    SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_PREFIX,
    combine,
    in_namespace,
    namespace_selector_node,
    service_accounts_node,
)

NamedPort = tuple[str, int, int]  # (name, protocol number, port)


def load(value: bytes) -> dict[str, Any]:
    obj = json.loads(value)
    if not isinstance(obj, dict):
        raise ValueError("resource is not a JSON object")
    return obj


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def cidrs(values: Any) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or ():
        try:
            out.append(str(ipaddress.ip_network(str(value), strict=False)))
        except ValueError:
            continue
    return tuple(dict.fromkeys(out))


def namespace_parent(namespace: str) -> tuple[str, str]:
    return ("ns", namespace)


def service_account_parent(namespace: str, name: str) -> tuple[str, str, str]:
    return ("sa", namespace, name)


def namespace_parent_labels(name: str, labels: dict[str, str]) -> dict[str, str]:
    out = {NAMESPACE_PREFIX + k: v for k, v in labels.items()}
    out[NAMESPACE_PREFIX + NAME_LABEL] = name
    return out


def service_account_parent_labels(name: str, labels: dict[str, str]) -> dict[str, str]:
    out = {SERVICE_ACCOUNT_PREFIX + k: v for k, v in labels.items()}
    out[SERVICE_ACCOUNT_PREFIX + NAME_LABEL] = name
    return out


@dataclass(frozen=True, slots=True)
class Endpoint:
    key: str
    namespace: str
    name: str
    pod: str
    node: str
    interface: str
    nets: tuple[str, ...]
    ports: tuple[NamedPort, ...]
    profiles: tuple[str, ...]
    labels: dict[str, str]  # as stored (automatic labels added by the graph)
    service_account: str
    revision: int
    raw_ports: tuple[NamedPort, ...] = ()  # as the WorkloadEndpoint lists them

    def parents(self) -> list[tuple[str, ...]]:
        parents: list[tuple[str, ...]] = [namespace_parent(self.namespace)]
        if self.service_account:
            parents.append(service_account_parent(self.namespace, self.service_account))
        return parents

    def automatic_labels(self) -> dict[str, str]:
        out = {NAMESPACE_LABEL: self.namespace, ORCHESTRATOR_LABEL: "k8s"}
        if self.service_account:
            out[SERVICE_ACCOUNT_LABEL] = self.service_account
        return out


def parse_endpoint(rkey: ResourceKey, key: str, obj: dict[str, Any], revision: int) -> Endpoint:
    spec = obj.get("spec") or {}
    namespace = rkey.namespace or ""
    ports: list[NamedPort] = []
    for entry in spec.get("ports") or ():
        try:
            proto = protocol_number(entry.get("protocol") or "TCP") or 6
            ports.append((str(entry.get("name", "")), proto, int(entry["port"])))
        except (KeyError, TypeError, ValueError):
            continue
    labels = labels_of(obj)
    sa = str(spec.get("serviceAccountName") or labels.get(SERVICE_ACCOUNT_LABEL) or "")
    profiles = tuple(str(p) for p in spec.get("profiles") or ())
    if not profiles and namespace:
        # Kubernetes endpoints always carry their namespace's (and service account's) profile.
        profiles = (f"kns.{namespace}",) + ((f"ksa.{namespace}.{sa}",) if sa else ())
    return Endpoint(
        key=key,
        namespace=namespace,
        name=rkey.name,
        pod=str(spec.get("pod") or ""),
        node=str(spec.get("node") or ""),
        interface=str(spec.get("interfaceName") or ""),
        nets=cidrs(spec.get("ipNetworks")),
        ports=tuple(ports),
        profiles=profiles,
        labels=labels,
        service_account=sa,
        revision=revision,
    )


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What a Kubernetes Pod adds to its endpoint: newer labels, named ports."""

    revision: int
    labels: dict[str, str]
    ports: tuple[NamedPort, ...]


def parse_pod(obj: dict[str, Any], revision: int) -> PodInfo:
    ports: list[NamedPort] = []
    for container in (obj.get("spec") or {}).get("containers") or ():
        for entry in container.get("ports") or ():
            if not entry.get("name") or entry.get("containerPort") is None:
                continue
            try:
                proto = protocol_number(entry.get("protocol") or "TCP") or 6
                ports.append((str(entry["name"]), proto, int(entry["containerPort"])))
            except (TypeError, ValueError):
                continue
    return PodInfo(revision, labels_of(obj), tuple(ports))


@dataclass(frozen=True, slots=True)
class PolicyDef:
    id: str  # "gnp:<name>", "np:<ns>/<name>", "knp:<ns>/<name>"
    namespace: str | None
    sort_key: tuple[float, str, str]
    selector: Selector
    ingress_enabled: bool
    egress_enabled: bool
    ingress: tuple[dict[str, Any], ...]
    egress: tuple[dict[str, Any], ...]

    @property
    def evaluation(self) -> tuple[tuple[float, str, str], bool, bool]:
        """What endpoint chains depend on (rules aside)."""
        return (self.sort_key, self.ingress_enabled, self.egress_enabled)


def _default_types(spec: dict[str, Any]) -> list[str]:
    if spec.get("egress") and not spec.get("ingress"):
        return ["Egress"]
    if spec.get("egress"):
        return ["Ingress", "Egress"]
    return ["Ingress"]


def policy_id(rkey: ResourceKey) -> str:
    if rkey.group == GROUP_NETWORKING:
        return f"knp:{rkey.namespace}/{rkey.name}"
    if rkey.plural == "globalnetworkpolicies":
        return f"gnp:{rkey.name}"
    return f"np:{rkey.namespace}/{rkey.name}"


def parse_policy(rkey: ResourceKey, obj: dict[str, Any]) -> PolicyDef:
    namespace = rkey.namespace
    if rkey.group == GROUP_NETWORKING:
        name, spec = convert_network_policy(obj)
    else:
        name, spec = rkey.name, obj.get("spec") or {}
    parts: list[Node] = [parse(spec.get("selector") or "all()").root]
    if namespace:
        parts.append(in_namespace(namespace))
    elif spec.get("namespaceSelector"):
        parts.append(namespace_selector_node(spec["namespaceSelector"]))
    sa_node = service_accounts_node([], spec.get("serviceAccountSelector"))
    if sa_node is not None:
        parts.append(sa_node)
    types = spec.get("types") or _default_types(spec)
    if spec.get("doNotTrack") or spec.get("preDNAT"):
        # Felix puts these in the untracked / pre-DNAT tiers, which only host endpoints get:
        # they never govern a workload endpoint.
        types = []
    order = spec.get("order")
    return PolicyDef(
        id=policy_id(rkey),
        namespace=namespace,
        sort_key=(float(order) if order is not None else math.inf, name, namespace or ""),
        selector=combine(parts),
        ingress_enabled="Ingress" in types,
        egress_enabled="Egress" in types,
        ingress=tuple(spec.get("ingress") or ()),
        egress=tuple(spec.get("egress") or ()),
    )


POLICY_KINDS = {
    (GROUP_CALICO, "networkpolicies"),
    (GROUP_CALICO, "globalnetworkpolicies"),
    (GROUP_NETWORKING, "networkpolicies"),
}
NETWORK_SET_KINDS = {(GROUP_CALICO, "networksets"), (GROUP_CALICO, "globalnetworksets")}
ENDPOINT_KIND = (GROUP_CALICO, "workloadendpoints")
PROFILE_KIND = (GROUP_CALICO, "profiles")
NAMESPACE_KIND = (GROUP_CORE, "namespaces")
SERVICE_ACCOUNT_KIND = (GROUP_CORE, "serviceaccounts")
POD_KIND = (GROUP_CORE, "pods")
SERVICE_KIND = (GROUP_CORE, "services")
ENDPOINT_SLICE_KIND = (GROUP_DISCOVERY, "endpointslices")
IPPOOL_KIND = (GROUP_CALICO, "ippools")


def enabled_ipv4_pool(obj: dict[str, Any]) -> str | None:
    """An IPPool's CIDR when it is IPv4 and enabled (pod addresses come from it), else None."""
    spec = obj.get("spec") or {}
    if spec.get("disabled"):
        return None
    network = ipaddress.ip_network(str(spec.get("cidr")), strict=False)
    return str(network) if network.version == 4 else None


__all__ = ["parse_resource_key"]
