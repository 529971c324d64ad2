"""Services in the iptables dataplane at scale: full sync, one-service deltas, the raw floor.

    .venv/bin/python benchmarks/ipt_services.py [--services 10000] [--endpoints 10]
        [--flavour iptables|iptables-legacy] [--changes 20]

In a throwaway network namespace (no traffic): programs N ClusterIP services of E endpoints
each through IptablesDataplane, then times (a) the full sync against ``iptables-restore
--noflush`` of the same nat ruleset as text (the floor), (b) one service's endpoint change
(its chains rewritten), (c) one cluster-IP change (a dispatch line edited in place with
-D / -I), (d) rewriting the whole cali-SERVICES dispatch chain (the alternative to (c)).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
import uuid
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from services.felix.calc.model import DataplaneState, ServiceBackend, ServicePort, StateDelta
from services.felix.dataplane import ipt_services as svc
from services.felix.dataplane.ipt_dataplane import IptablesDataplane


def _address(n: int) -> str:
    return f"10.{64 + n // 65536}.{n // 256 % 256}.{n % 256}"


def make_state(services: int, endpoints: int) -> DataplaneState:
    state = DataplaneState(pod_cidrs=("10.64.0.0/10",))
    for i in range(services):
        backends = tuple(
            ServiceBackend(_address(i * endpoints + e), 8080, True) for e in range(endpoints)
        )
        sp = ServicePort(
            id=f"ns/svc{i}//6",
            namespace="ns",
            service=f"svc{i}",
            port_name="",
            protocol=6,
            port=80,
            cluster_ips=(f"10.96.{i // 256}.{i % 256}",),
            backends=backends,
        )
        state.service_ports[sp.id] = sp
    return state


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def restore_in(ns: str, restore: str, text: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", ns, restore, "--noflush"], input=text, text=True,
                   check=True)  # fmt: skip
    return time.perf_counter() - t0


def timed(coro: Coroutine[Any, Any, Any]) -> float:
    t0 = time.perf_counter()
    asyncio.run(coro)
    return time.perf_counter() - t0


def run(args: argparse.Namespace, ns: str, raw_ns: str) -> None:
    legacy = args.flavour.endswith("legacy")
    restore = "iptables-legacy-restore" if legacy else "iptables-nft-restore"
    dp = IptablesDataplane(f"/run/netns/{ns}", legacy=legacy)
    asyncio.run(dp.start())
    state = make_state(args.services, args.endpoints)
    full = timed(dp.reconcile(state))
    nat = svc.nat_chains([svc.render_service(sp) for sp in state.service_ports.values()], ())
    lines = ["*nat", *(f":{c} - [0:0]" for c in nat)]
    for chain, rules in nat.items():
        lines += [f"-A {chain} {rule}" for rule in rules]
    raw = restore_in(raw_ns, restore, "\n".join([*lines, "COMMIT", ""]))
    endpoint_change: list[float] = []
    line_edit: list[float] = []
    for n in range(args.changes):
        sp = state.service_ports[f"ns/svc{n * 7 % args.services}//6"]
        moved = (*sp.backends[1:], replace(sp.backends[0], port=8081 + n))
        state.service_ports[sp.id] = replace(sp, backends=moved)
        endpoint_change.append(timed(dp.apply(state, StateDelta(service_ports={sp.id}))))
        sp = state.service_ports[sp.id]
        state.service_ports[sp.id] = replace(sp, cluster_ips=(f"10.97.{n // 256}.{n % 256}",))
        line_edit.append(timed(dp.apply(state, StateDelta(service_ports={sp.id}))))
    dispatch = [f"-A {svc.SERVICES} {r}" for r in nat[svc.SERVICES]]
    whole = "\n".join(["*nat", f":{svc.SERVICES} - [0:0]", *dispatch, "COMMIT", ""])
    rewrite = [restore_in(ns, restore, whole) for _ in range(5)]
    rule_count = sum(len(r) for r in nat.values())
    print(f"{args.flavour}: {args.services} services x {args.endpoints} endpoints, "
          f"{len(nat)} nat chains, {rule_count} nat rules")  # fmt: skip
    print(f"  full sync (reconcile)           {full * 1000:8.0f} ms")
    print(f"  raw iptables-restore, same nat  {raw * 1000:8.0f} ms  ratio {full / raw:.2f}")
    print(f"  one endpoint change    p50/p99  {pct(endpoint_change, 0.5):8.1f} / "
          f"{pct(endpoint_change, 0.99):.1f} ms")  # fmt: skip
    print(f"  one cluster-IP change  p50/p99  {pct(line_edit, 0.5):8.1f} / "
          f"{pct(line_edit, 0.99):.1f} ms  (-D/-I one dispatch line)")  # fmt: skip
    print(f"  cali-SERVICES rewritten whole   {statistics.median(rewrite) * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--flavour", default="iptables", choices=["iptables", "iptables-legacy"])
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    ns, raw_ns = f"bench-ipt-svc-{tag}", f"bench-ipt-svc-{tag}-raw"
    try:
        for name in (ns, raw_ns):
            subprocess.run(["ip", "netns", "add", name], check=True)
        run(args, ns, raw_ns)
    finally:
        for name in (ns, raw_ns):
            subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
