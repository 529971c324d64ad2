"""The conformance report: per probe passed/failed/skipped, counted in the summary.

    {"summary": {"passed": N, "failed": N, "skipped": N},
     "cases": [{"id", "status", "probes": [{"step", "port", "protocol", "status",
                                            "wrong": [[from, to, expected, observed]...],
                                            "reason"}]}]}

`step` is the index of the step in the case's `steps` list (from 0). `expected`/`observed` are
booleans (true: the connection succeeded). A case is failed when any probe failed, skipped when
every probe was skipped, passed otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass
class ProbeResult:
    step: int
    port: int
    protocol: str
    status: str
    wrong: list[list[Any]] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "port": self.port,
            "protocol": self.protocol,
            "status": self.status,
            "wrong": self.wrong,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class CaseResult:
    id: str
    probes: list[ProbeResult] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        statuses = {p.status for p in self.probes}
        if self.error or FAILED in statuses:
            return FAILED
        if statuses == {SKIPPED}:
            return SKIPPED
        return PASSED

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "probes": [p.to_json() for p in self.probes],
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            out["error"] = self.error
        return out


def summary(cases: list[CaseResult]) -> dict[str, int]:
    counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    for case in cases:
        for probe in case.probes:
            counts[probe.status] += 1
        if case.error and not case.probes:
            counts[FAILED] += 1  # a case that failed before any probe still counts once
    return counts


def build(cases: list[CaseResult]) -> dict[str, Any]:
    return {"summary": summary(cases), "cases": [c.to_json() for c in cases]}


def write(path: Path, cases: list[CaseResult]) -> dict[str, Any]:
    report = build(cases)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    return report
