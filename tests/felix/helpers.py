"""Small helpers for Felix endpoint tests: datastore objects, requests, polling."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from calico.felix.v1 import endpoints_pb2 as pb
from libcalico.datastore import Datastore, KeyNotFoundError
from libcalico.datastore import keys as dskeys
from libcalico.resources.serialization import to_json_bytes

T = TypeVar("T")


async def put_namespace(ds: Datastore, name: str, labels: dict[str, str]) -> None:
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    await ds.put(dskeys.resource_key("core", "namespaces", name), to_json_bytes(obj))


async def put_pod(
    ds: Datastore,
    namespace: str,
    name: str,
    labels: dict[str, str],
    *,
    service_account: str = "default",
    ports: list[dict[str, Any]] | None = None,
) -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": "node-a",
            "serviceAccountName": service_account,
            "containers": [{"name": "main", "image": "busybox", "ports": ports or []}],
        },
    }
    await ds.put(dskeys.resource_key("core", "pods", name, namespace), to_json_bytes(obj))


async def get_wep(ds: Datastore, namespace: str, name: str) -> dict[str, Any] | None:
    key = dskeys.resource_key("projectcalico.org", "workloadendpoints", name, namespace)
    try:
        kv = await ds.get(key)
    except KeyNotFoundError:
        return None
    obj: dict[str, Any] = json.loads(kv.value)
    return obj


async def list_weps(ds: Datastore) -> list[dict[str, Any]]:
    result = await ds.list("/calico/resources/v3/projectcalico.org/workloadendpoints/")
    return [json.loads(kv.value) for kv in result.items]


def endpoint_id(
    pod: str, namespace: str = "default", container_id: str = "", interface: str = "eth0"
) -> pb.EndpointID:
    return pb.EndpointID(
        container_id=container_id or hashlib.sha1(pod.encode()).hexdigest()[:16],
        namespace=namespace,
        pod=pod,
        interface_name=interface,
    )


def setup_request(
    pod: str, netns: str, addresses: list[str], *, namespace: str = "default", **kw: Any
) -> pb.SetupEndpointRequest:
    return pb.SetupEndpointRequest(
        id=endpoint_id(pod, namespace, **kw), netns=netns, addresses=addresses
    )


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    within: float = 10.0,
) -> T:
    """Poll `probe` until `accept(value)`; AssertionError with the last value otherwise."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value!r}")
        await asyncio.sleep(0.05)
