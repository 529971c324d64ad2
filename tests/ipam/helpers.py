"""Helpers for the IPAM tests: pools, IPAM configuration, nodes and workload endpoints,
written through the resource client (validated as calicoctl would)."""

from __future__ import annotations

from typing import Any

from libcalico.datastore import Datastore
from libcalico.resources import ResourceClient

API = "projectcalico.org/v3"


async def put_pool(
    ds: Datastore, name: str, cidr: str, block_size: int | None = None, **spec: Any
) -> None:
    body: dict[str, Any] = {"cidr": cidr, **spec}
    if block_size is not None:
        body["blockSize"] = block_size
    await ResourceClient(ds).apply(
        {"apiVersion": API, "kind": "IPPool", "metadata": {"name": name}, "spec": body}
    )


async def put_ipam_config(ds: Datastore, **spec: Any) -> None:
    await ResourceClient(ds).apply(
        {
            "apiVersion": API,
            "kind": "IPAMConfiguration",
            "metadata": {"name": "default"},
            "spec": spec,
        }
    )


async def put_node(ds: Datastore, name: str, labels: dict[str, str] | None = None) -> None:
    await ResourceClient(ds).apply(
        {
            "apiVersion": API,
            "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {},
        }
    )


async def put_workload_endpoint(
    ds: Datastore, namespace: str, pod: str, node: str, container_id: str, ip: str
) -> None:
    await ResourceClient(ds).apply(
        {
            "apiVersion": API,
            "kind": "WorkloadEndpoint",
            "metadata": {"name": f"{node}-k8s-{pod}-eth0", "namespace": namespace},
            "spec": {
                "node": node,
                "orchestrator": "k8s",
                "workload": "",
                "pod": pod,
                "endpoint": "eth0",
                "containerID": container_id,
                "interfaceName": "cali0123456789a",
                "ipNetworks": [f"{ip}/32"],
            },
        }
    )
