"""The Services conformance report, `services-report/1` (shared/conformance/services/FORMAT.md):
raw observations per try, per probe, in the case file's order.

    {"format": "services-report/1", "cases_file", "dataplane", "datastore", "nodes",
     "single_node_only", "summary": {"passed", "failed", "skipped"},
     "cases": [{"id", "status", "addresses": {"pods", "nodes", "outside"}, "cluster_ips",
                "steps": [{"probes": [{"probe", "target", "observed": {"results", "rounds",
                                                                        "pass"}, "reason"},
                                      {"probe", "skipped"}]}]}]}

A checker judges from `results` and `addresses` alone; `pass`, `status` and `summary` are the
runner's own reading, for people.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.prober import Observation

FORMAT = "services-report/1"
PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass
class ProbeReport:
    probe: dict[str, Any]  # exactly as in the case file
    target: str = ""
    results: list[Observation] = field(default_factory=list)
    rounds: int = 0
    passed: bool = False
    reason: str = ""  # why the last round did not meet the expectation
    skipped: str = ""  # only SCTP
    error: str = ""  # the probe could not run (an unknown Service, a failed step)

    @property
    def status(self) -> str:
        if self.skipped:
            return SKIPPED
        return PASSED if self.passed and not self.error else FAILED

    def to_json(self) -> dict[str, Any]:
        if self.skipped:
            return {"probe": self.probe, "skipped": self.skipped}
        out: dict[str, Any] = {"probe": self.probe}
        if self.target:
            out["target"] = self.target
        out["observed"] = {
            "results": [r.to_json() for r in self.results],
            "rounds": self.rounds,
            "pass": self.passed and not self.error,
        }
        if self.error:
            out["error"] = self.error
        elif self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class StepReport:
    probes: list[ProbeReport] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"probes": [p.to_json() for p in self.probes]}


@dataclass
class CaseReport:
    id: str
    steps: list[StepReport] = field(default_factory=list)
    addresses: dict[str, Any] = field(default_factory=dict)
    cluster_ips: dict[str, str] = field(default_factory=dict)
    skipped: str = ""  # the whole case (it needs more nodes than the lab has)
    error: str = ""
    seconds: float = 0.0

    def probes(self) -> list[ProbeReport]:
        return [p for s in self.steps for p in s.probes]

    @property
    def status(self) -> str:
        statuses = {p.status for p in self.probes()}
        if self.skipped:
            return SKIPPED
        if self.error or FAILED in statuses:
            return FAILED
        if statuses == {SKIPPED}:
            return SKIPPED
        return PASSED

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.skipped:
            out["skipped"] = self.skipped
            return out
        out["addresses"] = self.addresses
        out["cluster_ips"] = self.cluster_ips
        out["steps"] = [s.to_json() for s in self.steps]
        if self.error:
            out["error"] = self.error
        out["seconds"] = round(self.seconds, 3)
        return out


def summary(cases: list[CaseReport], probes_per_case: dict[str, int]) -> dict[str, int]:
    """Probes passed, failed and skipped; a case skipped whole counts its probes skipped, and
    a case that failed before any probe counts once as failed."""
    counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    for case in cases:
        if case.skipped:
            counts[SKIPPED] += probes_per_case.get(case.id, 0)
            continue
        for probe in case.probes():
            counts[probe.status] += 1
        if case.error and not case.probes():
            counts[FAILED] += 1
    return counts


def build(
    cases: list[CaseReport],
    probes_per_case: dict[str, int],
    cases_file: str,
    dataplane: str,
    datastore: str,
    nodes: int,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "cases_file": cases_file,
        "dataplane": dataplane,
        "datastore": datastore,
        "nodes": nodes,
        # A run on one node declares itself single-node only: cases needing 3 nodes are
        # skipped, not failed.
        "single_node_only": nodes == 1,
        "summary": summary(cases, probes_per_case),
        "cases": [c.to_json() for c in cases],
    }


def failed(report: dict[str, Any]) -> bool:
    """Anything failed: a probe, or a case skipped whole on a lab that is not single-node."""
    if report["summary"][FAILED]:
        return True
    return not report["single_node_only"] and any(
        c.get("status") == SKIPPED and c.get("skipped") for c in report["cases"]
    )


def write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
