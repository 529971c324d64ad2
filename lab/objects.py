"""The resource objects the lab writes: the pool, the nodes, BGP configuration and peers,
Namespaces and Pods.

A runtime learns about pods from the Kubernetes API; the lab plays the API server and writes
Namespace and Pod objects into the datastore before it runs the CNI plugin, so Felix finds the
pod's labels and named ports as it would in a cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from libcalico.config import DatastoreConfig
from libcalico.datastore import connect
from libcalico.resources import ResourceClient, ResourceNotFoundError


def datastore_config(data: Mapping[str, Any]) -> DatastoreConfig:
    """The lab's datastore record (type, path, etcd_endpoints, kubeconfig) as libcalico's."""
    return DatastoreConfig(
        type=str(data.get("type", "embedded")),
        path=str(data.get("path", "")),
        etcd_endpoints=tuple(data.get("etcd_endpoints") or ()),
        kubeconfig=str(data["kubeconfig"]) if data.get("kubeconfig") else None,
    )


def datastore_env(data: Mapping[str, Any]) -> dict[str, str]:
    """The environment a daemon or calicoctl needs to reach the lab's datastore (on the
    kubernetes datastore: KUBECONFIG too)."""
    config = datastore_config(data)
    env = {
        "DATASTORE_TYPE": config.type,
        "CALICO_DATASTORE_PATH": config.path,
        "ETCD_ENDPOINTS": ",".join(config.etcd_endpoints),
    }
    if config.kubeconfig:
        env["KUBECONFIG"] = config.kubeconfig
    return env


@asynccontextmanager
async def resource_client(data: Mapping[str, Any]) -> AsyncIterator[ResourceClient]:
    datastore = await connect(datastore_config(data))
    try:
        yield ResourceClient(datastore)
    finally:
        await datastore.close()


def ippool(name: str, cidr: str, block_size: int = 26, vxlan_mode: str = "Never") -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {
            "cidr": cidr,
            "blockSize": block_size,
            "ipipMode": "Never",
            "vxlanMode": vxlan_mode,
            "natOutgoing": False,
            "nodeSelector": "all()",
        },
    }


def node(
    name: str,
    ipv4_address: str = "",
    labels: Mapping[str, str] | None = None,
    route_reflector_cluster_id: str = "",
) -> dict[str, Any]:
    """A Calico Node; `ipv4_address` ("10.66.0.11/24") is where its BGP speaker peers."""
    bgp: dict[str, Any] = {}
    if ipv4_address:
        bgp["ipv4Address"] = ipv4_address
    if route_reflector_cluster_id:
        bgp["routeReflectorClusterID"] = route_reflector_cluster_id
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **dict(labels or {})},
        },
        "spec": {"bgp": bgp} if bgp else {},
    }


def bgp_configuration(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPConfiguration",
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def bgp_peer(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPPeer",
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def namespace(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    # kubernetes.io/metadata.name is added by the resource model, as the API server does.
    meta = {"name": name, "labels": dict(labels or {})}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def port_name(port: int, protocol: str) -> str:
    return f"serve-{port}-{protocol.lower()}"


def pod(
    namespace_name: str,
    name: str,
    node_name: str,
    labels: Mapping[str, str],
    serve: Sequence[tuple[str, int]],
) -> dict[str, Any]:
    """A Pod with one container declaring a named port per served (protocol, port)."""
    ports = [
        {"name": port_name(port, proto), "containerPort": port, "protocol": proto.upper()}
        for proto, port in serve
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace_name, "labels": dict(labels)},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "server", "image": "calico-lab/server", "ports": ports}],
        },
    }


def ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A reference (apiVersion, kind, name, namespace) to an object."""
    metadata = obj.get("metadata") or {}
    out_meta = {"name": metadata.get("name")}
    if metadata.get("namespace"):
        out_meta["namespace"] = metadata["namespace"]
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": out_meta}


async def delete_if_present(client: ResourceClient, refs: Sequence[Mapping[str, Any]]) -> int:
    """Delete each referenced object that exists; returns how many were deleted."""
    deleted = 0
    for one in refs:
        try:
            await client.delete_all([one])
            deleted += 1
        except ResourceNotFoundError:
            pass
    return deleted


async def set_labels(
    client: ResourceClient,
    kind: str,
    name: str,
    namespace_name: str | None,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """Replace an object's labels (read-modify-write, compare-and-swap on its version)."""
    obj = await client.get(kind, name, namespace_name)
    obj["metadata"]["labels"] = dict(labels)
    return await client.update(obj)
