"""Services in Felix's dataplanes: endpoint change, full sync, connection rate (issue 14).

    .venv/bin/python benchmarks/services.py [--dataplane nftables|iptables|iptables-legacy|all]
        [--services 10000] [--changes 100] [--rounds 5] [--rate-seconds 2]

Each dataplane driver (NftablesDataplane; IptablesDataplane on iptables-nft or
iptables-legacy) is driven directly with a DataplaneState, in the node namespace of
tests/felix_policy/svclab.py with real pods: N ServicePorts x 10 backends (one service's
backends are the real pods, listed last; the others' are addresses nobody answers), every 5th
with a node port. All kernel work happens in namespaces this script creates and deletes.

(a) one endpoint change: a backend added to / removed from one ServicePort; the driver's
    apply (render + write) — the rules are in the kernel when it returns.
(b) full sync into an empty namespace, beside the raw tool (``nft -f`` / ``ipset restore``
    + ``iptables-restore --noflush``) loading exactly what that sync wrote, into a fresh
    namespace, in the same run; plus a refresh that finds nothing to repair.
(c) new TCP connections/s from a client pod through the real service's cluster IP with N
    services programmed vs with that one service only; alternated, medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
from services.felix.dataplane.ipt_dataplane import IptablesDataplane
from services.felix.dataplane.nft_dataplane import NftablesDataplane
from tests.felix_policy.svclab import POD_CIDR, ServiceLab

PODS = {"client": "10.65.0.2", "b1": "10.65.0.11", "b2": "10.65.0.12", "b3": "10.65.0.13"}
REAL_IP = "10.96.255.254"
DATAPLANES = ("nftables", "iptables", "iptables-legacy")
Command = tuple[list[str], str]  # argv, stdin


class Driver(Protocol):
    async def apply(self, state: DataplaneState, delta: StateDelta) -> None: ...
    async def reconcile(self, state: DataplaneState) -> int: ...
    async def close(self) -> None: ...


class RecordingIptables(IptablesDataplane):
    """The iptables driver, keeping each command it fed a batch (for the raw replay)."""

    def __init__(self, path: str, legacy: bool) -> None:
        super().__init__(path, legacy=legacy)
        self.commands: list[Command] = []

    async def _exec(self, argv: list[str], stdin: str | None = None) -> str:
        if stdin:
            self.commands.append((argv, stdin))
        return await super()._exec(argv, stdin)


@dataclass
class Dataplane:
    name: str
    make: Callable[[str], Driver]
    written: Callable[[Driver], list[Command]]  # what the last full sync wrote


def _nft_written(dp: Driver) -> list[Command]:
    assert isinstance(dp, NftablesDataplane)
    return [(["nft", "-f", "-"], dp.last_script)]


def _ipt_written(dp: Driver) -> list[Command]:
    assert isinstance(dp, RecordingIptables)
    return list(dp.commands)


def dataplane(name: str) -> Dataplane:
    if name == "nftables":
        return Dataplane(name, NftablesDataplane, _nft_written)
    legacy = name.endswith("legacy")
    return Dataplane(name, lambda path: RecordingIptables(path, legacy), _ipt_written)


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
    # The real service last: iptables' cali-SERVICES is walked in order (its worst case).
    for sp in [*(fake_port(i) for i in range(services - 1)), real_port()]:
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


def raw_load(commands: list[Command]) -> float:
    """Replay ``commands`` with the tools themselves in a fresh namespace; seconds taken."""
    netns = f"bench-svc-{uuid.uuid4().hex[:6]}-raw"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        started = time.perf_counter()
        for argv, stdin in commands:
            subprocess.run(["ip", "netns", "exec", netns, *argv], input=stdin, text=True,
                           check=True, capture_output=True)  # fmt: skip
        return time.perf_counter() - started
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


def rules_in(commands: list[Command]) -> int:
    return sum(
        1
        for _, text in commands
        for line in text.splitlines()
        if line.startswith(("add rule ", "-A ", "-I "))
    )


async def measure(lab: ServiceLab, plane: Dataplane, args: argparse.Namespace) -> str:
    lab.clean_rules()
    state = make_state(lab, args.services)
    small = make_state(lab, 1)
    dp = plane.make(lab.node_path)
    try:
        # (b) full sync into an empty namespace vs the raw tool loading what it wrote.
        started = time.perf_counter()
        await dp.reconcile(state)
        full_s = time.perf_counter() - started
        written = plane.written(dp)
        rules = rules_in(written)
        raw_s = raw_load(written)
        started = time.perf_counter()
        repairs = await dp.reconcile(state)
        refresh_s = time.perf_counter() - started

        # (a) one endpoint change.
        rng = random.Random(1)
        times = []
        for n in range(args.changes):
            sp = fake_port(rng.randrange(args.services - 1), 11 if n % 2 == 0 else 10)
            state.service_ports[sp.id] = sp
            started = time.perf_counter()
            await dp.apply(state, StateDelta(service_ports={sp.id}))
            times.append(time.perf_counter() - started)

        # (c) connection rate, N services vs 1, alternated.
        many: list[float] = []
        one: list[float] = []
        for _ in range(args.rounds):
            for target, rates in ((state, many), (small, one)):
                await dp.reconcile(target)
                await asyncio.sleep(1.0)  # the kernel frees a replaced ruleset in background
                rates.append(conn_rate(lab, args.rate_seconds))
    finally:
        await dp.close()
        lab.clean_rules()
    ratio_b = full_s / raw_s
    rate_many, rate_one = statistics.median(many), statistics.median(one)
    p50, p99 = pct(times, 0.5) * 1000, pct(times, 0.99) * 1000
    return (
        f"| {plane.name} | {rules} | {p50:.1f} / {p99:.1f}{'' if p99 <= 100 else ' (NOT met)'} "
        f"| {full_s:.2f} / {raw_s:.2f} = {ratio_b:.2f}{'' if ratio_b <= 2 else ' (NOT met)'} "
        f"| {refresh_s:.2f} ({repairs} repairs) "
        f"| {rate_many:.0f} / {rate_one:.0f} = {rate_many / rate_one:.2f}"
        f"{'' if rate_many / rate_one >= 0.9 else ' (NOT met)'} |"
    )


async def run(args: argparse.Namespace) -> None:
    names = DATAPLANES if args.dataplane == "all" else (args.dataplane,)
    lab = ServiceLab(ports=(("TCP", 80),))
    try:
        for name, ip in PODS.items():
            lab.add_pod(name, ip)
        print(f"{args.services} services x 10 backends; {args.changes} changes; "
              f"{args.rounds} rounds of {args.rate_seconds:g} s")  # fmt: skip
        print("| dataplane | rules written | (a) endpoint change p50 / p99 ms (p99 <= 100) "
              "| (b) full sync / raw s (<= 2x) | refresh in sync s "
              f"| (c) conn/s {args.services} / 1 service (>= 0.90) |")  # fmt: skip
        print("|---|---:|---|---|---|---|")
        for name in names:
            print(await measure(lab, dataplane(name), args), flush=True)
    finally:
        lab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataplane", choices=[*DATAPLANES, "all"], default="all")
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--rate-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.services < 2:
        parser.error("--services: at least 2 (the real service and one more)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
