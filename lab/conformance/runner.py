"""Executing cases on a running lab: fresh topology per case, steps in order, probes polled.

Per case: the topology (topology.py: namespaces x, y, z with the case's labels and pods a, b,
c in each, spread round-robin over the lab's nodes, so on a multi-node lab most probes cross
nodes over BGP-learned routes); then per step: delete the referenced objects, apply the
step's objects (placeholders substituted), change labels, and poll each probe until the
observed table equals the expected one or POLL_DEADLINE passes. Afterwards every pod is
removed through CNI DEL and every object the case made is deleted; the nodes and their
daemons stay up for the next case. Where the lab runs an API server, Kubernetes kinds
(namespaces, pods, NetworkPolicy, label changes) go through it and Calico kinds into the
datastore, as calicoctl would write them (lab/store.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence

from lab.conformance.cases import (
    Case,
    Probe,
    Step,
    topology_pods,
)
from lab.conformance.placeholders import substitute
from lab.conformance.report import FAILED, PASSED, SKIPPED, CaseResult, ProbeResult
from lab.conformance.topology import Topology
from lab.lab import Lab
from lab.matrix import endpoint_of
from lab.prober import ProbeUnsupportedError, probe_pairs
from lab.store import LabStore

POLL_DEADLINE = 10.0
PROBE_TIMEOUT = 1.0
POLL_PAUSE = 0.2

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class CaseSetupError(RuntimeError):
    pass


class CaseRun:
    def __init__(self, lab: Lab, case: Case, deadline: float = POLL_DEADLINE) -> None:
        self.lab = lab
        self.deadline = deadline
        self.case = case
        self.result = CaseResult(case.id)
        self.topology = Topology(lab, case.namespaces)

    async def run(self) -> CaseResult:
        started = time.monotonic()
        try:
            try:
                await self.setup()
            except Exception as exc:
                raise CaseSetupError(f"topology: {type(exc).__name__}: {exc}") from exc
            for index, step in enumerate(self.case.steps):
                try:
                    await self.change(step)
                except Exception as exc:
                    self.fail_from(index, f"step {index}: {type(exc).__name__}: {exc}")
                    break
                for probe in step.probes:
                    self.result.probes.append(await self.poll(index, probe))
        except CaseSetupError as exc:
            self.result.error = str(exc)
            self.fail_from(0, self.result.error)
        except Exception as exc:
            self.result.error = f"{type(exc).__name__}: {exc}"
            self.fail_from(0, self.result.error)
        finally:
            try:
                await self.teardown()
            except Exception as exc:
                self.result.error = self.result.error or f"teardown: {exc}"
            self.result.seconds = time.monotonic() - started
        return self.result

    def fail_from(self, first_step: int, reason: str) -> None:
        """Every probe not yet run, from `first_step` on, fails with `reason`."""
        for index, step in enumerate(self.case.steps[first_step:], start=first_step):
            done = sum(1 for p in self.result.probes if p.step == index)
            for probe in step.probes[done:]:
                self.result.probes.append(
                    ProbeResult(index, probe.port, probe.protocol, FAILED, [], reason)
                )

    # ---- topology and a step's changes (topology.py) ----

    async def setup(self) -> None:
        await self.topology.setup()

    async def teardown(self) -> None:
        await self.topology.teardown()

    async def change(self, step: Step) -> None:
        pod_ips = {key: pod.ip for key, pod in self.lab.state.pods.items()}
        async with LabStore(self.lab.state) as store:
            if step.delete:
                await self.topology.delete(store, step.delete)
            if step.apply:
                await self.topology.apply(store, [substitute(o, pod_ips) for o in step.apply])
            for change in step.label_changes:
                await self.topology.relabel(store, change)

    # ---- probes ----

    async def poll(self, step: int, probe: Probe) -> ProbeResult:
        keys = topology_pods()
        expected = probe.expected(keys)
        endpoints = [endpoint_of(self.lab.state.pods[k]) for k in keys]
        pairs = [(a, b) for a in endpoints for b in endpoints if a.key != b.key]
        started = time.monotonic()
        deadline = started + self.deadline
        rounds = 0
        while True:
            rounds += 1
            try:
                observed = await probe_pairs(pairs, probe.port, probe.protocol, PROBE_TIMEOUT)
            except ProbeUnsupportedError as exc:
                return ProbeResult(step, probe.port, probe.protocol, SKIPPED, [], str(exc))
            wrong = [
                [src, dst, want, observed[(src, dst)]]
                for (src, dst), want in expected.items()
                if observed[(src, dst)] != want
            ]
            elapsed = time.monotonic() - started
            if not wrong:
                return ProbeResult(step, probe.port, probe.protocol, PASSED, [], "", elapsed)
            if time.monotonic() >= deadline:
                reason = (
                    f"{len(wrong)} of {len(expected)} pairs differ from the expected table "
                    f"after {elapsed:.1f}s ({rounds} rounds)"
                )
                return ProbeResult(step, probe.port, probe.protocol, FAILED, wrong, reason, elapsed)
            await asyncio.sleep(POLL_PAUSE)


async def run_cases(
    lab: Lab,
    cases: Sequence[Case],
    progress: Progress = _stderr,
    deadline: float = POLL_DEADLINE,
) -> list[CaseResult]:
    results = []
    for case in cases:
        result = await CaseRun(lab, case, deadline).run()
        counts = {s: 0 for s in (PASSED, FAILED, SKIPPED)}
        for probe in result.probes:
            counts[probe.status] += 1
        progress(
            f"{result.status.upper():7} {case.id}  "
            f"({counts[PASSED]} passed, {counts[FAILED]} failed, {counts[SKIPPED]} skipped; "
            f"{result.seconds:.1f}s){'  ' + result.error if result.error else ''}"
        )
        results.append(result)
    return results
