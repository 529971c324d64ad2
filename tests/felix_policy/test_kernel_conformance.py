"""Conformance cases on the real kernel, every dataplane: policies applied, real probes."""

from __future__ import annotations

from typing import Any

import pytest

from libcalico.syncer.api import Delete, SyncerUpdate
from tests.felix_policy.cases import (
    label_change_obj,
    load_cases,
    probes_of,
    ref_key,
    resolve,
)
from tests.felix_policy.conftest import Driver
from tests.felix_policy.netlab import NetLab

# Representative cases (every case runs on the model in test_calc_conformance.py, and all
# of them end to end through `calico-lab conformance`).
KERNEL_CASES = {
    "tcp-03-should-enforce-policy-to-allow-traffic-from-pods-within-serv",
    "tcp-11-should-enforce-policy-based-on-multiple-podselectors-and-nam",
    "tcp-17-should-allow-ingress-access-on-one-named-port",
    "tcp-21-should-allow-ingress-access-from-updated-namespace",
    "tcp-33-should-stop-enforcing-policies-after-they-are-deleted",
    "tcp-35-should-enforce-except-clause-while-egress-access-to-server-i",
    "udp-03-should-enforce-policy-to-allow-traffic-only-from-a-pod-in-a",
    "calico-10-pass-in-egress-rules",
    "calico-13-selector-expressions-and-pod-relabel",
    "calico-25-not-protocol-and-numeric-protocol",
    "calico-34-namespaced-network-set",
}
ALL = load_cases("cases-public.json") + load_cases("calico-cases-public.json")
CASES = [c for c in ALL if c["id"] in KERNEL_CASES]


async def run_case(driver: Driver, lab: NetLab, case: dict[str, Any]) -> None:
    for number, step in enumerate(case["steps"]):
        batch: list[SyncerUpdate] = [Delete(ref_key(r)) for r in step.get("delete", [])]
        batch += [driver.put(resolve(o)) for o in step.get("apply", [])]
        batch += [driver.put(label_change_obj(c)) for c in step.get("label_changes", [])]
        await driver.send(batch)
        for probe in probes_of(step):
            if probe.protocol == "SCTP":
                print(f"SKIP probe SCTP/{probe.port}: no SCTP in this kernel")
                continue
            got = lab.matrix(probe.protocol, probe.port)
            wrong = sorted(k for k, v in probe.expected.items() if got[k] != v)
            assert not wrong, f"step {number} {probe.protocol}/{probe.port}: wrong {wrong}"


@pytest.mark.netns
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_case_on_kernel(any_driver: Driver, netlab: NetLab, case: dict[str, Any]) -> None:
    await run_case(any_driver, netlab, case)
