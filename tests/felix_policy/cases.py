"""The conformance topology (x, y, z namespaces; pods a, b, c) as resources, and case steps.

Shared by the model-level test (updates fed straight to the calc graph) and the kernel tests.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libcalico.datastore.keys import resource_key
from libcalico.resources.kinds import kind_of
from services.felix.endpoints.naming import host_veth_name

CASES_DIR = Path("/work/shared/conformance/netpol")
NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
NODE = "node-1"
PORTS = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"), (80, "SCTP"), (81, "SCTP"))


def load_cases(name: str) -> list[dict[str, Any]]:
    path = CASES_DIR / name
    if not path.exists():
        return []
    cases: list[dict[str, Any]] = json.loads(path.read_text())
    return cases


def pod_ip(ns: str, pod: str) -> str:
    return f"10.65.{NAMESPACES.index(ns)}.{PODS.index(pod) + 10}"


def object_key(obj: dict[str, Any]) -> str:
    info = kind_of(obj)
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") if info.namespaced else None
    return resource_key(info.group, info.plural, meta["name"], namespace)


def ref_key(ref: Any) -> str:
    if isinstance(ref, str):
        ns, _, name = ref.partition("/")
        return resource_key("networking.k8s.io", "networkpolicies", name, ns)
    return object_key(ref)


def _placeholder(value: str) -> str:
    if not (value.startswith("{{") and value.endswith("}}")):
        return value
    kind, _, rest = value[2:-2].partition(":")
    if kind == "ip":
        ns, pod = rest.split("/")
        return pod_ip(ns, pod)
    if kind == "hostcidr":
        ns, pod = rest.split("/")
        return pod_ip(ns, pod) + "/32"
    if kind == "supernet":
        target, _, length = rest.rpartition(":")
        ns, pod = target.split("/")
        return str(ipaddress.ip_network(f"{pod_ip(ns, pod)}/{length}", strict=False))
    raise ValueError(value)


def resolve(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: resolve(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve(v) for v in obj]
    if isinstance(obj, str):
        return _placeholder(obj)
    return obj


def namespace_obj(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod_obj(ns: str, pod: str, labels: dict[str, str]) -> dict[str, Any]:
    ports = [
        {"name": f"serve-{p}-{proto.lower()}", "containerPort": p, "protocol": proto}
        for p, proto in PORTS
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "namespace": ns, "labels": labels},
        "spec": {"nodeName": NODE, "containers": [{"name": "s", "ports": ports}]},
    }


def endpoint_obj(ns: str, pod: str, labels: dict[str, str], node: str = NODE) -> dict[str, Any]:
    iface = host_veth_name(ns, pod)
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": f"{node}-k8s-{pod}-eth0",
            "namespace": ns,
            "labels": {
                **labels,
                "projectcalico.org/namespace": ns,
                "projectcalico.org/orchestrator": "k8s",
            },
        },
        "spec": {
            "node": node,
            "orchestrator": "k8s",
            "pod": pod,
            "endpoint": "eth0",
            "interfaceName": iface,
            "ipNetworks": [pod_ip(ns, pod) + "/32"],
            "profiles": [f"kns.{ns}"],
        },
    }


def topology(case: dict[str, Any]) -> list[dict[str, Any]]:
    """Namespace, Pod and WorkloadEndpoint objects for a case's starting point."""
    objs: list[dict[str, Any]] = []
    for ns in NAMESPACES:
        labels = dict(
            case.get("namespaces", {}).get(ns) or {"ns": ns, "kubernetes.io/metadata.name": ns}
        )
        objs.append(namespace_obj(ns, labels))
        for pod in PODS:
            objs.append(pod_obj(ns, pod, {"pod": pod}))
            objs.append(endpoint_obj(ns, pod, {"pod": pod}))
    return objs


@dataclass
class Probe:
    port: int
    protocol: str
    expected: dict[tuple[str, str], bool] = field(default_factory=dict)


def probes_of(step: dict[str, Any]) -> Iterator[Probe]:
    pods = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
    for raw in step["probes"]:
        differ = {tuple(pair) for pair in raw["differ"]}
        probe = Probe(raw["port"], raw["protocol"])
        for src in pods:
            for dst in pods:
                if src != dst:
                    probe.expected[(src, dst)] = raw["default"] != ((src, dst) in differ)
        yield probe


def label_change_obj(change: dict[str, Any]) -> dict[str, Any]:
    if change["kind"] == "namespace":
        return namespace_obj(change["target"], dict(change["labels_after"]))
    ns, pod = change["target"].split("/")
    return pod_obj(ns, pod, dict(change["labels_after"]))
