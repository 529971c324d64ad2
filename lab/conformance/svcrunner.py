"""Executing Services cases on a running lab (shared/conformance/services/FORMAT.md).

Per case: skipped whole when it needs more nodes than the lab has; else the shared topology
(topology.py), then per step: delete, apply (Services through lab/services.py, which allocates
and runs the EndpointSlice controller; placeholders substituted), label changes, endpoint
(readiness) changes, and the probes in order. A probe runs rounds of `tries` tries until a
round meets its expectation or POLL_DEADLINE has passed since its first round began; the
last round is reported in full. Within a round the first try runs alone and the rest
concurrently, each a new socket (a new flow from a new ephemeral port): the first try sets up
any session-affinity entry before the others arrive, as clients in sequence would. SCTP probes
are skipped with the kernel's reason when it has no SCTP sockets.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lab import endpointslices, network, services, targets
from lab.conformance.placeholders import is_placeholder, substitute
from lab.conformance.svccases import SvcCase, SvcProbe, SvcStep, judge
from lab.conformance.svcreport import CaseReport, ProbeReport, StepReport
from lab.conformance.topology import Topology, node_addresses
from lab.lab import Lab
from lab.pods import set_ready
from lab.prober import (
    SCTP_UNSUPPORTED,
    Endpoint,
    Flow,
    Observation,
    ProbeUnsupportedError,
    observe,
    sctp_supported,
)
from lab.store import LabStore

POLL_DEADLINE = 10.0
TRY_TIMEOUT = 1.0
POLL_PAUSE = 0.2

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ServiceCaseRun:
    def __init__(self, lab: Lab, case: SvcCase, deadline: float = POLL_DEADLINE) -> None:
        self.lab = lab
        self.case = case
        self.deadline = deadline
        self.report = CaseReport(case.id)
        self.topology = Topology(lab, case.namespaces)
        self.services: dict[str, dict[str, Any]] = {}  # live Services by "ns/name"

    # ---- addresses ----

    def addresses(self) -> dict[str, str]:
        """What placeholders may name: pods, @outside, nodes (their lab addresses)."""
        out = {key: pod.ip for key, pod in self.lab.state.pods.items()}
        out[targets.OUTSIDE] = str(network.OUTSIDE_CLIENT)
        out.update({node.name: node.address for node in self.lab.state.nodes})
        return out

    def report_addresses(self) -> dict[str, Any]:
        return {
            "pods": {key: pod.ip for key, pod in sorted(self.lab.state.pods.items())},
            "nodes": {node.name: node_addresses(node.netns) for node in self.lab.state.nodes},
            "outside": str(network.OUTSIDE_CLIENT),
        }

    # ---- the case ----

    async def run(self) -> CaseReport:
        needed = self.case.nodes or 1
        if needed > len(self.lab.nodes):
            self.report.skipped = f"needs {needed} nodes (this lab has {len(self.lab.nodes)})"
            return self.report
        started = time.monotonic()
        try:
            await self.topology.setup()
            self.report.addresses = self.report_addresses()
            for index, step in enumerate(self.case.steps):
                step_report = StepReport()
                self.report.steps.append(step_report)
                try:
                    await self.change(step)
                except Exception as exc:
                    self.fail_from(index, f"step {index}: {type(exc).__name__}: {exc}")
                    break
                for probe in step.probes:
                    step_report.probes.append(await self.poll(probe))
            # Tunnel addresses may appear after the pods: the addresses as the case ends.
            self.report.addresses = self.report_addresses()
        except Exception as exc:
            self.report.error = f"{type(exc).__name__}: {exc}"
            self.fail_from(
                len(self.report.steps) - 1 if self.report.steps else 0, self.report.error
            )
        finally:
            self.report.cluster_ips = dict(self.topology.cluster_ips)
            try:
                await self.topology.teardown()
            except Exception as exc:
                self.report.error = self.report.error or f"teardown: {exc}"
            self.report.seconds = time.monotonic() - started
        return self.report

    def fail_from(self, first_step: int, reason: str) -> None:
        """Every probe not yet run, from `first_step` on, is reported failed with `reason`."""
        while len(self.report.steps) < len(self.case.steps):
            self.report.steps.append(StepReport())
        for index in range(max(first_step, 0), len(self.case.steps)):
            done = len(self.report.steps[index].probes)
            for probe in self.case.steps[index].probes[done:]:
                self.report.steps[index].probes.append(ProbeReport(probe.raw, error=reason))

    async def change(self, step: SvcStep) -> None:
        async with LabStore(self.lab.state) as store:
            if step.delete:
                await self.topology.delete(store, step.delete)
            if step.apply:
                objs = [substitute(o, self.addresses()) for o in step.apply]
                await self.topology.apply(store, objs)
            for change in step.label_changes:
                await self.topology.relabel(store, change)
            if step.label_changes:
                await endpointslices.sync(self.lab.state, store)
        for endpoint in step.endpoint_changes:
            await set_ready(self.lab, endpoint.pod, endpoint.ready)
        async with LabStore(self.lab.state) as store:
            self.services = {services.key_of(s): s for s in await services.list_services(store)}

    # ---- probes ----

    def target_ip(self, probe: SvcProbe) -> str:
        kind, rest = targets.split(probe.to)
        if kind == "ip" and is_placeholder(rest):
            return str(substitute(rest, self.addresses(), self.topology.cluster_ips))
        return targets.address(self.lab.state, probe.to, self.services)

    async def one_round(self, source: Endpoint, ip: str, probe: SvcProbe) -> list[Observation]:
        first = await observe([Flow(source, ip)], probe.port, probe.protocol, TRY_TIMEOUT)
        if probe.tries == 1:
            return first
        rest = await observe(
            [Flow(source, ip)] * (probe.tries - 1), probe.port, probe.protocol, TRY_TIMEOUT
        )
        return first + rest

    async def poll(self, probe: SvcProbe) -> ProbeReport:
        report = ProbeReport(probe.raw)
        if probe.protocol == "SCTP" and not sctp_supported():
            report.skipped = SCTP_UNSUPPORTED
            return report
        try:
            source = targets.source(self.lab.state, probe.source)
            ip = self.target_ip(probe)
        except Exception as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            return report
        report.target = f"{ip}:{probe.port}/{probe.protocol}"
        nodes = self.report_addresses()["nodes"] if probe.client_seen == "node" else {}
        started = time.monotonic()
        while True:
            try:
                report.results = await self.one_round(source, ip, probe)
            except ProbeUnsupportedError as exc:
                report.skipped = str(exc)
                return report
            report.rounds += 1
            report.passed, report.reason = judge(probe, report.results, source.ip, nodes)
            if report.passed or time.monotonic() - started >= self.deadline:
                return report
            await asyncio.sleep(POLL_PAUSE)


def probes_per_case(cases: Sequence[SvcCase]) -> dict[str, int]:
    return {c.id: sum(len(s.probes) for s in c.steps) for c in cases}


async def run_cases(
    lab: Lab,
    cases: Sequence[SvcCase],
    progress: Progress = _stderr,
    deadline: float = POLL_DEADLINE,
) -> list[CaseReport]:
    reports = []
    for case in cases:
        report = await ServiceCaseRun(lab, case, deadline).run()
        counts: Mapping[str, int] = {
            status: sum(1 for p in report.probes() if p.status == status)
            for status in ("passed", "failed", "skipped")
        }
        detail = report.skipped or report.error
        progress(
            f"{report.status.upper():7} {case.id}  ({counts['passed']} passed, "
            f"{counts['failed']} failed, {counts['skipped']} skipped; {report.seconds:.1f}s)"
            f"{'  ' + detail if detail else ''}"
        )
        reports.append(report)
    return reports
