"""10,000 pods in the Kubernetes API -> Typha's snapshot delivered to one Felix-style client.

    .venv/bin/python benchmarks/kube_typha_snapshot.py --pods 10000

1. A temporary kube-apiserver (lab/apiserver.py) with Calico's CRDs; one namespace and its
   default ServiceAccount; --pods pods on --nodes nodes, each with the CNI plugin's address
   annotations (so each is a WorkloadEndpoint too), created by --writers concurrent writers.
2. calico-typha started as a process with DATASTORE_TYPE=kubernetes (its lists and watches
   on the API server); the time until it is ready (its own snapshot read) is reported.
3. One TyphaSyncer client (the library Felix uses, syncer type felix): time from connecting
   to InSync, and the number of WorkloadEndpoints and pods it holds then. --runs times.
   "cold" = Typha's start to ready plus the first client's snapshot.
4. Typha's resident memory (VmRSS) after the runs.
5. Reference, in the same run: a raw LIST of the pods (paginated, the same aiohttp client
   the datastore uses) to dicts. Ratio = snapshot delivery / raw LIST.
The API server, its etcd and Typha are stopped at the end, by PID. Not part of CI: creating
10,000 pods alone takes a while.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab.apiserver import install_calico_crds, start, stop_server  # noqa: E402
from libcalico.datastore.kube_client import KubeClient  # noqa: E402
from libcalico.syncer.api import InSync, Update  # noqa: E402
from libcalico.syncer.typha import TyphaSyncer  # noqa: E402
from tests.typha.typhakit import TyphaProcess  # noqa: E402

NAMESPACE = "bench"
WEP_PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"
POD_PREFIX = "/calico/resources/v3/core/pods/"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pod(i: int, nodes: int) -> dict[str, object]:
    address = f"10.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}/32"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pod-{i}",
            "namespace": NAMESPACE,
            "labels": {"app": f"app-{i % 50}", "tier": "web"},
            "annotations": {
                "cni.projectcalico.org/podIP": address,
                "cni.projectcalico.org/podIPs": address,
                "cni.projectcalico.org/containerID": f"c{i:08x}",
            },
        },
        "spec": {
            "nodeName": f"node-{i % nodes}",
            "containers": [
                {
                    "name": "server",
                    "image": "bench/server",
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                }
            ],
        },
    }


async def create_pods(client: KubeClient, count: int, nodes: int, writers: int) -> float:
    started = time.monotonic()
    await client.request("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    sa = {"metadata": {"name": "default", "namespace": NAMESPACE}}
    await client.request("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", sa)
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"

    async def writer(offset: int) -> None:
        for i in range(offset, count, writers):
            response = await client.request("POST", path, pod(i, nodes))
            if response.status not in (200, 201, 409):
                raise RuntimeError(f"create pod-{i}: {response.status} {response.message}")

    await asyncio.gather(*(writer(o) for o in range(writers)))
    return time.monotonic() - started


async def snapshot_once(address: str) -> tuple[float, int, int]:
    syncer = TyphaSyncer(address, "bench-felix", "felix", tracing=False)
    started = time.monotonic()
    weps = pods = 0
    try:
        async for batch in syncer.updates():
            for update in batch:
                if isinstance(update, Update):
                    weps += update.key.startswith(WEP_PREFIX)
                    pods += update.key.startswith(POD_PREFIX)
                elif isinstance(update, InSync):
                    return time.monotonic() - started, weps, pods
    finally:
        await syncer.close()
    raise RuntimeError("Typha's stream ended before InSync")


async def raw_list(client: KubeClient) -> tuple[float, int]:
    started = time.monotonic()
    items, _ = await client.list(f"/api/v1/namespaces/{NAMESPACE}/pods")
    return time.monotonic() - started, len(items)


async def measure(args: argparse.Namespace, kubeconfig: str, work: Path) -> dict[str, object]:
    client = KubeClient(kubeconfig)
    try:
        created_s = await create_pods(client, args.pods, args.nodes, args.writers)
        print(f"created {args.pods} pods in {created_s:.1f}s", flush=True)
        env = {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": kubeconfig}
        typha = TyphaProcess(work / "typha", env, ["--syncer-types", "felix"])
        (work / "typha").mkdir()
        typha_started = time.monotonic()
        typha.start()
        typha_ready_s = time.monotonic() - typha_started
        try:
            runs = []
            for _ in range(args.runs):
                seconds, weps, pods = await snapshot_once(typha.address)
                if weps != args.pods or pods != args.pods:
                    raise RuntimeError(f"snapshot had {weps} endpoints and {pods} pods")
                runs.append(seconds)
                print(f"snapshot: {seconds:.2f}s ({weps} endpoints, {pods} pods)", flush=True)
            assert typha.proc is not None
            typha_rss = rss_mb(typha.proc.pid)
        finally:
            typha.stop()
        lists = []
        for _ in range(args.runs):
            seconds, count = await raw_list(client)
            if count != args.pods:
                raise RuntimeError(f"raw list had {count} pods")
            lists.append(seconds)
        snapshot_p50 = statistics.median(runs)
        list_p50 = statistics.median(lists)
        return {
            "pods": args.pods,
            "pods_created_s": round(created_s, 1),
            "typha_ready_s": round(typha_ready_s, 2),
            "snapshot_s": [round(s, 3) for s in runs],
            "snapshot_p50_s": round(snapshot_p50, 3),
            "typha_rss_mb": round(typha_rss, 1),
            "raw_list_s": [round(s, 3) for s in lists],
            "raw_list_p50_s": round(list_p50, 3),
            "ratio_snapshot_to_raw_list": round(snapshot_p50 / list_p50, 2),
            # Cold: Typha started with the pods already in the API, until the first client
            # holds the whole snapshot (Typha's own lists included).
            "cold_s": round(typha_ready_s + runs[0], 2),
            "ratio_cold_to_raw_list": round((typha_ready_s + runs[0]) / list_p50, 2),
            "target_s": 5.0,
        }
    finally:
        await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kube-typha-bench-"))
    server = start(work / "apiserver")
    try:
        install_calico_crds(server)
        result = asyncio.run(measure(args, str(server.kubeconfig), work))
        print(json.dumps(result, indent=2))
    finally:
        report = stop_server(server)
        if report.problems:
            print(f"cleanup problems: {report.problems}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
