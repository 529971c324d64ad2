"""Printing resources: yaml, json, and the ps/wide tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from calicoctl.documents import dump_json, dump_yaml

Column = tuple[str, Callable[[dict[str, Any]], str]]


def _spec(obj: dict[str, Any], *path: str) -> str:
    value: Any = obj.get("spec", {})
    for part in path:
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _name(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _namespace(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("namespace", ""))


def _labels(obj: dict[str, Any]) -> str:
    labels = obj.get("metadata", {}).get("labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


# Columns shown by `-o ps` (first list) and added by `-o wide` (second list), per kind.
_COLUMNS: dict[str, tuple[list[Column], list[Column]]] = {
    "IPPool": (
        [("CIDR", lambda o: _spec(o, "cidr")), ("SELECTOR", lambda o: _spec(o, "nodeSelector"))],
        [
            ("BLOCKSIZE", lambda o: _spec(o, "blockSize")),
            ("NAT", lambda o: _spec(o, "natOutgoing")),
            ("IPIPMODE", lambda o: _spec(o, "ipipMode")),
            ("VXLANMODE", lambda o: _spec(o, "vxlanMode")),
            ("DISABLED", lambda o: _spec(o, "disabled")),
        ],
    ),
    "GlobalNetworkPolicy": (
        [],
        [("ORDER", lambda o: _spec(o, "order")), ("SELECTOR", lambda o: _spec(o, "selector"))],
    ),
    "NetworkPolicy": (
        [],
        [("ORDER", lambda o: _spec(o, "order")), ("SELECTOR", lambda o: _spec(o, "selector"))],
    ),
    "Node": ([], [("ASN", lambda o: _spec(o, "bgp", "asNumber"))]),
    "WorkloadEndpoint": (
        [
            ("WORKLOAD", lambda o: _spec(o, "pod") or _spec(o, "workload")),
            ("NODE", lambda o: _spec(o, "node")),
            ("NETWORKS", lambda o: _spec(o, "ipNetworks")),
            ("INTERFACE", lambda o: _spec(o, "interfaceName")),
        ],
        [("PROFILES", lambda o: _spec(o, "profiles"))],
    ),
    "BGPPeer": (
        [("PEERIP", lambda o: _spec(o, "peerIP")), ("NODE", lambda o: _spec(o, "node"))],
        [("ASN", lambda o: _spec(o, "asNumber"))],
    ),
}


def table(objects: Sequence[dict[str, Any]], kind: str, namespaced: bool, wide: bool) -> str:
    base, extra = _COLUMNS.get(kind, ([], []))
    columns: list[Column] = []
    if namespaced:
        columns.append(("NAMESPACE", _namespace))
    columns.append(("NAME", _name))
    columns.extend(base)
    if wide:
        columns.extend(extra)
        columns.append(("LABELS", _labels))
    rows = [[header for header, _ in columns]]
    rows.extend([getter(obj) for _, getter in columns] for obj in objects)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def as_list(objects: Sequence[dict[str, Any]], kind: str | None) -> dict[str, Any]:
    """Several objects as one List document: `<Kind>List` when they share a kind."""
    kinds = {o.get("kind") for o in objects}
    api_versions = {o.get("apiVersion") for o in objects}
    same_kind = kind or (kinds.pop() if len(kinds) == 1 else None)
    return {
        "apiVersion": api_versions.pop() if len(api_versions) == 1 else "v1",
        "kind": f"{same_kind}List" if same_kind else "List",
        "items": list(objects),
        "metadata": {},
    }


def render(document: object, fmt: str) -> str:
    if fmt == "json":
        return dump_json(document)
    return dump_yaml(document).rstrip("\n")
