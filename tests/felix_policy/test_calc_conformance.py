"""Every public conformance case, evaluated on the calc graph's intended state (no kernel).

Fast and exhaustive: each probe's 72 pairs are checked with the reference evaluator, so a
semantic bug shows up here before any packet is sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from libcalico.syncer.api import Delete, InSync, SyncerUpdate, Update
from services.felix.calc import CalcGraph
from services.felix.endpoints.naming import host_veth_name
from tests.felix_policy.cases import (
    NODE,
    label_change_obj,
    load_cases,
    object_key,
    pod_ip,
    probes_of,
    ref_key,
    resolve,
    topology,
)
from tests.felix_policy.model_eval import Packet, connection_allowed

PROTOCOLS = {"TCP": 6, "UDP": 17}
CASES = load_cases("cases-public.json") + load_cases("calico-cases-public.json")


class Feeder:
    def __init__(self) -> None:
        self.graph = CalcGraph(NODE)
        self.revision = 1

    def put(self, obj: dict[str, Any]) -> SyncerUpdate:
        self.revision += 1
        return Update(object_key(obj), json.dumps(obj).encode(), self.revision)

    def apply(self, updates: list[SyncerUpdate]) -> None:
        self.graph.apply(updates)
        self.graph.flush()


def _verdicts(
    graph: CalcGraph, port: int, protocol: str, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], bool]:
    state = graph.state
    out = {}
    for src, dst in pairs:
        sns, spod = src.split("/")
        dns, dpod = dst.split("/")
        pkt = Packet(pod_ip(sns, spod), pod_ip(dns, dpod), PROTOCOLS[protocol], 40000, port)
        out[(src, dst)] = connection_allowed(
            state,
            state.endpoints.get(host_veth_name(sns, spod)),
            state.endpoints.get(host_veth_name(dns, dpod)),
            pkt,
        )
    return out


@pytest.mark.skipif(not CASES, reason="conformance case files not found")
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_on_model(case: dict[str, Any]) -> None:
    feeder = Feeder()
    feeder.apply([*(feeder.put(o) for o in topology(case)), InSync()])
    for number, step in enumerate(case["steps"]):
        updates: list[SyncerUpdate] = [Delete(ref_key(r)) for r in step.get("delete", [])]
        updates += [feeder.put(resolve(o)) for o in step.get("apply", [])]
        updates += [feeder.put(label_change_obj(c)) for c in step.get("label_changes", [])]
        feeder.apply(updates)
        for probe in probes_of(step):
            if probe.protocol not in PROTOCOLS:
                continue  # SCTP: no kernel support to probe it (policies still compiled)
            got = _verdicts(feeder.graph, probe.port, probe.protocol, list(probe.expected))
            wrong = sorted(k for k, v in probe.expected.items() if got[k] != v)
            assert not wrong, f"step {number} {probe.protocol}/{probe.port}: wrong {wrong}"
