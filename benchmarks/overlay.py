"""Overlay benchmark (issue 11): pod -> pod throughput plain-routed vs VXLAN, and route
programming for many remote blocks, each beside a reference measured in the same run.

    sudo .venv/bin/python benchmarks/overlay.py [--part a|b|all] [--seconds 10] [--rounds 3]
        [--blocks 1000] [--runs 3]

(a) Single-stream TCP throughput (iperf3, `--seconds` per measurement, first second omitted),
    `--rounds` rounds through four paths in rotating order: veth (two bare namespaces, one
    veth pair), node-to-node (two nodes of the plain-routed lab over the lab bridge), direct
    (pod -> pod across nodes, `calico-lab up --nodes 2 --encap none --bgp mesh`) and vxlan
    (pod -> pod across nodes, `--encap vxlan --bgp none`). Medians and the ratios vxlan/direct
    (target >= 0.80), direct/node-to-node, direct/veth. Offloads of the devices on the way are
    printed after, for reading a shortfall.
(b) calico-felix exec -> all `--blocks` remote blocks routed on vxlan.calico (with their
    neighbours and FDB entries), `--runs` runs in fresh namespaces, against `ip -batch` +
    `bridge -batch` writing the same state.

Everything made (labs, namespaces, processes) is removed at the end, also on failure, Ctrl-C
or SIGTERM. Exit status: 0 all parts ran, 3 a part could not run (the reason is printed), 1
cleanup left something.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import overlay_routes, overlay_throughput  # noqa: E402
from benchmarks.overlay_throughput import Endpoint, PodLab, Throughput, VethPair  # noqa: E402
from tests.tor.bgpkit import random_suffix  # noqa: E402

VXLAN_TARGET = 0.80


def gbit(bits: float) -> str:
    return f"{bits / 1e9:.2f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


# --- (a) ----------------------------------------------------------------------------------------


def run_a(args: argparse.Namespace, work: Path, suffix: str, cleanup: list[str]) -> bool:
    why_not = overlay_throughput.iperf3_missing()
    if why_not:
        print(f"\n(a) not run: {why_not}")
        return False
    veth = VethPair(suffix)
    direct = PodLab(work / f"ovd-{suffix}")
    vxlan = PodLab(work / f"ovx-{suffix}")
    try:
        endpoints: dict[str, Endpoint] = {"veth": veth.up()}
        print("  bringing up the plain-routed lab (BGP mesh) and the VXLAN lab", flush=True)
        direct.up_with("--encap", "none", "--bgp", "mesh")
        vxlan.up_with("--encap", "vxlan", "--bgp", "none")
        endpoints["node-to-node"] = direct.nodes()
        endpoints["direct"] = direct.pods()
        endpoints["vxlan"] = vxlan.pods()
        figures = overlay_throughput.measure(endpoints, args.seconds, args.rounds, work)
        report_a(figures, args)
        print_offloads(direct, vxlan, veth)
    finally:
        cleanup += vxlan.close() + direct.close() + veth.close()
    return True


def report_a(figures: Throughput, args: argparse.Namespace) -> None:
    print(
        f"\n(a) single-stream TCP, iperf3 {args.seconds} s (first second omitted), "
        f"{args.rounds} rounds, Gbit/s\n"
    )
    print("| path | median | min | max | retransmits (median) | client MTU |")
    print("|---|---:|---:|---:|---:|---:|")
    for path, values in figures.bits.items():
        retrans = statistics.median(figures.retransmits[path])
        print(f"| {path} | {gbit(statistics.median(values))} | {gbit(min(values))} |"
              f" {gbit(max(values))} | {retrans:.0f} | {figures.mtu[path]} |")  # fmt: skip
    med = {path: figures.median(path) for path in figures.bits}
    print("\n| ratio of medians | value |")
    print("|---|---:|")
    for a, b in (("vxlan", "direct"), ("vxlan", "node-to-node"), ("direct", "node-to-node"),
                 ("direct", "veth"), ("node-to-node", "veth")):  # fmt: skip
        print(f"| {a} / {b} | {ratio(med[a], med[b])} |")
    # Same-round ratios show how much of the spread is the machine's load, which moves both.
    rounds = zip(figures.bits["vxlan"], figures.bits["direct"], strict=True)
    per_round = [v / d for v, d in rounds]
    print(f"\nvxlan / direct per round: {', '.join(f'{r:.2f}' for r in per_round)}")
    share = med["vxlan"] / med["direct"]
    verdict = "met" if share >= VXLAN_TARGET else "NOT met"
    print(f"target vxlan >= {VXLAN_TARGET:.0%} of direct: {verdict} ({share:.0%})")
    for note in figures.notes:
        print(f"note: {note}")


def print_offloads(direct: PodLab, vxlan: PodLab, veth: VethPair) -> None:
    """Offloads on the way (ethtool -k): what to read first when VXLAN falls short."""
    node = vxlan.node("node-1")["netns"]
    pod = vxlan.pod("x/a")
    devices = [
        ("vxlan lab, pod x/a eth0", pod["netns"], "eth0"),
        ("vxlan lab, node-1 host veth of x/a", node, pod["host_interface"]),
        ("vxlan lab, node-1 vxlan.calico", node, "vxlan.calico"),
        ("vxlan lab, node-1 eth0 (uplink)", node, "eth0"),
        ("direct lab, node-1 eth0 (uplink)", direct.node("node-1")["netns"], "eth0"),
        ("veth reference, eth0", veth.names[0], "eth0"),
    ]
    print("\noffloads (ethtool -k; tx-csum, tso, gso, gro, udp-gro-fwd, udp_tnl-seg):")
    for label, namespace, device in devices:
        features = overlay_throughput.offloads(namespace, device)
        print(f"  {label}: {' '.join(f'{k}={v}' for k, v in features.items())}")


# --- (b) ----------------------------------------------------------------------------------------


def run_b(args: argparse.Namespace, work: Path, suffix: str, cleanup: list[str]) -> bool:
    try:
        figures = overlay_routes.measure(args.blocks, args.runs, work / "routes", suffix)
    finally:
        cleanup += [f"namespace {n} left" for n in overlay_routes.leftover_namespaces(suffix)]
    report_b(figures, args)
    return True


def report_b(figures: overlay_routes.RouteFigures, args: argparse.Namespace) -> None:
    med = overlay_routes.RouteFigures.median
    print(f"\n(b) {args.blocks:,} remote blocks -> routes on vxlan.calico; {args.runs} runs, s")
    print("(Felix's run 1 is a first boot: it has calico-ipamd allocate its VTEP)\n")
    print("| figure | median | per run | state after |")
    print("|---|---:|---|---|")
    felix, listen = figures.to_routes_s, figures.to_listen_s
    kernel, ref = figures.kernel_layer_s, figures.reference_s
    rows = [
        ("calico-felix exec -> all routes present", felix, figures.counts[-1]),
        ("calico-felix exec -> its API socket answers", listen, None),
        ("Felix's kernel layer alone (VxlanKernel.reconcile, intent given)", kernel, None),
        ("reference: `ip -batch` + `bridge -batch`", ref, figures.reference_counts[-1]),
    ]
    for label, values, counts in rows:
        state = (
            f"{counts.routes} routes, {counts.neighbours} neighbours, {counts.fdb} FDB"
            if counts is not None
            else ""
        )
        per_run = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {label} | {med(values):.3f} | {per_run} | {state} |")
    print(
        f"\nratios of medians: felix / reference {med(felix) / med(ref):.0f}x,"
        f" kernel layer / reference {med(kernel) / med(ref):.0f}x;"
        f" felix from API answering to all routes: {med(felix) - med(listen):.2f} s"
    )
    bad = [c for c in figures.counts if (c.routes, c.neighbours, c.fdb) != (args.blocks,) * 3]
    if bad:
        print(f"WRONG: some runs did not end with {args.blocks} of each: {bad}")


# --- main ---------------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"signal {signum}: cleaning up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("a", "b", "all"), default="all")
    parser.add_argument("--seconds", type=int, default=10, help="(a) seconds per iperf3 run")
    parser.add_argument("--rounds", type=int, default=3, help="(a) rounds through the paths")
    parser.add_argument("--blocks", type=int, default=1000, help="(b) remote blocks (and nodes)")
    parser.add_argument("--runs", type=int, default=3, help="(b) Felix starts (and references)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.seconds < 2:
        parser.error("--seconds: at least 2 (the first second is omitted)")
    if args.rounds < 1 or args.runs < 1:
        parser.error("--rounds and --runs: at least 1")
    if not 1 <= args.blocks <= 16_000:
        parser.error("--blocks: 1..16000 (the /14 pool holds 16,384 blocks)")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _terminate)
    suffix = random_suffix()
    work = Path(tempfile.mkdtemp(prefix="ovl-", dir="/tmp"))  # short: sockets live here
    (work / "routes").mkdir()
    cleanup: list[str] = []
    complete = True
    print(f"overlay benchmark; work dir {work}", flush=True)
    try:
        if args.part in ("a", "all"):
            complete &= run_a(args, work, suffix, cleanup)
        if args.part in ("b", "all"):
            complete &= run_b(args, work, suffix, cleanup)
    finally:
        if not cleanup:
            shutil.rmtree(work, ignore_errors=True)
        for problem in cleanup:
            print(f"CLEANUP: {problem}", file=sys.stderr)
    return 1 if cleanup else (0 if complete else 3)


if __name__ == "__main__":
    sys.exit(main())
