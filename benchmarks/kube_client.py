"""Which Kubernetes client the kubernetes datastore uses: get + CAS update round trips, measured.

Starts a real kube-apiserver (lab/apiserver.py) with Calico's CRDs, makes one IPAMBlock, then
per candidate does ITERATIONS x (GET the object, PUT it back with its resourceVersion) and prints
the median and p99 of one get+update pair, plus the candidate's import time in a fresh process.
Run: .venv/bin/python -m benchmarks.kube_client [iterations].
Results: libcalico/datastore/KUBERNETES.md.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lab.apiserver import ApiServer, install_calico_crds, start, stop_server

GROUP, VERSION, PLURAL, NAME = "crd.projectcalico.org", "v1", "ipamblocks", "bench-block"
PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}/{NAME}"


def _stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms"


async def _measure(n: int, round_trip: Callable[[int], Awaitable[None]]) -> list[float]:
    for i in range(10):  # warm up connections
        await round_trip(i)
    samples = []
    for i in range(n):
        began = time.perf_counter()
        await round_trip(i)
        samples.append(time.perf_counter() - began)
    return samples


async def official_sync(server: ApiServer, n: int) -> list[float]:
    # Not project dependencies: `pip install kubernetes kubernetes_asyncio` to run this.
    kubernetes: Any = importlib.import_module("kubernetes")
    client = kubernetes.config.new_client_from_config(str(server.kubeconfig))
    api = kubernetes.client.CustomObjectsApi(client)

    def pair(i: int) -> None:
        raw = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, NAME, _preload_content=False)
        obj = json.loads(raw.data)
        obj["spec"]["sequenceNumber"] = i
        put = api.replace_cluster_custom_object(
            GROUP, VERSION, PLURAL, NAME, obj, _preload_content=False
        )
        assert put.status == 200, put.data

    async def round_trip(i: int) -> None:
        await asyncio.to_thread(pair, i)

    try:
        return await _measure(n, round_trip)
    finally:
        client.close()


async def official_asyncio(server: ApiServer, n: int) -> list[float]:
    kubernetes_asyncio: Any = importlib.import_module("kubernetes_asyncio")
    client = await kubernetes_asyncio.config.new_client_from_config(str(server.kubeconfig))
    api = kubernetes_asyncio.client.CustomObjectsApi(client)

    async def round_trip(i: int) -> None:
        raw = await api.get_cluster_custom_object(
            GROUP, VERSION, PLURAL, NAME, _preload_content=False
        )
        obj = json.loads(await raw.read())
        obj["spec"]["sequenceNumber"] = i
        put = await api.replace_cluster_custom_object(
            GROUP, VERSION, PLURAL, NAME, obj, _preload_content=False
        )
        await put.read()

    try:
        return await _measure(n, round_trip)
    finally:
        await client.close()


async def plain_aiohttp(server: ApiServer, n: int) -> list[float]:
    import aiohttp

    context = ssl.create_default_context(cafile=str(server.ca_file))
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with aiohttp.ClientSession(
        base_url=server.url, headers=headers, connector=aiohttp.TCPConnector(ssl=context)
    ) as session:

        async def round_trip(i: int) -> None:
            async with session.get(PATH) as response:
                obj = json.loads(await response.read())
            obj["spec"]["sequenceNumber"] = i
            async with session.put(PATH, json=obj) as response:
                assert response.status == 200, await response.text()
                await response.read()

        return await _measure(n, round_trip)


async def libcalico_backend(server: ApiServer, n: int) -> list[float]:
    """The chosen client as the datastore uses it: get + update(revision) of a GlobalNetworkSet."""
    from libcalico.datastore.kubernetes import KubernetesDatastore

    key = "/calico/resources/v3/projectcalico.org/globalnetworksets/bench-set"
    store = KubernetesDatastore(str(server.kubeconfig))

    def value(i: int) -> bytes:
        doc = {"kind": "GlobalNetworkSet", "metadata": {"labels": {"i": str(i)}}, "spec": {}}
        return json.dumps({"apiVersion": "projectcalico.org/v3", **doc}).encode()

    await store.put(key, value(0))

    async def round_trip(i: int) -> None:
        kv = await store.get(key)
        await store.update(key, value(i), kv.mod_revision)

    try:
        return await _measure(n, round_trip)
    finally:
        await store.close()


def _import_time(module: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - began


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kube-client-bench-") as tmp:
        server = start(Path(tmp) / "apiserver")
        try:
            install_calico_crds(server)
            block: dict[str, Any] = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "IPAMBlock",
                "metadata": {"name": NAME},
                "spec": {"cidr": "10.0.0.0/26", "sequenceNumber": 0, "allocations": [None] * 64},
            }
            made = server.kubectl(["create", "-f", "-"], input=json.dumps(block))
            assert made.returncode == 0, made.stderr
            print(f"{n} x (GET + PUT with resourceVersion) of one IPAMBlock, sequential")
            for name, run in (
                ("kubernetes (sync, in a thread)", official_sync),
                ("kubernetes_asyncio", official_asyncio),
                ("plain HTTP/1.1 (aiohttp)", plain_aiohttp),
                ("libcalico KubernetesDatastore", libcalico_backend),
            ):
                print(f"  {name:34s} {_stats(await run(server, n))}")
            for module in ("kubernetes", "kubernetes_asyncio", "aiohttp"):
                print(f"  import {module:27s} {_import_time(module) * 1e3:6.0f} ms (fresh process)")
        finally:
            stop_server(server)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
