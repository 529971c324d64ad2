"""The extra case files, evaluated on the calc graph's intended state (no kernel).

Same method as tests/felix_policy/test_calc_conformance.py; the topology also carries what
the lab's endpoints carry (service account ``default`` and its ``ksa.`` profile).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libcalico.syncer.api import Delete, InSync, SyncerUpdate
from tests.felix_policy.cases import (
    label_change_obj,
    probes_of,
    ref_key,
    resolve,
    topology,
)
from tests.felix_policy.test_calc_conformance import PROTOCOLS, Feeder, _verdicts

HERE = Path(__file__).parent
FILES = ("cases-k8s-extra.json", "cases-calico-extra.json")


def load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((HERE / name).read_text())
    return cases


CASES = [c for name in FILES for c in load(name)]


def with_service_account(obj: dict[str, Any]) -> dict[str, Any]:
    """Pods and endpoints as Kubernetes + the CNI plugin make them: account 'default'."""
    if obj["kind"] == "Pod":
        obj["spec"]["serviceAccountName"] = "default"
    elif obj["kind"] == "WorkloadEndpoint":
        ns = obj["metadata"]["namespace"]
        obj["spec"]["serviceAccountName"] = "default"
        obj["spec"]["profiles"] = [f"kns.{ns}", f"ksa.{ns}.default"]
        obj["metadata"]["labels"]["projectcalico.org/serviceaccount"] = "default"
    return obj


def test_ids_unique_and_probes_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    for c in CASES:
        for s in c["steps"]:
            assert set(s) == {"delete", "apply", "label_changes", "probes"}
            for p in s["probes"]:
                assert p["protocol"] in ("TCP", "UDP", "SCTP") and p["port"] in (80, 81)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_extra_case_on_model(case: dict[str, Any]) -> None:
    feeder = Feeder()
    feeder.apply([*(feeder.put(with_service_account(o)) for o in topology(case)), InSync()])
    for number, step in enumerate(case["steps"]):
        updates: list[SyncerUpdate] = [Delete(ref_key(r)) for r in step["delete"]]
        updates += [feeder.put(resolve(o)) for o in step["apply"]]
        updates += [
            feeder.put(with_service_account(label_change_obj(c))) for c in step["label_changes"]
        ]
        feeder.apply(updates)
        for probe in probes_of(step):
            if probe.protocol not in PROTOCOLS:
                continue  # SCTP: not probed (policies still compiled)
            got = _verdicts(feeder.graph, probe.port, probe.protocol, list(probe.expected))
            wrong = sorted(k for k, v in probe.expected.items() if got[k] != v)
            assert not wrong, f"step {number} {probe.protocol}/{probe.port}: wrong {wrong}"
