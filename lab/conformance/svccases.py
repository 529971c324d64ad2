"""Reading a Services case file (shared/conformance/services/FORMAT.md) and judging a probe's
round from its raw observations.

The topology is the network-policy one (cases.py); a case may need 3 nodes (`nodes`). Each
probe is kept exactly as the file gives it (`raw`), since the report repeats it unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.conformance.cases import (
    NAMESPACES,
    CaseFileError,
    LabelChange,
    parse_label_change,
    topology_pods,
)
from lab.prober import CONNECTED, NO_ANSWER, REFUSED, Observation
from lab.targets import OUTSIDE, TargetError, split

EXPECTATIONS = (CONNECTED, REFUSED, NO_ANSWER, "not-connected")
PROTOCOLS = ("TCP", "UDP", "SCTP")
CLIENT_SEEN = ("source", "node")


@dataclass(frozen=True)
class SvcProbe:
    raw: dict[str, Any]  # exactly as in the file, placeholders unresolved
    source: str  # "x/a" or "@outside"
    to: str
    port: int
    protocol: str  # "TCP", "UDP", "SCTP"
    tries: int
    expect: str
    served_by: tuple[str, ...] | None = None
    all_of: tuple[str, ...] | None = None
    same_backend: bool = False
    client_seen: str | None = None


@dataclass(frozen=True)
class EndpointChange:
    pod: str
    ready: bool


@dataclass(frozen=True)
class SvcStep:
    delete: list[Any] = field(default_factory=list)
    apply: list[dict[str, Any]] = field(default_factory=list)
    label_changes: list[LabelChange] = field(default_factory=list)
    endpoint_changes: list[EndpointChange] = field(default_factory=list)
    probes: list[SvcProbe] = field(default_factory=list)


@dataclass(frozen=True)
class SvcCase:
    id: str
    name: str
    nodes: int | None
    namespaces: dict[str, dict[str, str]]
    steps: list[SvcStep]


def _names(raw: Any, where: str, what: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise CaseFileError(f"{where}: {what} must be a list of pod names")
    return tuple(raw)


def parse_probe(raw: Mapping[str, Any], where: str) -> SvcProbe:
    try:
        source = str(raw["from"])
        to = str(raw["to"])
        port = int(raw["port"])
        protocol = str(raw.get("protocol") or "TCP").upper()
        tries = int(raw.get("tries", 1))
        expect = str(raw["expect"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CaseFileError(f"{where}: bad probe: {exc!r}") from None
    if source != OUTSIDE and source not in topology_pods():
        raise CaseFileError(f"{where}: from {source!r} is not a topology pod or {OUTSIDE}")
    try:
        split(to)
    except TargetError as exc:
        raise CaseFileError(f"{where}: {exc}") from None
    if protocol not in PROTOCOLS:
        raise CaseFileError(f"{where}: protocol {protocol!r} is not TCP, UDP or SCTP")
    if tries < 1:
        raise CaseFileError(f"{where}: tries must be at least 1")
    if expect not in EXPECTATIONS:
        raise CaseFileError(f"{where}: expect {expect!r} is not one of {', '.join(EXPECTATIONS)}")
    client_seen = raw.get("client_seen")
    if client_seen is not None and client_seen not in CLIENT_SEEN:
        raise CaseFileError(f"{where}: client_seen {client_seen!r} is not source or node")
    return SvcProbe(
        raw=dict(raw),
        source=source,
        to=to,
        port=port,
        protocol=protocol,
        tries=tries,
        expect=expect,
        served_by=_names(raw.get("served_by"), where, "served_by"),
        all_of=_names(raw.get("all_of"), where, "all_of"),
        same_backend=bool(raw.get("same_backend", False)),
        client_seen=client_seen,
    )


def _endpoint_change(raw: Mapping[str, Any], where: str) -> EndpointChange:
    pod = str(raw.get("pod", ""))
    if pod not in topology_pods() or not isinstance(raw.get("ready"), bool):
        raise CaseFileError(f"{where}: endpoint_changes needs a topology pod and ready true|false")
    return EndpointChange(pod, bool(raw["ready"]))


def parse_case(raw: Mapping[str, Any], index: int) -> SvcCase:
    case_id = str(raw.get("id") or f"case-{index}")
    steps = []
    for s, step in enumerate(raw.get("steps") or []):
        where = f"{case_id} step {s}"
        steps.append(
            SvcStep(
                delete=list(step.get("delete") or []),
                apply=[dict(o) for o in step.get("apply") or []],
                label_changes=[
                    parse_label_change(c, where) for c in step.get("label_changes") or []
                ],
                endpoint_changes=[
                    _endpoint_change(c, where) for c in step.get("endpoint_changes") or []
                ],
                probes=[
                    parse_probe(p, f"{where} probe {i}")
                    for i, p in enumerate(step.get("probes") or [])
                ],
            )
        )
    namespaces = {
        str(ns): {str(k): str(v) for k, v in (labels or {}).items()}
        for ns, labels in (raw.get("namespaces") or {}).items()
    }
    for ns in NAMESPACES:
        namespaces.setdefault(ns, {"ns": ns, "kubernetes.io/metadata.name": ns})
    nodes = raw.get("nodes")
    return SvcCase(
        id=case_id,
        name=str(raw.get("name", "")),
        nodes=int(nodes) if nodes is not None else None,
        namespaces=namespaces,
        steps=steps,
    )


def load_cases(path: Path) -> list[SvcCase]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CaseFileError(f"{path}: {exc}") from None
    if not isinstance(data, list):
        raise CaseFileError(f"{path}: expected a list of cases")
    cases = [parse_case(raw, i) for i, raw in enumerate(data)]
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise CaseFileError(f"{path}: case id {case.id!r} appears twice")
        seen.add(case.id)
    return cases


def judge(
    probe: SvcProbe,
    results: Sequence[Observation],
    client_address: str,
    node_addresses: Mapping[str, Sequence[str]],
) -> tuple[bool, str]:
    """Whether one round meets the probe's expectation; the reason when it does not."""
    if len(results) != probe.tries:
        return False, f"{len(results)} results for {probe.tries} tries"
    outcomes = [r.outcome for r in results]
    if probe.expect == "not-connected":
        if CONNECTED in outcomes:
            return False, f"{outcomes.count(CONNECTED)} of {len(outcomes)} tries connected"
    elif any(o != probe.expect for o in outcomes):
        wrong = sorted({o for o in outcomes if o != probe.expect})
        return False, f"expected every try {probe.expect}, saw {', '.join(wrong)}"
    if probe.expect != CONNECTED:
        return True, ""
    served = [str(r.served_by) for r in results]
    if probe.served_by is not None:
        others = sorted(set(served) - set(probe.served_by))
        if others:
            return False, f"served by {', '.join(others)}, not one of {list(probe.served_by)}"
    if probe.all_of is not None:
        missing = sorted(set(probe.all_of) - set(served))
        if missing:
            return False, f"{', '.join(missing)} never answered"
    if probe.same_backend and len(set(served)) != 1:
        return False, f"several backends answered: {sorted(set(served))}"
    seen = [r.client_seen for r in results]
    if probe.client_seen == "source" and any(s != client_address for s in seen):
        return False, f"client seen {sorted({str(s) for s in seen})}, not {client_address}"
    if probe.client_seen == "node":
        every_node = {a for addrs in node_addresses.values() for a in addrs}
        bad = sorted({str(s) for s in seen if s not in every_node or s == client_address})
        if bad:
            return False, f"client seen {bad}: not a node address"
    return True, ""
