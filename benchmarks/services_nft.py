"""Services in the nftables dataplane: endpoint change, full sync, connection rate.

    .venv/bin/python benchmarks/services_nft.py [--services 10000] [--changes 100]

The dataplane (NftablesDataplane) is driven directly with a DataplaneState, in a node
namespace with real pods (tests/felix_policy/svclab.py); N ServicePorts x 10 backends (one
service's backends are the real pods, the others' are addresses nobody answers), every 5th
with a node port. All kernel work happens in namespaces this script creates and deletes.

(a) one endpoint change: a backend added to / removed from one ServicePort; time of the
    driver's apply (render + one transaction) — the rules are in the kernel when it returns.
(b) full sync into an empty table (render + one transaction) beside ``nft -f`` of the same
    script in the same run; plus a refresh that finds nothing to repair.
(c) new TCP connections/s from a client pod through the real service's cluster IP with N
    services programmed vs with that one service only; alternated, medians of 5 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.felix.calc.model import (
    Action,
    DataplaneState,
    EndpointPolicy,
    PolicyProgram,
    Rule,
    ServiceBackend,
    ServicePort,
    StateDelta,
)
from services.felix.dataplane.nft_dataplane import NftablesDataplane, render_full
from tests.felix_policy.svclab import POD_CIDR, ServiceLab

PODS = {"client": "10.65.0.2", "b1": "10.65.0.11", "b2": "10.65.0.12", "b3": "10.65.0.13"}
REAL_IP = "10.96.255.254"


def fake_port(i: int, backends: int = 10) -> ServicePort:
    cip = f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}"
    bs = tuple(
        ServiceBackend(f"10.{100 + (i * 16 + k) // 65536}.{(i * 16 + k) // 256 % 256}."
                       f"{(i * 16 + k) % 256}", 8080, k % 2 == 0)
        for k in range(backends)
    )  # fmt: skip
    node_port = 30000 + i // 5 % 2768 if i % 5 == 0 and i < 13840 else None
    return ServicePort(
        f"bench/s{i}//6", "bench", f"s{i}", "", 6, 80, (cip,), node_port, backends=bs
    )


def real_port() -> ServicePort:
    bs = tuple(ServiceBackend(PODS[n], 80, True) for n in ("b1", "b2", "b3"))
    return ServicePort("bench/real//6", "bench", "real", "", 6, 80, (REAL_IP,), backends=bs)


def make_state(lab: ServiceLab, services: int) -> DataplaneState:
    allow = (Rule(Action.ALLOW),)
    state = DataplaneState(pod_cidrs=(POD_CIDR,))
    state.profiles["allow"] = PolicyProgram("allow", inbound=allow, outbound=allow)
    for name, ip in PODS.items():
        iface = lab.hosts[name].iface
        state.endpoints[iface] = EndpointPolicy(iface, name, (f"{ip}/32",), (), (), ("allow",))
    for sp in [real_port(), *(fake_port(i) for i in range(services - 1))]:
        state.service_ports[sp.id] = sp
    return state


def conn_rate(lab: ServiceLab, seconds: float) -> float:
    def loop() -> int:
        count = 0
        deadline = time.perf_counter() + seconds
        linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
        while time.perf_counter() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)  # no TIME_WAIT
                sock.settimeout(2.0)
                sock.connect((REAL_IP, 80))
                count += 1
        return count

    return lab.hosts["client"].worker.call(loop) / seconds


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> None:
    lab = ServiceLab(ports=(("TCP", 80),))
    try:
        for name, ip in PODS.items():
            lab.add_pod(name, ip)
        state = make_state(lab, args.services)
        small = make_state(lab, 1)

        # (b) full sync vs raw nft -f of the same script.
        dp = NftablesDataplane(lab.node_path)
        started = time.perf_counter()
        await dp.reconcile(state)
        full_s = time.perf_counter() - started
        script, _ = dp._repair_script(render_full(state), None)
        lab.nft("delete", "table", "inet", "calico")
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            f.write(script)
            f.flush()
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                "nsenter", f"--net={lab.node_path}", "nft", "-f", f.name
            )
            if await proc.wait() != 0:
                raise RuntimeError("nft -f of the rendered script failed")
            raw_s = time.perf_counter() - started
        started = time.perf_counter()
        repairs = await dp.reconcile(state)  # the raw load is exactly what it wants
        refresh_s = time.perf_counter() - started
        rules = sum(len(x) for x in render_full(state).chains.values())

        # (a) one endpoint change.
        rng = random.Random(1)
        times = []
        for n in range(args.changes):
            i = rng.randrange(args.services - 1)
            sp = fake_port(i, 11 if n % 2 == 0 else 10)
            state.service_ports[sp.id] = sp
            started = time.perf_counter()
            await dp.apply(state, StateDelta(service_ports={sp.id}))
            times.append(time.perf_counter() - started)
        for i in range(args.services - 1):  # back to 10 backends each
            state.service_ports[fake_port(i).id] = fake_port(i)
        await dp.reconcile(state)

        # (c) connection rate, N services vs 1, alternated.
        many: list[float] = []
        one: list[float] = []
        for _ in range(args.rounds):
            for target, rates in ((state, many), (small, one)):
                await dp.reconcile(target)
                await asyncio.sleep(1.0)  # the kernel frees a replaced ruleset in background
                rates.append(conn_rate(lab, args.rate_seconds))
        await dp.close()
        ratio_b = full_s / raw_s
        ratio_c = statistics.median(many) / statistics.median(one)
        p50, p99 = pct(times, 0.5) * 1000, pct(times, 0.99) * 1000
        print(f"services: {args.services} x 10 backends; {rules} rules; {args.changes} changes")
        print("| figure | value | target |")
        print("|---|---:|---|")
        print(f"| (a) endpoint change p50 / p99 | {p50:.1f} / {p99:.1f} ms | p99 <= 100 ms: "
              f"{'met' if p99 <= 100 else 'NOT met'} |")  # fmt: skip
        print(f"| (b) full sync / raw nft -f | {full_s:.2f} s / {raw_s:.2f} s = {ratio_b:.2f} |"
              f" <= 2: {'met' if ratio_b <= 2 else 'NOT met'} |")  # fmt: skip
        print(f"| refresh, nothing to repair ({repairs} repairs) | {refresh_s:.2f} s | - |")
        print(f"| (c) conn/s with {args.services} vs 1 service | "
              f"{statistics.median(many):.0f} / {statistics.median(one):.0f} = {ratio_c:.2f} |"
              f" >= 0.90: {'met' if ratio_c >= 0.9 else 'NOT met'} |")  # fmt: skip
    finally:
        lab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--rate-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
