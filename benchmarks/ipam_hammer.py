"""Hammer calico-ipamd: N daemons (one per node) on one datastore, C concurrent clients each.

    .venv/bin/python benchmarks/ipam_hammer.py --nodes 4 --concurrency 8 --allocations 2000 \
        --datastore etcdv3|embedded|kubernetes

Every allocation is a real AutoAssign RPC over the daemon's Unix socket. Prints allocations/s
(aggregate) and the p50/p99 latency seen by the clients, and next to them the datastore's own
compare-and-swap round trip measured in the same run: once alone (one client, sequential) and
once under the same number of concurrent clients. With etcd that CAS is the backend's update(),
a single etcd txn (compare mod_revision, put). With kubernetes (a real kube-apiserver and its
etcd, started here) it is the raw custom-resource update through resourceVersion: GET of one
IPAMBlock, then PUT of it with that resourceVersion, plain HTTP on the shared client
(kube_client.py), without the datastore's mapping; each concurrent client has its own block.
The store, the daemons and their sockets are temporary and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc  # noqa: E402
from libcalico.config import DatastoreConfig  # noqa: E402
from libcalico.datastore import Datastore, connect  # noqa: E402
from libcalico.datastore.kube_client import KubeClient  # noqa: E402
from libcalico.resources import ResourceClient  # noqa: E402
from tests.fixtures.etcd import running_etcd  # noqa: E402
from tests.ipam.daemons import Daemon, running_daemons  # noqa: E402

POOL_CIDR = "10.128.0.0/10"
CAS_SAMPLES = 300


def cpu_seconds(pid: int) -> float:
    """User+system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def datastore_config(kind: str) -> Iterator[tuple[DatastoreConfig, list[int]]]:
    """The store's config and the PIDs of its server processes (none for the embedded store)."""
    if kind == "etcdv3":
        with running_etcd() as etcd:
            yield DatastoreConfig(type="etcdv3", etcd_endpoints=(etcd.endpoint,)), [etcd.pid]
    elif kind == "kubernetes":
        from lab.apiserver import install_calico_crds, start, stop_server

        with tempfile.TemporaryDirectory(prefix="cpt-ipam-bench-") as tmp:
            server = start(Path(tmp) / "apiserver")
            try:
                install_calico_crds(server)
                config = DatastoreConfig(type="kubernetes", kubeconfig=str(server.kubeconfig))
                yield config, [record.pid for record in server.records()]
            finally:
                stop_server(server)
    else:
        with tempfile.TemporaryDirectory(prefix="cpt-ipam-bench-") as tmp:
            yield DatastoreConfig(type="embedded", path=str(Path(tmp) / "calico.db")), []


def env_of(config: DatastoreConfig) -> dict[str, str]:
    return {
        "DATASTORE_TYPE": config.type,
        "CALICO_DATASTORE_PATH": config.path,
        "ETCD_ENDPOINTS": ",".join(config.etcd_endpoints),
        "KUBECONFIG": config.kubeconfig or "",
        "LOG_LEVEL": "WARNING",
    }


async def cas_round_trips(ds: Datastore, clients: int, per_client: int) -> list[float]:
    """Latency of compare-and-swap updates, `clients` of them running at once."""

    async def one(i: int) -> list[float]:
        key = f"/calico/bench/cas/{i}"
        kv = await ds.put(key, b"0")
        out = []
        for n in range(per_client):
            start = time.perf_counter()
            kv = await ds.update(key, str(n).encode(), kv.mod_revision)
            out.append(time.perf_counter() - start)
        return out

    chunks = await asyncio.gather(*(one(i) for i in range(clients)))
    return [s for chunk in chunks for s in chunk]


BLOCKS_PATH = "/apis/crd.projectcalico.org/v1/ipamblocks"


def bench_block(i: int) -> dict[str, object]:
    """An IPAMBlock as IPAM writes one (64 addresses, 8 allocated), outside the bench pool."""
    allocations: list[int | None] = [0] * 8 + [None] * 56
    return {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPAMBlock",
        "metadata": {"name": f"raw-cas-{i}"},
        "spec": {
            "cidr": f"192.168.{i}.0/26",
            "affinity": "host:bench",
            "strictAffinity": False,
            "allocations": allocations,
            "unallocated": list(range(8, 64)),
            "attributes": [{"handle_id": "raw", "secondary": {"node": "bench"}}],
            "deleted": False,
            "sequenceNumber": 8,
            "sequenceNumberForAllocation": {str(o): o for o in range(8)},
        },
    }


async def raw_kube_round_trips(kubeconfig: str, clients: int, per_client: int) -> list[float]:
    """GET of an IPAMBlock, then PUT of it with its resourceVersion: `clients` at once, each
    on its own block, plain HTTP (no datastore mapping)."""
    client = KubeClient(kubeconfig)

    async def one(i: int) -> list[float]:
        path = f"{BLOCKS_PATH}/raw-cas-{i}"
        if (await client.request("GET", path)).status == 404:
            made = await client.request("POST", BLOCKS_PATH, bench_block(i))
            assert made.status == 201, made.message
        out = []
        for n in range(per_client):
            start = time.perf_counter()
            got = await client.request("GET", path)
            got.body["spec"]["sequenceNumber"] = n
            put = await client.request("PUT", path, got.body)
            out.append(time.perf_counter() - start)
            assert put.status == 200, put.message
        return out

    try:
        chunks = await asyncio.gather(*(one(i) for i in range(clients)))
    finally:
        await client.close()
    return [s for chunk in chunks for s in chunk]


async def reference_round_trips(
    ds: Datastore, config: DatastoreConfig, clients: int, per_client: int
) -> list[float]:
    if config.type == "kubernetes":
        assert config.kubeconfig is not None
        return await raw_kube_round_trips(config.kubeconfig, clients, per_client)
    return await cas_round_trips(ds, clients, per_client)


async def hammer(
    daemons: list[Daemon], concurrency: int, per_node: int, tag: str
) -> tuple[list[float], float]:
    async def worker(daemon: Daemon, w: int, count: int) -> list[float]:
        out = []
        async with daemon.channel() as channel:
            stub = ipam_pb2_grpc.IpamStub(channel)
            for i in range(count):
                request = ipam_pb2.AutoAssignRequest(
                    num_ipv4=1, handle_id=f"{tag}.{daemon.node}.{w}.{i}"
                )
                start = time.perf_counter()
                await stub.AutoAssign(request, timeout=60)
                out.append(time.perf_counter() - start)
        return out

    counts = [
        per_node // concurrency + (1 if w < per_node % concurrency else 0)
        for w in range(concurrency)
    ]
    start = time.perf_counter()
    chunks = await asyncio.gather(
        *(worker(d, w, counts[w]) for d in daemons for w in range(concurrency))
    )
    elapsed = time.perf_counter() - start
    return [s for chunk in chunks for s in chunk], elapsed


async def run(args: argparse.Namespace) -> dict[str, object]:
    with datastore_config(args.datastore) as (config, store_pids):
        ds = await connect(config)
        try:
            await ResourceClient(ds).apply(
                {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "IPPool",
                    "metadata": {"name": "bench"},
                    "spec": {"cidr": POOL_CIDR, "blockSize": 26},
                }
            )
            nodes = [f"bench-node-{i}" for i in range(args.nodes)]
            profile_dir = args.profile

            def daemon_args(node: str) -> list[str]:
                return ["--profile", f"{profile_dir}/{node}.prof"] if profile_dir else []

            async with running_daemons(nodes, env_of(config), daemon_args) as daemons:
                # Warm up: connections, first block claims, caches.
                await hammer(daemons, 1, 2, "warmup")
                cas_alone = await reference_round_trips(ds, config, 1, CAS_SAMPLES)
                pids = {
                    "daemons": [d.process.pid for d in daemons],
                    "datastore": store_pids,
                    "client": [os.getpid()],
                }
                before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
                revision = await ds.current_revision()
                latencies, elapsed = await hammer(
                    daemons, args.concurrency, args.allocations, "bench"
                )
                # One revision per datastore transaction (batch commits and block claims);
                # with kubernetes one per object written (and the API server's own writes).
                writes = await ds.current_revision() - revision
                cpu = {
                    k: round(sum(cpu_seconds(p) for p in v) - before[k], 2) for k, v in pids.items()
                }
                cas_loaded = await reference_round_trips(
                    ds,
                    config,
                    args.nodes * args.concurrency,
                    max(20, CAS_SAMPLES // args.concurrency),
                )
        finally:
            await ds.close()
    total = len(latencies)
    ms = 1000.0
    return {
        "datastore": args.datastore,
        "nodes": args.nodes,
        "concurrency": args.concurrency,
        "allocations": total,
        "seconds": round(elapsed, 3),
        "allocations_per_s": round(total / elapsed, 1),
        "alloc_p50_ms": round(statistics.median(latencies) * ms, 3),
        "alloc_p99_ms": round(percentile(latencies, 0.99) * ms, 3),
        "cas_alone_p50_ms": round(statistics.median(cas_alone) * ms, 3),
        "cas_alone_p99_ms": round(percentile(cas_alone, 0.99) * ms, 3),
        "cas_loaded_p50_ms": round(statistics.median(cas_loaded) * ms, 3),
        "cas_loaded_p99_ms": round(percentile(cas_loaded, 0.99) * ms, 3),
        "datastore_txns": writes,
        "allocations_per_txn": round(total / max(1, writes), 2),
        "cpu_seconds": cpu,
        "cpu_ms_per_allocation": round(sum(cpu.values()) * ms / total, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8, help="clients per node")
    parser.add_argument("--allocations", type=int, default=1000, help="allocations per node")
    parser.add_argument(
        "--datastore", choices=("embedded", "etcdv3", "kubernetes"), default="etcdv3"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--profile", metavar="DIR", help="write cProfile stats of every daemon and the client here"
    )
    args = parser.parse_args()
    if args.profile:
        import cProfile

        os.makedirs(args.profile, exist_ok=True)
        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, run(args))
        profiler.dump_stats(f"{args.profile}/client.prof")
    else:
        result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['nodes']} nodes x {result['concurrency']} concurrent, {result['allocations']} "
        f"allocations on {result['datastore']} in {result['seconds']} s"
    )
    print(f"  allocations/s        {result['allocations_per_s']}")
    kube = result["datastore"] == "kubernetes"
    what = "object writes" if kube else "txns"
    print(
        f"  datastore {what:<10} {result['datastore_txns']} "
        f"({result['allocations_per_txn']} allocations per {what[:-1]})"
    )
    raw = "raw GET+PUT" if kube else "raw CAS"
    print(f"  allocation p50 / p99 {result['alloc_p50_ms']} / {result['alloc_p99_ms']} ms")
    print(
        f"  {raw}, 1 client    {result['cas_alone_p50_ms']} / {result['cas_alone_p99_ms']} ms "
        "(p50 / p99)"
    )
    print(
        f"  {raw}, {args.nodes * args.concurrency} clients   {result['cas_loaded_p50_ms']} / "
        f"{result['cas_loaded_p99_ms']} ms (p50 / p99)"
    )
    alloc_p50 = float(result["alloc_p50_ms"])  # type: ignore[arg-type]
    alone = alloc_p50 / float(result["cas_alone_p50_ms"])  # type: ignore[arg-type]
    loaded = alloc_p50 / float(result["cas_loaded_p50_ms"])  # type: ignore[arg-type]
    print(f"  allocation p50 / {raw} p50: {alone:.2f}x (alone), {loaded:.2f}x (loaded)")
    print(
        f"  CPU seconds during the run: {result['cpu_seconds']} "
        f"({result['cpu_ms_per_allocation']} ms per allocation, all processes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
