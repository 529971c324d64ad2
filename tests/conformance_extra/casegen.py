"""Building blocks for the extra conformance case files (FORMAT.md format).

Expected tables are written the way upstream's ``Reachability`` helpers write them
(``ExpectPeer`` / ``ExpectAllIngress`` / ``ExpectAllEgress``), reasoned from Kubernetes and
Calico semantics, never computed by the code under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

NAMESPACES = ("x", "y", "z")
PODS_IN_NS = ("a", "b", "c")
PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in PODS_IN_NS)
PAIRS = tuple((s, d) for s in PODS for d in PODS if s != d)

Spec = str | Iterable[str]  # "*", "x" (namespace), "x/a" (pod), or a list of those


def pods(spec: Spec) -> set[str]:
    if isinstance(spec, str):
        spec = [spec]
    out: set[str] = set()
    for item in spec:
        if item == "*":
            out |= set(PODS)
        elif "/" in item:
            out.add(item)
        else:
            out |= {p for p in PODS if p.startswith(item + "/")}
    return out


class Table:
    """Reachability of the 72 ordered pairs (self-pairs are never asserted)."""

    def __init__(self, default: bool = True) -> None:
        self.value = dict.fromkeys(PAIRS, default)

    def set(self, src: Spec, dst: Spec, allowed: bool) -> Table:
        for s in pods(src):
            for d in pods(dst):
                if s != d:
                    self.value[(s, d)] = allowed
        return self

    def where(self, pred: Callable[[str, str], bool], allowed: bool) -> Table:
        for pair in PAIRS:
            if pred(*pair):
                self.value[pair] = allowed
        return self

    def probe(self, port: int, protocol: str = "TCP") -> dict[str, Any]:
        allowed = sum(self.value.values())
        default = allowed * 2 >= len(PAIRS)
        differ = [list(p) for p in PAIRS if self.value[p] != default]
        return {"port": port, "protocol": protocol, "default": default, "differ": differ}


def ns_labels(overrides: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
    out = {ns: {"ns": ns, "kubernetes.io/metadata.name": ns} for ns in NAMESPACES}
    for ns, labels in (overrides or {}).items():
        out[ns] = dict(labels)
    return out


def step(
    probes: list[dict[str, Any]],
    apply: list[dict[str, Any]] | None = None,
    delete: list[Any] | None = None,
    label_changes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "delete": delete or [],
        "apply": apply or [],
        "label_changes": label_changes or [],
        "probes": probes,
    }


def case(
    case_id: str,
    name: str,
    context: str,
    source: str,
    steps: list[dict[str, Any]],
    namespaces: dict[str, dict[str, str]] | None = None,
    notes: str = "",
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": case_id,
        "name": name,
        "context": context,
        "source": source,
        "namespaces": ns_labels(namespaces),
        "ignore_loopback": True,
        "steps": steps,
    }
    if notes:
        out["notes"] = notes
    return out


def pod_label(target: str, labels_after: dict[str, str], set_: dict[str, str]) -> dict[str, Any]:
    return {"kind": "pod", "target": target, "set": set_, "labels_after": labels_after}


def ns_label(target: str, labels_after: dict[str, str], set_: dict[str, str]) -> dict[str, Any]:
    return {"kind": "namespace", "target": target, "set": set_, "labels_after": labels_after}


# ---- Kubernetes NetworkPolicy ----


def knp(
    name: str,
    namespace: str,
    pod_selector: dict[str, Any] | None = None,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
    types: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pod_selector or {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def ml(**labels: str) -> dict[str, Any]:
    return {"matchLabels": dict(labels)}


def mexpr(key: str, op: str, values: list[str] | None = None) -> dict[str, Any]:
    expr: dict[str, Any] = {"key": key, "operator": op}
    if values is not None:
        expr["values"] = values
    return {"matchExpressions": [expr]}


def ns_is(name: str) -> dict[str, Any]:
    return ml(**{"kubernetes.io/metadata.name": name})


# ---- Calico ----


def gnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def cnp(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def netset(name: str, namespace: str | None, labels: dict[str, str], nets: list[str]) -> Any:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkSet" if namespace else "GlobalNetworkSet",
        "metadata": meta,
        "spec": {"nets": nets},
    }


def ref(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace")}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta}
