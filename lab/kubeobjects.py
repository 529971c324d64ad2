"""Kubernetes kinds written to the lab's API server, doing what the missing parts of a
cluster would: the lab runs no kubelet, scheduler or controller-manager.

- Nodes are created by the lab (a kubelet registers its own), with addresses in status.
- A Namespace gets its `default` ServiceAccount at once (the controller-manager's job; the
  API server refuses a Pod whose service account does not exist).
- Pods carry `spec.nodeName` (no scheduler); after CNI ADD the lab writes `status.podIP(s)`
  and phase Running as the kubelet would. They are deleted with grace period 0: no kubelet
  will confirm a graceful deletion.
- Deleting a Namespace deletes what the lab puts in one (pods, NetworkPolicies, service
  accounts), then removes the `kubernetes` finalizer as the namespace controller would, so
  the name can be used again at once.

Writes are plain HTTP through libcalico's Kubernetes client (the same one the datastore
backend uses), as `admin`.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from libcalico.datastore.kube_client import MERGE_PATCH, KubeClient

# (apiVersion, kind) -> (path prefix of the group version, plural, namespaced)
KINDS: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "Namespace"): ("/api/v1", "namespaces", False),
    ("v1", "Node"): ("/api/v1", "nodes", False),
    ("v1", "Pod"): ("/api/v1", "pods", True),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): (
        "/apis/networking.k8s.io/v1",
        "networkpolicies",
        True,
    ),
    ("v1", "Service"): ("/api/v1", "services", True),
    ("discovery.k8s.io/v1", "EndpointSlice"): (
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        True,
    ),
}
# What a namespace is emptied of before it is deleted (the lab makes nothing else in one).
NAMESPACED_CONTENTS = (
    ("v1", "Pod"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
)
DEFAULT_SERVICE_ACCOUNT = "default"
CONFLICT_RETRIES = 10
NAMESPACE_GONE_TIMEOUT = 10.0


class KubeObjectError(RuntimeError):
    pass


def is_kube_kind(obj: Mapping[str, Any]) -> bool:
    """Whether an object (or a reference) is one of the Kubernetes kinds written to the API."""
    return (str(obj.get("apiVersion")), str(obj.get("kind"))) in KINDS


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise KubeObjectError(f"{obj.get('kind')}: metadata.name is missing")
    return str(meta.get("namespace") or ""), name


def path(api_version: str, kind: str, namespace: str = "", name: str = "") -> str:
    """The collection's path (no `name`) or the object's."""
    try:
        prefix, plural, namespaced = KINDS[(api_version, kind)]
    except KeyError:
        raise KubeObjectError(f"{api_version} {kind}: not a kind the lab writes there") from None
    if namespaced and not namespace:
        raise KubeObjectError(f"{kind} {name}: metadata.namespace is missing")
    where = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    return f"{where}/{name}" if name else where


def object_path(obj: Mapping[str, Any]) -> str:
    namespace, name = _meta(obj)
    return path(str(obj.get("apiVersion")), str(obj.get("kind")), namespace, name)


def node(name: str, address: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **dict(labels or {}),
            },
        },
        "spec": {},
    }


def service_account(namespace: str, name: str = DEFAULT_SERVICE_ACCOUNT) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace},
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeObjects:
    """The lab's writes of Kubernetes kinds, as `admin`; an async context manager."""

    def __init__(self, kubeconfig: str) -> None:
        self.client = KubeClient(kubeconfig)

    async def __aenter__(self) -> KubeObjects:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.client.close()

    async def get(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.client.get(object_path(obj))

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create, or replace what exists (its resourceVersion carried over; retried when
        another writer got in between). A Namespace also gets its default ServiceAccount."""
        body = {k: v for k, v in obj.items() if k != "status"}
        namespace, name = _meta(body)
        collection = path(str(body["apiVersion"]), str(body["kind"]), namespace)
        for _ in range(CONFLICT_RETRIES):
            created = await self.client.request("POST", collection, body)
            if created.status in (200, 201):
                result = created.body
                break
            if created.status != 409 or created.reason != "AlreadyExists":
                raise KubeObjectError(
                    f"create {body['kind']} {namespace}/{name}: {created.message}"
                )
            current = await self.client.get(f"{collection}/{name}")
            if current is None:
                continue  # deleted meanwhile: create again
            replacement = _replacement(current, body)
            replaced = await self.client.request("PUT", f"{collection}/{name}", replacement)
            if replaced.status == 200:
                result = replaced.body
                break
            if replaced.status not in (404, 409):
                raise KubeObjectError(
                    f"replace {body['kind']} {namespace}/{name}: {replaced.message}"
                )
        else:
            raise KubeObjectError(f"apply {body['kind']} {namespace}/{name}: kept conflicting")
        if body["kind"] == "Namespace":
            await self.ensure(service_account(name))
        return result

    async def ensure(self, obj: Mapping[str, Any]) -> None:
        """Create unless it exists (never changes an existing object)."""
        namespace, name = _meta(obj)
        created = await self.client.request(
            "POST", path(str(obj["apiVersion"]), str(obj["kind"]), namespace), dict(obj)
        )
        if created.status not in (200, 201, 409):
            raise KubeObjectError(f"create {obj['kind']} {namespace}/{name}: {created.message}")

    async def delete(self, ref: Mapping[str, Any]) -> bool:
        """Delete an object now; False when there was none. Namespaces are emptied first."""
        if ref.get("kind") == "Namespace":
            return await self.delete_namespace(_meta(ref)[1])
        deleted = await self.client.request(
            "DELETE", object_path(ref), {"gracePeriodSeconds": 0, "propagationPolicy": "Background"}
        )
        if deleted.status == 404:
            return False
        if deleted.status not in (200, 202):
            raise KubeObjectError(f"delete {ref.get('kind')} {_meta(ref)}: {deleted.message}")
        return True

    async def delete_namespace(self, name: str) -> bool:
        """What the namespace controller does for the kinds the lab makes: delete the
        contents, the namespace, then finalize it; returns once the name is free again."""
        ns_path = path("v1", "Namespace", "", name)
        if await self.client.get(ns_path) is None:
            return False
        # Services one by one: not every API server version serves their deletecollection.
        for service in await self.list("v1", "Service", name):
            await self.delete(service)
        for api_version, kind in (*NAMESPACED_CONTENTS, ("v1", "ServiceAccount")):
            gone = await self.client.request(
                "DELETE", path(api_version, kind, name), {"gracePeriodSeconds": 0}
            )
            if gone.status not in (200, 404):
                raise KubeObjectError(f"delete {kind}s in {name}: {gone.message}")
        deleted = await self.client.request("DELETE", ns_path, {"gracePeriodSeconds": 0})
        if deleted.status == 404:
            return True
        if deleted.status not in (200, 202):
            raise KubeObjectError(f"delete Namespace {name}: {deleted.message}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NAMESPACE_GONE_TIMEOUT
        while True:
            current = await self.client.get(ns_path)
            if current is None:
                return True
            if (current.get("spec") or {}).get("finalizers"):
                current["spec"]["finalizers"] = []
                finalized = await self.client.request("PUT", f"{ns_path}/finalize", current)
                if finalized.status not in (200, 404, 409):
                    raise KubeObjectError(f"finalize Namespace {name}: {finalized.message}")
            else:
                # Finalized: a second delete removes it (the namespace controller's last step).
                await self.client.request("DELETE", ns_path, {"gracePeriodSeconds": 0})
            if loop.time() > deadline:
                raise KubeObjectError(f"Namespace {name} still exists after finalizing")
            await asyncio.sleep(0.05)

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of a kind, in one namespace or in all."""
        prefix, plural, _namespaced = KINDS[(api_version, kind)]
        where = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
        listed = await self.client.request("GET", where)
        if listed.status != 200:
            raise KubeObjectError(f"list {kind}: {listed.message}")
        items = list((listed.body or {}).get("items") or [])
        for item in items:  # list items carry neither
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    async def set_status(self, ref: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
        """Replace what the status subresource holds (a Service's loadBalancer, as a cloud
        controller writes it); returns the object."""
        object_at = object_path(ref)
        for _ in range(CONFLICT_RETRIES):
            current = await self.client.get(object_at)
            if current is None:
                raise KubeObjectError(f"{ref.get('kind')} {_meta(ref)} does not exist")
            current["status"] = dict(status)
            replaced = await self.client.request("PUT", f"{object_at}/status", current)
            if replaced.status == 200:
                return dict(replaced.body)
            if replaced.status != 409:
                raise KubeObjectError(f"status of {object_at}: {replaced.message}")
        raise KubeObjectError(f"status of {object_at}: kept conflicting")

    async def set_labels(self, ref: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, str]:
        """Replace an object's labels (compare-and-swap on its resourceVersion, retried)."""
        object_at = object_path(ref)
        for _ in range(CONFLICT_RETRIES):
            current = await self.client.get(object_at)
            if current is None:
                raise KubeObjectError(f"{ref.get('kind')} {_meta(ref)} does not exist")
            current["metadata"]["labels"] = dict(labels)
            replaced = await self.client.request("PUT", object_at, current)
            if replaced.status == 200:
                return dict(labels)
            if replaced.status != 409:
                raise KubeObjectError(f"label {ref.get('kind')} {_meta(ref)}: {replaced.message}")
        raise KubeObjectError(f"label {ref.get('kind')} {_meta(ref)}: kept conflicting")

    async def labels(self, ref: Mapping[str, Any]) -> dict[str, str]:
        current = await self.client.get(object_path(ref))
        if current is None:
            raise KubeObjectError(f"{ref.get('kind')} {_meta(ref)} does not exist")
        return dict((current.get("metadata") or {}).get("labels") or {})

    async def set_node_status(self, name: str, address: str) -> None:
        """The addresses and Ready condition a kubelet reports for its Node."""
        now = _now()
        status = {
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "calico-lab node",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
        }
        await self._patch_status(path("v1", "Node", "", name), status)

    async def set_pod_running(
        self, namespace: str, name: str, ips: Sequence[str], host_ip: str
    ) -> None:
        """What a kubelet writes once the sandbox is up: phase Running, the pod's addresses."""
        now = _now()
        conditions = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        status: dict[str, Any] = {
            "phase": "Running",
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": "server",
                    "image": "calico-lab/server",
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": now,
        }
        if ips:
            status["podIP"] = ips[0]
            status["podIPs"] = [{"ip": ip} for ip in ips]
        await self._patch_status(path("v1", "Pod", namespace, name), status)

    async def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """The Ready and ContainersReady conditions a kubelet reports after a readiness
        probe passes or fails."""
        object_at = path("v1", "Pod", namespace, name)
        current = await self.client.get(object_at)
        if current is None:
            raise KubeObjectError(f"Pod {namespace}/{name} does not exist")
        now = _now()
        status = dict(current.get("status") or {})
        conditions = []
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Ready", "ContainersReady"):
                condition = {
                    **condition,
                    "status": "True" if ready else "False",
                    "lastTransitionTime": now,
                }
            conditions.append(condition)
        status["conditions"] = conditions
        for container in status.get("containerStatuses") or []:
            container["ready"] = ready
        await self._patch_status(object_at, status)

    async def _patch_status(self, object_at: str, status: Mapping[str, Any]) -> None:
        patched = await self.client.request(
            "PATCH", f"{object_at}/status", {"status": dict(status)}, content_type=MERGE_PATCH
        )
        if patched.status != 200:
            raise KubeObjectError(f"status of {object_at}: {patched.message}")


def _replacement(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """`wanted` as a replacement of `current`: its resourceVersion; a Pod keeps what the API
    server filled in (a pod's spec is mostly immutable), taking only the wanted labels."""
    meta = dict(wanted.get("metadata") or {})
    meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    if wanted.get("kind") == "Pod":
        out = dict(current)
        out["metadata"] = {**current["metadata"], "labels": meta.get("labels") or {}}
        return out
    out = {**dict(wanted), "metadata": meta}
    if wanted.get("kind") == "Service":
        out["spec"] = _service_keeping_allocations(current.get("spec") or {}, wanted["spec"])
    if wanted.get("kind") == "Namespace":
        out["spec"] = current.get("spec") or {}
    return out


def _service_keeping_allocations(
    current: Mapping[str, Any], wanted: Mapping[str, Any]
) -> dict[str, Any]:
    """A replaced Service keeps its cluster IP, and the node ports its new type still uses
    (matched by port and protocol), unless the new object names its own."""
    spec = dict(wanted)
    if not spec.get("clusterIP") and current.get("clusterIP"):
        spec["clusterIP"] = current["clusterIP"]
        spec["clusterIPs"] = current.get("clusterIPs") or [current["clusterIP"]]
    if spec.get("type", "ClusterIP") in ("NodePort", "LoadBalancer"):
        allocated = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in current.get("ports") or []
            if p.get("nodePort")
        }
        ports = []
        for port in spec.get("ports") or []:
            port = dict(port)
            old = allocated.get((port.get("port"), port.get("protocol", "TCP")))
            if old and not port.get("nodePort"):
                port["nodePort"] = old
            ports.append(port)
        spec["ports"] = ports
    return spec
