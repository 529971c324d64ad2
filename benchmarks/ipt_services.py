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
from dataclasses import replace

from services.felix.calc.model import DataplaneState, ServiceBackend, ServicePort, StateDelta
from services.felix.dataplane import ipt_services as svc
from services.felix.dataplane.ipt_dataplane import IptablesDataplane


def make_state(services: int, endpoints: int) -> DataplaneState:
    state = DataplaneState(pod_cidrs=("10.64.0.0/10",))
    for i in range(services):
        backends = tuple(
            ServiceBackend(f"10.{64 + (i * endpoints + e) // 65536}.{(i * endpoints + e) // 256 % 256}"
                           f".{(i * endpoints + e) % 256}", 8080, True)  # fmt: skip
            for e in range(endpoints)
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


async def run(args: argparse.Namespace) -> None:
    ns = f"bench-ipt-svc-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        legacy = args.flavour.endswith("legacy")
        dp = IptablesDataplane(f"/run/netns/{ns}", legacy=legacy)
        await dp.start()
        state = make_state(args.services, args.endpoints)
        t0 = time.perf_counter()
        await dp.reconcile(state)
        full = time.perf_counter() - t0
        nat = svc.nat_chains(dp._services.values(), state.pod_cidrs)
        lines = ["*nat", *(f":{c} - [0:0]" for c in nat)]
        for chain, rules in nat.items():
            lines += [f"-A {chain} {rule}" for rule in rules]
        text = "\n".join([*lines, "COMMIT", ""])
        restore = "iptables-legacy-restore" if legacy else "iptables-nft-restore"
        raw_ns = f"{ns}-raw"
        subprocess.run(["ip", "netns", "add", raw_ns], check=True)
        try:
            t0 = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", raw_ns, restore, "--noflush"], input=text,
                           text=True, check=True)  # fmt: skip
            raw = time.perf_counter() - t0
        finally:
            subprocess.run(["ip", "netns", "del", raw_ns], check=False)
        endpoint_change: list[float] = []
        line_edit: list[float] = []
        for n in range(args.changes):
            sp = state.service_ports[f"ns/svc{n * 7 % args.services}//6"]
            moved = (*sp.backends[1:], replace(sp.backends[0], port=8081 + n))
            state.service_ports[sp.id] = replace(sp, backends=moved)
            t0 = time.perf_counter()
            await dp.apply(state, StateDelta(service_ports={sp.id}))
            endpoint_change.append(time.perf_counter() - t0)
            sp = state.service_ports[sp.id]
            state.service_ports[sp.id] = replace(sp, cluster_ips=(f"10.97.{n // 256}.{n % 256}",))
            t0 = time.perf_counter()
            await dp.apply(state, StateDelta(service_ports={sp.id}))
            line_edit.append(time.perf_counter() - t0)
        dispatch = nat[svc.SERVICES]
        whole = "\n".join(
            ["*nat", f":{svc.SERVICES} - [0:0]", *(f"-A {svc.SERVICES} {r}" for r in dispatch)]
            + ["COMMIT", ""]
        )
        rewrite: list[float] = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", ns, restore, "--noflush"], input=whole,
                           text=True, check=True)  # fmt: skip
            rewrite.append(time.perf_counter() - t0)
        rules = sum(len(r) for r in nat.values())
        print(f"{args.flavour}: {args.services} services x {args.endpoints} endpoints, "
              f"{len(nat)} nat chains, {rules} nat rules")  # fmt: skip
        print(f"  full sync (reconcile)           {full * 1000:8.0f} ms")
        print(f"  raw iptables-restore, same nat  {raw * 1000:8.0f} ms  ratio {full / raw:.2f}")
        print(f"  one endpoint change    p50/p99  {pct(endpoint_change, 0.5):8.1f} / "
              f"{pct(endpoint_change, 0.99):.1f} ms")  # fmt: skip
        print(f"  one cluster-IP change  p50/p99  {pct(line_edit, 0.5):8.1f} / "
              f"{pct(line_edit, 0.99):.1f} ms  (-D/-I one dispatch line)")  # fmt: skip
        print(f"  cali-SERVICES rewritten whole   {statistics.median(rewrite) * 1000:8.1f} ms")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--flavour", default="iptables", choices=["iptables", "iptables-legacy"])
    parser.add_argument("--changes", type=int, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
