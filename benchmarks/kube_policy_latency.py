"""One Kubernetes NetworkPolicy written to the API server -> enforced, on a real lab.

    .venv/bin/python benchmarks/kube_policy_latency.py [--runs 30] [--typha]
        [--dataplane nftables|iptables]

A one-node `calico-lab` on the kubernetes datastore (its own kube-apiserver in the lab
network, Felix watching it as the `calico-node` user): pods x/client and y/server (TCP 80).
Per run, a NetworkPolicy denying all ingress to namespace y is POSTed to the API server (raw
HTTP, as admin: what kubectl sends, without kubectl's own ~0.3 s start-up) while the client
connects to the server back to back (50 ms connect timeout). Latency = from just before the
POST to the start of the first connection attempt that fails (attempts that succeed take
about a millisecond, so that is when the rule took effect, to within one attempt). The
policy is then deleted and the benchmark waits until the server is reachable again.

References measured in the same run:
- the POST's own round trip (API create, what the figure cannot go below);
- the same policy written into the embedded datastore path (a second lab, `--datastore
  embedded`: ResourceClient -> SQLite -> Felix's watch), same probes.
The ratio is kubernetes / embedded. Target (issue 12): p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cluster import bring_down, bring_up
from lab.lab import Lab
from lab.matrix import endpoint_of
from lab.pods import PodSpec, create_pods
from lab.prober import Endpoint, probe_pairs
from lab.store import LabStore

ATTEMPT_TIMEOUT = 0.05
ENFORCE_DEADLINE = 5.0
POLICY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-ingress", "namespace": "y"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}
REF = {k: POLICY[k] for k in ("apiVersion", "kind", "metadata")}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _connects(pair: tuple[Endpoint, Endpoint]) -> bool:
    result = await probe_pairs([pair], 80, "tcp", ATTEMPT_TIMEOUT)
    return bool(result[(pair[0].key, pair[1].key)])


async def _first_failure(pair: tuple[Endpoint, Endpoint]) -> float:
    """Start time (monotonic) of the first attempt that does not connect."""
    deadline = time.monotonic() + ENFORCE_DEADLINE
    while time.monotonic() < deadline:
        started = time.monotonic()
        if not await _connects(pair):
            return started
    raise RuntimeError(f"the policy was not enforced within {ENFORCE_DEADLINE}s")


async def _wait_connects(pair: tuple[Endpoint, Endpoint]) -> None:
    deadline = time.monotonic() + ENFORCE_DEADLINE
    while not await _connects(pair):
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not become reachable again")
        await asyncio.sleep(0.01)


async def measure(lab: Lab, runs: int) -> tuple[list[float], list[float]]:
    """(apply -> enforced, the write's own round trip) per run, in ms."""
    await create_pods(
        lab,
        [
            PodSpec("x", "client", {"app": "client"}, [("tcp", 80)]),
            PodSpec("y", "server", {"app": "server"}, [("tcp", 80)]),
        ],
    )
    pair = (endpoint_of(lab.pod("x/client")), endpoint_of(lab.pod("y/server")))
    enforced: list[float] = []
    writes: list[float] = []
    async with LabStore(lab.state) as store:
        for run in range(runs + 2):  # the first two warm caches and connections up
            await _wait_connects(pair)
            await asyncio.sleep(0.05)
            started = time.monotonic()
            watcher = asyncio.create_task(_first_failure(pair))
            await store.apply_all([POLICY])
            written = time.monotonic()
            failed_at = await watcher
            if run >= 2:
                enforced.append((failed_at - started) * 1000)
                writes.append((written - started) * 1000)
            await store.delete_all([REF])
        await _wait_connects(pair)
    return enforced, writes


def run_lab(
    datastore: str, runs: int, dataplane: str, typha: bool
) -> tuple[list[float], list[float]]:
    state_dir = Path(tempfile.gettempdir()) / f"ckpl{datastore[:4]}{os.getpid()}"
    lab = bring_up(state_dir, state_dir.name, datastore, dataplane, typha=typha)
    try:
        return asyncio.run(measure(lab, runs))
    finally:
        problems = bring_down(state_dir)
        if problems:
            print(f"left behind: {problems}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--dataplane", default="nftables")
    parser.add_argument("--typha", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    kube, post = run_lab("kubernetes", args.runs, args.dataplane, args.typha)
    embedded, put = run_lab("embedded", args.runs, args.dataplane, args.typha)
    rows = [
        ("kubernetes: POST NetworkPolicy -> enforced", kube),
        ("  reference: the POST's own round trip (API create)", post),
        ("embedded: write NetworkPolicy -> enforced", embedded),
        ("  its write (ResourceClient -> SQLite)", put),
    ]
    via = " through Typha" if args.typha else ""
    print(f"{args.runs} runs each, {args.dataplane}{via}, times in ms\n")
    print("| figure | p50 | p99 | max |")
    print("|---|---:|---:|---:|")
    for name, values in rows:
        p50, p99 = statistics.median(values), pct(values, 0.99)
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {max(values):.1f} |")
    ratio50 = statistics.median(kube) / statistics.median(embedded)
    ratio99 = pct(kube, 0.99) / pct(embedded, 0.99)
    print(f"\nratio kubernetes / embedded: p50 {ratio50:.2f}, p99 {ratio99:.2f}")
    target = "met" if pct(kube, 0.99) <= 200 else "NOT met"
    print(f"target p99 <= 200 ms on the kubernetes datastore: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
