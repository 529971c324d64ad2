"""Typha fan-out: one calico-typha, many client streams in other processes.

    .venv/bin/python benchmarks/typha_fanout.py --clients 1000 --procs 4 --datastore etcdv3

1. 1,000 TyphaSyncer clients (the real client library, each with its own TCP connection)
   spread over --procs worker processes connect and get in sync on a small snapshot.
2. Typha's resident memory (VmRSS) with every client connected; the datastore watches Typha
   holds (its status, and for etcd also etcd's own `etcd_debugging_mvcc_watcher_total`).
3. --updates single writes, spaced apart; each carries its wall-clock send time, and every
   client records when it got it: per-delivery latency and, per update, the time until the
   last client had it (p50/p99).
4. The clients leave; --snapshot-size resources are written; a new client's time from
   connecting to holding the whole snapshot (InSync) is measured --snapshot-runs times.
The datastore (etcd or an SQLite file), Typha and the workers are temporary and stopped at
the end, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from libcalico.config import DatastoreConfig  # noqa: E402
from libcalico.datastore import Datastore, connect  # noqa: E402
from libcalico.datastore.keys import GROUP_CALICO, resource_key  # noqa: E402
from libcalico.syncer.api import InSync, Update  # noqa: E402
from libcalico.syncer.typha import TyphaSyncer  # noqa: E402
from tests.fixtures.etcd import running_etcd  # noqa: E402
from tests.typha.typhakit import TyphaProcess, typha_status  # noqa: E402

FANOUT_PREFIX = resource_key(GROUP_CALICO, "profiles", "fanout-")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- worker process: N clients ---------------------------------------------------------------


async def worker(address: str, name: str, clients: int, updates: int, give_up: float) -> None:
    ready = 0
    results: list[dict[int, float]] = []

    async def one(i: int) -> None:
        nonlocal ready
        syncer = TyphaSyncer(address, f"{name}-{i}", "felix", tracing=False)
        got: dict[int, float] = {}
        results.append(got)
        async for batch in syncer.updates():
            now = time.time()
            for u in batch:
                if isinstance(u, InSync):
                    ready += 1
                    if ready == clients:
                        print("ready", flush=True)
                elif isinstance(u, Update) and u.key.startswith(FANOUT_PREFIX):
                    got[int(u.key[len(FANOUT_PREFIX) :])] = now - json.loads(u.value)["sent"]
            if len(got) >= updates:
                break
        await syncer.close()

    tasks = []
    for i in range(clients):
        tasks.append(asyncio.create_task(one(i)))
        if i % 25 == 24:
            await asyncio.sleep(0.05)  # connect in waves, as nodes boot
    await asyncio.wait(tasks, timeout=give_up)
    print(json.dumps([{str(k): v for k, v in r.items()} for r in results]), flush=True)
    os._exit(0)  # leftover streams (timeouts) need no goodbye


# --- coordinator -------------------------------------------------------------------------------


def typha_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def etcd_watchers(endpoint: str) -> int | None:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("etcd_debugging_mvcc_watcher_total "):
                return int(float(line.split()[1]))
    return None


async def write_many(store: Datastore, count: int) -> None:
    body = json.dumps({"spec": {"node": "node-x", "ipNetworks": ["10.0.0.1/32"], "x": "y" * 300}})

    async def writer(offset: int) -> None:
        for i in range(offset, count, 16):
            key = resource_key(GROUP_CALICO, "workloadendpoints", f"wep-{i}", "bench")
            await store.put(key, body.encode())

    await asyncio.gather(*(writer(o) for o in range(16)))


async def run(
    args: argparse.Namespace, ds_config: DatastoreConfig, etcd: str | None
) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="typha-bench-"))
    env = {
        "DATASTORE_TYPE": ds_config.type,
        "CALICO_DATASTORE_PATH": ds_config.path,
        "ETCD_ENDPOINTS": ",".join(ds_config.etcd_endpoints),
    }
    store = await connect(ds_config)
    for i in range(20):  # a small snapshot for the 1,000
        await store.put(resource_key(GROUP_CALICO, "profiles", f"base-{i}"), b'{"spec": {}}')
    typha = TyphaProcess(tmp, env, args=["--syncer-types", "felix"]).start()
    workers: list[asyncio.subprocess.Process] = []
    out: dict[str, object] = {
        "clients": args.clients,
        "procs": args.procs,
        "datastore": ds_config.type,
    }
    try:
        assert typha.proc is not None
        per = args.clients // args.procs
        t0 = time.monotonic()
        for w in range(args.procs):
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--worker",
                    typha.address,
                    f"w{w}",
                    str(per),
                    str(args.updates),
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**26,
                )
            )
        for proc in workers:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 300)
            assert line.strip() == b"ready", line
        out["connect_all_s"] = time.monotonic() - t0
        await asyncio.sleep(1.0)  # let the connection storm settle
        status = await typha_status(typha.address)
        out["connected_clients"] = len(status.clients)
        out["datastore_watches_typha"] = status.datastore_watches
        if etcd is not None:
            out["etcd_watchers_total"] = etcd_watchers(etcd)
        out["typha_rss_mb_with_clients"] = typha_rss_mb(typha.proc.pid)

        for i in range(args.updates):
            await store.put(FANOUT_PREFIX + str(i), json.dumps({"sent": time.time()}).encode())
            await asyncio.sleep(args.spacing)
        reports: list[dict[str, float]] = []
        for proc in workers:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            reports.extend(json.loads(line))
            await proc.wait()
        deliveries = [v for r in reports for v in r.values()]
        per_update = [
            max(r.get(str(i), float("inf")) for r in reports) for i in range(args.updates)
        ]
        out["deliveries"] = len(deliveries)
        out["deliveries_expected"] = args.updates * per * args.procs
        out["delivery_p50_s"] = statistics.median(deliveries)
        out["delivery_p99_s"] = pct(deliveries, 99)
        out["all_clients_p50_s"] = statistics.median(per_update)
        out["all_clients_p99_s"] = pct(per_update, 99)
        out["all_clients_max_s"] = max(per_update)
        status = await typha_status(typha.address)
        out["lagging_disconnects"] = status.lagging_disconnects

        t0 = time.monotonic()
        await write_many(store, args.snapshot_size)
        out["write_snapshot_s"] = time.monotonic() - t0
        while True:
            status = await typha_status(typha.address)
            if status.caches[0].snapshot_size >= args.snapshot_size:
                break
            await asyncio.sleep(0.1)
        times = []
        for run_no in range(args.snapshot_runs):
            syncer = TyphaSyncer(typha.address, f"late-{run_no}", "felix", tracing=False)
            t0 = time.monotonic()
            updates = syncer.updates()
            first = await updates.__anext__()
            times.append(time.monotonic() - t0)
            assert isinstance(first[-1], InSync)
            assert sum(isinstance(u, Update) for u in first) >= args.snapshot_size
            await syncer.close()
        out["snapshot_keys"] = sum(isinstance(u, Update) for u in first)
        out["snapshot_p50_s"] = statistics.median(times)
        out["snapshot_max_s"] = max(times)
        out["typha_rss_mb_with_snapshot"] = typha_rss_mb(typha.proc.pid)
        status = await typha_status(typha.address)
        out["datastore_watches_typha_end"] = status.datastore_watches
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        typha.stop()
        await store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between updates")
    parser.add_argument("--snapshot-size", type=int, default=10_000)
    parser.add_argument("--snapshot-runs", type=int, default=5)
    parser.add_argument("--datastore", choices=["etcdv3", "embedded"], default="etcdv3")
    parser.add_argument("--worker", nargs=4, metavar=("ADDR", "NAME", "N", "UPDATES"))
    args = parser.parse_args()
    if args.worker:
        address, name, n, updates = args.worker
        asyncio.run(worker(address, name, int(n), int(updates), give_up=120))
        return 0
    if args.datastore == "etcdv3":
        with running_etcd() as etcd:
            config = DatastoreConfig(type="etcdv3", etcd_endpoints=(etcd.endpoint,))
            result = asyncio.run(run(args, config, etcd.endpoint))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            config = DatastoreConfig(type="embedded", path=str(Path(tmp) / "calico.db"))
            result = asyncio.run(run(args, config, None))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
