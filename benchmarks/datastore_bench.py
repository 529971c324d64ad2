"""Datastore latency: get, CAS update and watch-notify, per backend, beside raw etcd.

    .venv/bin/python benchmarks/datastore_bench.py
        [--backend embedded|etcdv3|etcdv3-tls|both|all] [--iterations N]

Starts its own etcd (tests/fixtures/etcd.py) when etcd is needed. "raw etcd" is aetcd used
directly in the same run — a get and a txn compare-mod_revision-then-put, no project code —
so the ratio project/raw shows what our layer costs on top of the wire and etcd itself.
etcdv3-tls is the etcd backend against a second etcd serving mutual TLS (certificates from
tests/fixtures/etcd_certs.py); its ratio is against plain raw etcd, so it includes TLS's cost.
Operations run sequentially from one task; the watch figure is the time from starting a put
until a watcher task in the same process receives the event. Medians are what to compare:
the machine is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aetcd

from libcalico.config import DatastoreConfig, EtcdTLSFiles
from libcalico.datastore import Datastore, connect
from libcalico.datastore.etcd import parse_endpoint
from tests.fixtures.etcd import running_etcd
from tests.fixtures.etcd_certs import make_etcd_certs

WARMUP = 50
KEY = "/calico/bench/key"


@dataclass
class Figures:
    label: str
    samples: list[float]  # seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) * 1000.0

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


async def timed(op: Callable[[], Awaitable[object]], iterations: int) -> list[float]:
    for _ in range(WARMUP):
        await op()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - start)
    return samples


async def bench_store(store: Datastore, iterations: int) -> dict[str, list[float]]:
    kv = await store.put(KEY, b"0")
    results = {"get": await timed(lambda: store.get(KEY), iterations)}

    revision = kv.mod_revision

    async def cas() -> None:
        nonlocal revision
        revision = (await store.update(KEY, b"x", revision)).mod_revision

    results["cas update"] = await timed(cas, iterations)

    results["watch notify"] = await watch_notify(store, store, iterations)
    return results


async def watch_notify(writer: Datastore, watched: Datastore, iterations: int) -> list[float]:
    """Time from starting a put on `writer` until a watch on `watched` delivers it."""
    seen: asyncio.Queue[float] = asyncio.Queue()

    async def watcher() -> None:
        async for _ in watched.watch("/calico/bench/", await watched.current_revision() + 1):
            seen.put_nowait(time.perf_counter())

    task = asyncio.create_task(watcher())
    await asyncio.sleep(0.2)  # let the watch be established before timing

    async def put_and_wait() -> float:
        start = time.perf_counter()
        await writer.put(KEY, b"w")
        arrived = await asyncio.wait_for(seen.get(), 10)
        return arrived - start

    try:
        for _ in range(WARMUP):
            await put_and_wait()
        return [await put_and_wait() for _ in range(iterations)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def bench_raw_etcd(endpoint: str, iterations: int) -> dict[str, list[float]]:
    host, port = parse_endpoint(endpoint)
    key = b"/calico/bench/raw"
    async with aetcd.Client(host=host, port=port) as client:
        await client.put(key, b"0")
        results = {"get": await timed(lambda: client.get(key), iterations)}
        revision = (await client.get(key)).mod_revision

        async def cas() -> None:
            nonlocal revision
            ok, responses = await client.transaction(
                compare=[client.transactions.mod(key) == revision],
                success=[client.transactions.put(key, b"x")],
                failure=[],
            )
            assert ok
            revision = responses[0].response_put.header.revision

        results["cas update"] = await timed(cas, iterations)

        seen: asyncio.Queue[float] = asyncio.Queue()
        stream = await client.watch(key)

        async def watcher() -> None:
            async for _ in stream:
                seen.put_nowait(time.perf_counter())

        task = asyncio.create_task(watcher())

        async def put_and_wait() -> float:
            start = time.perf_counter()
            await client.put(key, b"w")
            return await asyncio.wait_for(seen.get(), 10) - start

        for _ in range(WARMUP):
            await put_and_wait()
        results["watch notify"] = [await put_and_wait() for _ in range(iterations)]
        await stream.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return results


async def run(
    backends: list[str], iterations: int, endpoint: str, tls: tuple[str, EtcdTLSFiles] | None
) -> list[str]:
    rows: dict[str, dict[str, Figures]] = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="calico-bench-") as tmp:
            if backend == "embedded":
                config = DatastoreConfig(type="embedded", path=str(Path(tmp) / "calico.db"))
            elif backend == "etcdv3-tls":
                assert tls is not None
                config = DatastoreConfig(type="etcdv3", etcd_endpoints=(tls[0],), etcd_tls=tls[1])
            else:
                config = DatastoreConfig(type="etcdv3", etcd_endpoints=(endpoint,))
            store = await connect(config)
            try:
                measured = await bench_store(store, iterations)
                if backend == "embedded":
                    # A second handle on the file learns of commits only by polling, exactly
                    # like a watcher in another process (Felix, Typha).
                    other = await connect(config)
                    try:
                        measured["watch notify (other handle)"] = await watch_notify(
                            store, other, iterations
                        )
                    finally:
                        await other.close()
            finally:
                await store.close()
        rows[backend] = {op: Figures(backend, s) for op, s in measured.items()}
    raw_samples = await bench_raw_etcd(endpoint, iterations)
    raw = {op: Figures("raw", samples) for op, samples in raw_samples.items()}

    lines = [
        f"iterations per figure: {iterations} (after {WARMUP} warm-up), times in ms",
        "",
        "| operation | backend | p50 | p99 | raw etcd p50 | p50 ratio project/raw |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for op in ("get", "cas update", "watch notify", "watch notify (other handle)"):
        for backend in backends:
            if op not in rows[backend]:
                continue
            fig = rows[backend][op]
            raw_fig = raw.get(op)
            raw_p50 = f"{raw_fig.p50:.3f}" if raw_fig else "-"
            ratio = f"{fig.p50 / raw_fig.p50:.2f}" if raw_fig else "-"
            lines.append(
                f"| {op} | {backend} | {fig.p50:.3f} | {fig.p99:.3f} | {raw_p50} | {ratio} |"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    choices = ["embedded", "etcdv3", "etcdv3-tls", "both", "all"]
    parser.add_argument("--backend", choices=choices, default="both")
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args()
    backends = {
        "both": ["embedded", "etcdv3"],
        "all": ["embedded", "etcdv3", "etcdv3-tls"],
    }.get(args.backend, [args.backend])
    # Raw etcd is the reference for every backend, so etcd runs whatever the backend.
    with running_etcd() as etcd, contextlib.ExitStack() as stack:
        tls = None
        if "etcdv3-tls" in backends:
            certs = make_etcd_certs(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            tls_etcd = stack.enter_context(running_etcd(tls=certs))
            files = EtcdTLSFiles(str(certs.ca), str(certs.client_cert), str(certs.client_key))
            tls = (tls_etcd.endpoint, files)
        lines = asyncio.run(run(backends, args.iterations, etcd.endpoint, tls))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
