"""Reading a case file and computing a probe's expected table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
SERVED_PORTS = (80, 81)
SERVED_PROTOCOLS = ("tcp", "udp", "sctp")


class CaseFileError(ValueError):
    pass


@dataclass(frozen=True)
class Probe:
    port: int
    protocol: str  # as the case spells it: "TCP", "UDP", "SCTP"
    default: bool
    differ: frozenset[tuple[str, str]]

    def expected(self, pods: Sequence[str]) -> dict[tuple[str, str], bool]:
        """Every ordered pair of distinct pods: `default`, flipped for pairs in `differ`."""
        return {
            (src, dst): self.default != ((src, dst) in self.differ)
            for src in pods
            for dst in pods
            if src != dst
        }


@dataclass(frozen=True)
class LabelChange:
    kind: str  # "namespace" | "pod"
    target: str  # "y" | "x/b"
    set: Mapping[str, str | None]
    labels_after: Mapping[str, str] | None


@dataclass(frozen=True)
class Step:
    delete: list[Any] = field(default_factory=list)
    apply: list[dict[str, Any]] = field(default_factory=list)
    label_changes: list[LabelChange] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    namespaces: dict[str, dict[str, str]]
    steps: list[Step]


def topology_pods() -> list[str]:
    return [f"{ns}/{pod}" for ns in NAMESPACES for pod in PODS]


def topology_placement(nodes: Sequence[str]) -> dict[str, str]:
    """Pod key -> node: round-robin over the nodes in topology order (x/a on the first, x/b
    on the second, ...), so with several nodes most pairs cross nodes."""
    if not nodes:
        raise ValueError("no nodes to place the topology on")
    return {key: nodes[i % len(nodes)] for i, key in enumerate(topology_pods())}


def _probe(raw: Mapping[str, Any], where: str) -> Probe:
    try:
        differ = frozenset((str(a), str(b)) for a, b in raw.get("differ") or [])
        return Probe(
            port=int(raw["port"]),
            protocol=str(raw.get("protocol") or "TCP").upper(),
            default=bool(raw["default"]),
            differ=differ,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CaseFileError(f"{where}: bad probe: {exc!r}") from None


def parse_label_change(raw: Mapping[str, Any], where: str) -> LabelChange:
    kind = str(raw.get("kind", ""))
    if kind not in ("namespace", "pod"):
        raise CaseFileError(f"{where}: label_changes kind {kind!r} is not namespace or pod")
    after = raw.get("labels_after")
    return LabelChange(
        kind=kind,
        target=str(raw.get("target", "")),
        set=dict(raw.get("set") or {}),
        labels_after=dict(after) if after is not None else None,
    )


def parse_case(raw: Mapping[str, Any], index: int) -> Case:
    case_id = str(raw.get("id") or f"case-{index}")
    steps = []
    for s, step in enumerate(raw.get("steps") or []):
        where = f"{case_id} step {s}"
        steps.append(
            Step(
                delete=list(step.get("delete") or []),
                apply=[dict(o) for o in step.get("apply") or []],
                label_changes=[
                    parse_label_change(c, where) for c in step.get("label_changes") or []
                ],
                probes=[_probe(p, where) for p in step.get("probes") or []],
            )
        )
    namespaces = {
        str(ns): {str(k): str(v) for k, v in (labels or {}).items()}
        for ns, labels in (raw.get("namespaces") or {}).items()
    }
    for ns in NAMESPACES:
        namespaces.setdefault(ns, {"ns": ns, "kubernetes.io/metadata.name": ns})
    return Case(id=case_id, name=str(raw.get("name", "")), namespaces=namespaces, steps=steps)


def load_cases(path: Path) -> list[Case]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CaseFileError(f"{path}: {exc}") from None
    if isinstance(data, Mapping):
        data = data.get("cases", [])
    if not isinstance(data, list):
        raise CaseFileError(f"{path}: expected a list of cases")
    cases = [parse_case(raw, i) for i, raw in enumerate(data)]
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise CaseFileError(f"{path}: case id {case.id!r} appears twice")
        seen.add(case.id)
    return cases
