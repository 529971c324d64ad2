"""BGP convergence: the project's nodes next to bare BIRDs doing the same on the same machine.

    sudo .venv/bin/python benchmarks/bgp_convergence.py [--part a|b|c|all] [--claims 100]
        [--prefixes 10000] [--runs 5] [--peers 1000] [--blocks 10000] [--receivers 3]

(a) A block newly claimed on node-2 (one AutoAssign through node-2's calico-ipamd into a
    dedicated pool, so every claim takes a fresh block) -> its route in node-1's and node-3's
    kernels; the clock starts when AutoAssign returns (the claim is committed) and stops at the
    netlink event that completes it on both nodes. Then the address is released (the empty
    block goes, node-2 keeps an anchor block) and the withdrawal is timed the same way.
    Reference: the ToR (lab/tor.py, BIRD) announcing one prefix by `birdc configure` -> in
    every bare receiver's kernel, and its withdrawal: what BIRD -> BIRD -> kernel costs.
(b) 10,000 /32s announced by the ToR (lab/tor.py, BIRD) -> all in node-1's kernel, and their
    withdrawal; the lab's ToR peers with N nodes (calico-bgpd's BIRD), the reference ToR with N
    bare BIRDs. Runs alternate between the two sides.
(c) calico-bgpd's render + check + reload with --peers BGPPeers and --blocks blocks (affine to
    its node) in the datastore, its RSS, and BIRD's own `bird -p` + `birdc configure` of the
    same file; plus, always, BIRD alone on a generated file of that size.

The project halves need calico-bgpd and `calico-lab up --nodes N --bgp mesh --tor bird`; when
they are missing the reference halves still run and the reason is printed. Everything made
(lab, namespaces, processes) is removed at the end, also on failure, Ctrl-C or SIGTERM.
Exit status: 0 all requested parts ran, 3 a project half could not run, 1 cleanup left something.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import bgp_scale  # noqa: E402
from benchmarks.bgp_topology import LabRun, Reference, bgpd_available  # noqa: E402
from benchmarks.route_watch import RouteWatcher, RouteWatchError  # noqa: E402
from lab import tor  # noqa: E402

CLAIM_POOL = ("bgp-bench", "10.70.0.0/16")
REFERENCE_CLAIM_PREFIX = "10.71.0.0/26"  # a block-sized prefix for the reference
ANNOUNCE_BASE = ipaddress.IPv4Address("10.128.0.0")
WAIT_ONE = 10.0  # seconds a single route may take before it counts as lost
WAIT_BULK = 120.0


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def ratio(project: float, reference: float) -> str:
    return f"{project / reference:.2f}x" if reference > 0 else "-"


def arrival(watchers: Sequence[RouteWatcher], prefixes: Sequence[str], present: bool,
            since: float, timeout: float) -> float | None:  # fmt: skip
    """Seconds from `since` until `prefixes` are present (absent) in every watcher's kernel;
    None when that did not happen within `timeout`."""
    try:
        return max(w.wait(prefixes, present, timeout) for w in watchers) - since
    except RouteWatchError as exc:
        print(f"  lost: {exc}", file=sys.stderr)
        return None


class Figures:
    """Named lists of seconds; a lost event is counted and recorded as the timeout."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.lost: dict[str, int] = {}

    def add(self, name: str, value: float | None, timeout: float) -> None:
        self.values.setdefault(name, [])
        self.lost.setdefault(name, 0)
        if value is None:
            self.lost[name] += 1
            value = timeout
        self.values[name].append(value)

    def p(self, name: str, q: float) -> float:
        return pct(self.values[name], q)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])


# --- (a) ----------------------------------------------------------------------------------------


def reference_single_prefix(ref: Reference, count: int) -> Figures:
    figures = Figures()
    watchers = [ref.watcher(i) for i in range(1, ref.receivers + 1)]
    for _ in range(count):
        start = time.perf_counter()
        tor.announce("bird", ref.tor_state, [REFERENCE_CLAIM_PREFIX])
        figures.add("announce", arrival(watchers, [REFERENCE_CLAIM_PREFIX], True, start,
                                        WAIT_ONE), WAIT_ONE)  # fmt: skip
        start = time.perf_counter()
        tor.withdraw("bird", ref.tor_state, [REFERENCE_CLAIM_PREFIX])
        figures.add("withdraw", arrival(watchers, [REFERENCE_CLAIM_PREFIX], False, start,
                                        WAIT_ONE), WAIT_ONE)  # fmt: skip
    ref.close_watchers()
    return figures


async def _create_claim_pool(store: dict[str, object]) -> None:
    from lab import objects

    async with objects.resource_client(store) as client:
        await client.apply_all([objects.ippool(*CLAIM_POOL)], "apply")


def _auto_assign(ipam: Any, request: Any, wait_for_pool: bool, timeout: float = 30.0) -> Any:
    """AutoAssign; with `wait_for_pool`, retried until calico-ipamd has seen the pool just
    written (it answers INVALID_ARGUMENT for a pool it does not know yet)."""
    import grpc

    deadline = time.monotonic() + timeout
    while True:
        try:
            return ipam.AutoAssign(request, timeout=30)
        except grpc.RpcError as exc:
            retry = wait_for_pool and exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def project_block_claims(lab: LabRun, count: int) -> Figures:
    import grpc

    from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc

    node2 = lab.node("node-2")
    watchers = [lab.watcher("node-1"), lab.watcher("node-3")]
    figures = Figures()
    with grpc.insecure_channel(f"unix:{node2['sockets']['calico-ipamd']}") as channel:
        ipam = ipam_pb2_grpc.IpamStub(channel)
        # node-2 keeps one block of the lab's own pool, so each bench block is deleted (and
        # its route withdrawn) as soon as its one address is released.
        ipam.AutoAssign(ipam_pb2.AutoAssignRequest(
            num_ipv4=1, handle_id="bgp-bench-anchor",
            attributes={"node": "node-2"}), timeout=30)  # fmt: skip
        # Only now the bench pool exists, so the anchor came from the lab's own pool.
        asyncio.run(_create_claim_pool(lab.state()["datastore"]))
        try:
            for i in range(-1, count):  # claim -1 warms up every path, unmeasured
                handle = f"bgp-bench-{i}"
                request = ipam_pb2.AutoAssignRequest(
                    num_ipv4=1, handle_id=handle, ipv4_pools=[CLAIM_POOL[0]],
                    attributes={"node": "node-2"})  # fmt: skip
                called = time.perf_counter()
                reply = _auto_assign(ipam, request, wait_for_pool=i < 0)
                claimed = time.perf_counter()
                block = str(ipaddress.ip_network(reply.ipv4[0], strict=False))
                appeared = arrival(watchers, [block], True, claimed, WAIT_ONE)
                ipam.ReleaseByHandle(ipam_pb2.ReleaseByHandleRequest(handle_id=handle),
                                     timeout=30)  # fmt: skip
                released = time.perf_counter()
                gone = arrival(watchers, [block], False, released, WAIT_ONE)
                if i >= 0:
                    figures.add("rpc", claimed - called, WAIT_ONE)
                    figures.add("claim", appeared, WAIT_ONE)
                    figures.add("release", gone, WAIT_ONE)
        finally:
            ipam.ReleaseByHandle(
                ipam_pb2.ReleaseByHandleRequest(handle_id="bgp-bench-anchor"), timeout=30
            )
    lab.close_watchers()
    return figures


def report_a(reference: Figures, project: Figures | None, why_not: str, claims: int) -> None:
    print(f"\n(a) block claim -> route on the other nodes; {claims} claims, ms\n")
    print("| figure | p50 | p99 | max | lost |")
    print("|---|---:|---:|---:|---:|")
    rows: list[tuple[str, Figures, str]] = []
    if project is not None:
        rows += [
            ("claim on node-2 -> route in node-1's and node-3's kernels", project, "claim"),
            ("release (block deleted) -> route gone from both", project, "release"),
            ("(AutoAssign RPC itself, before the clock starts)", project, "rpc"),
        ]
    rows += [
        ("reference: ToR configure, 1 prefix -> every bare BIRD's kernel", reference, "announce"),
        ("reference: withdrawal of that prefix", reference, "withdraw"),
    ]
    for label, figures, name in rows:
        values = figures.values[name]
        print(
            f"| {label} | {ms(pct(values, 50))} | {ms(pct(values, 99))} | {ms(max(values))} |"
            f" {figures.lost[name]} |"
        )
    if project is None:
        print(f"\nproject half not run: {why_not}")
        return
    p99 = project.p("claim", 99)
    verdict = "met" if p99 <= 1.0 and not project.lost["claim"] else "NOT met"
    print(
        f"\ntarget p99 <= 1000 ms: {verdict} (p99 {ms(p99)} ms; p50 ratio to the reference "
        f"{ratio(project.p('claim', 50), reference.p('announce', 50))})"
    )


# --- (b) ----------------------------------------------------------------------------------------


def bulk_cycle(tor_state: Path, watcher: RouteWatcher, prefixes: list[str], figures: Figures,
               side: str) -> None:  # fmt: skip
    start = time.perf_counter()
    tor.announce("bird", tor_state, prefixes)
    figures.add(f"{side} announce", arrival([watcher], prefixes, True, start, WAIT_BULK),
                WAIT_BULK)  # fmt: skip
    start = time.perf_counter()
    tor.withdraw("bird", tor_state, prefixes)
    figures.add(f"{side} withdraw", arrival([watcher], prefixes, False, start, WAIT_BULK),
                WAIT_BULK)  # fmt: skip


def run_b(ref: Reference, lab: LabRun | None, count: int, runs: int) -> Figures:
    prefixes = [f"{ANNOUNCE_BASE + i}/32" for i in range(count)]
    figures = Figures()
    sides: list[tuple[str, Path, Callable[[], RouteWatcher]]] = [
        ("reference", ref.tor_state, lambda: ref.watcher(1))
    ]
    if lab is not None:
        sides.append(("project", lab.state_dir, lambda: lab.watcher("node-1")))
    for run in range(runs):
        # Alternate which side goes first, so drift in machine load hits both alike.
        for side, state, watcher in sides if run % 2 == 0 else sides[::-1]:
            bulk_cycle(state, watcher(), prefixes, figures, side)
    ref.close_watchers()
    if lab is not None:
        lab.close_watchers()
    return figures


def report_b(figures: Figures, why_not: str, count: int, runs: int) -> None:
    print(f"\n(b) {count:,} prefixes from the ToR -> all in node-1's kernel; {runs} runs, ms\n")
    print("| figure | project median | reference median | ratio | project max | ref max |")
    print("|---|---:|---:|---:|---:|---:|")
    for what in ("announce", "withdraw"):
        ref_values = figures.values[f"reference {what}"]
        proj_values = figures.values.get(f"project {what}")
        ref_med = statistics.median(ref_values)
        if proj_values:
            proj_med = statistics.median(proj_values)
            print(
                f"| {what} | {ms(proj_med)} | {ms(ref_med)} | {ratio(proj_med, ref_med)} |"
                f" {ms(max(proj_values))} | {ms(max(ref_values))} |"
            )
        else:
            print(f"| {what} | - | {ms(ref_med)} | - | - | {ms(max(ref_values))} |")
    lost = {k: v for k, v in figures.lost.items() if v}
    if lost:
        print(f"\nlost (timed out after {WAIT_BULK:.0f} s): {lost}")
    if "project announce" not in figures.values:
        print(f"\nproject half not run: {why_not}")
        return
    worst = max(
        figures.median(f"project {w}") / figures.median(f"reference {w}")
        for w in ("announce", "withdraw")
    )
    verdict = "met" if worst <= 1.5 else "NOT met"
    print(f"\ntarget <= 1.5x BIRD->BIRD: {verdict} (worst ratio {worst:.2f}x)")


# --- (c) ----------------------------------------------------------------------------------------


def report_c(alone: bgp_scale.BirdFigures, project: bgp_scale.BgpdFigures | None, why_not: str,
             peers: int, blocks: int, runs: int) -> None:  # fmt: skip
    print(f"\n(c) config at scale: {peers:,} peers, {blocks:,} blocks; median of {runs}, ms\n")
    print("| figure | ms | note |")
    print("|---|---:|---|")
    size = f"{alone.config_bytes / 1e6:.1f} MB file"
    print(f"| BIRD alone: `bird -p` of a generated file | {ms(statistics.median(alone.check_s))}"
          f" | {size} |")  # fmt: skip
    print(
        f"| BIRD alone: `birdc configure` (one route changed) |"
        f" {ms(statistics.median(alone.configure_s))} | BIRD RSS {alone.rss / 1e6:.1f} MB |"
    )
    if project is None or project.bird is None:
        print(f"\nproject half not run: {why_not}")
        return
    apply = statistics.median(project.apply_s)
    same = project.bird.check_plus_configure
    print(f"| calico-bgpd: render + check + reload (its duration_seconds) | {ms(apply)} |"
          f" first apply {ms(project.first_apply_s)} |")  # fmt: skip
    print(
        f"| calico-bgpd: datastore write -> config applied | "
        f"{ms(statistics.median(project.change_to_applied_s))} | includes the syncer |"
    )
    print(
        f"| BIRD on calico-bgpd's files, same change: `bird -p` + `birdc configure` | {ms(same)} |"
        f" {project.bird.config_bytes / 1e6:.1f} MB file |"
    )
    print(f"| calico-bgpd RSS | {project.rss / 1e6:.1f} MB | |")
    verdict = "met" if apply <= 1.0 and apply <= 2 * same else "NOT met"
    print(f"\ntarget <= 1 s and <= 2x BIRD's own: {verdict} ({ratio(apply, same)})")


# --- main ---------------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"signal {signum}: cleaning up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    parser.add_argument("--claims", type=int, default=100, help="(a) block claims")
    parser.add_argument("--prefixes", type=int, default=10_000, help="(b) prefixes announced")
    parser.add_argument("--runs", type=int, default=5, help="(b), (c) repetitions per side")
    parser.add_argument("--peers", type=int, default=1000, help="(c) BGP peers")
    parser.add_argument("--blocks", type=int, default=10_000, help="(c) IPAM blocks")
    parser.add_argument("--receivers", type=int, default=3, help="nodes (and bare receivers)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.receivers < 3 and args.part in ("a", "all"):
        parser.error("--receivers: part (a) needs at least 3 nodes")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _terminate)
    parts = "abc" if args.part == "all" else args.part
    why_not = bgpd_available()
    work = Path(tempfile.mkdtemp(prefix="bgpc-", dir="/tmp"))  # short: sockets live here
    ref = Reference(args.receivers, work)
    lab: LabRun | None = None
    problems: list[str] = []
    incomplete = False
    print(f"BGP convergence; calico-bgpd: {why_not or 'available'}", flush=True)
    try:
        if "a" in parts or "b" in parts:
            ref.up()
            if not why_not:
                try:
                    lab = LabRun(work / "lab").up(args.receivers)
                except (RuntimeError, OSError) as exc:
                    why_not = f"calico-lab up failed: {exc}"
                    problems += LabRun(work / "lab").close()
                    lab = None
            if "a" in parts:
                reference_a = reference_single_prefix(ref, args.claims)
                project_a = project_block_claims(lab, args.claims) if lab else None
                report_a(reference_a, project_a, why_not, args.claims)
                incomplete |= project_a is None
            if "b" in parts:
                figures_b = run_b(ref, lab, args.prefixes, args.runs)
                report_b(figures_b, why_not, args.prefixes, args.runs)
                incomplete |= lab is None
        if "c" in parts:
            alone = bgp_scale.bird_alone(args.peers, args.blocks, args.runs, work)
            project_c = None
            if not why_not:
                program = str(Path(sys.executable).parent / "calico-bgpd")
                try:
                    project_c = bgp_scale.calico_bgpd(
                        program, args.peers, args.blocks, args.runs, work
                    )
                except (RuntimeError, ImportError, OSError) as exc:
                    why_not = f"calico-bgpd at scale failed: {exc}"
            report_c(alone, project_c, why_not, args.peers, args.blocks, args.runs)
            incomplete |= project_c is None
    finally:
        if lab is not None:
            problems += lab.close()
        problems += ref.close()
        if not problems:
            shutil.rmtree(work, ignore_errors=True)
        for problem in problems:
            print(f"CLEANUP: {problem}", file=sys.stderr)
    return 1 if problems else (3 if incomplete else 0)


if __name__ == "__main__":
    sys.exit(main())
