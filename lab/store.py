"""Where the lab's objects go: Kubernetes kinds to the API server when the lab runs one,
everything else (and, without an API server, everything) through libcalico's resource
client into the lab's datastore.

    async with LabStore(lab.state) as store:
        await store.apply_all([namespace, pod, policy, calico_policy])
        await store.set_labels("Pod", "a", "x", {"pod": "a"})

With an API server (`--datastore kubernetes`, or etcdv3 with `--kube-apiserver`), Namespaces,
Pods, ServiceAccounts, Nodes and Kubernetes NetworkPolicies are API objects as in a cluster
(lab/kubeobjects.py); the datastore learns of them through the kubernetes backend or through
calico-kube-controllers. Calico kinds always go through the resource client: into etcd, the
embedded file, or (kubernetes) Calico's custom resources. The Kubernetes API has no
multi-object transaction, so on that datastore a batch is written one object at a time, in
order.

Services and EndpointSlices (`put_object`, `list_objects`, `remove_object`) are kept as the
Kubernetes objects' JSON, as an API server stores them: with an API server they are API
objects (on etcd with `--kube-apiserver` calico-kube-controllers copies them into etcd, as it
does Pods); without one the lab is their API server and
writes them under their datastore keys as they are (Felix reads them from there). Checking
and defaulting them is lab/svcspec.py's, allocating cluster IPs lab/services.py's.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from lab import kubeobjects, objects
from lab.kubeobjects import KubeObjects, is_kube_kind
from lab.state import LabState
from libcalico.datastore import Datastore, KeyNotFoundError, connect
from libcalico.datastore.keys import resource_key, resource_prefix
from libcalico.resources import ResourceClient, ResourceNotFoundError, lookup_kind

CORE_KINDS = {"Namespace": "v1", "Pod": "v1", "ServiceAccount": "v1", "Node": "v1"}
# Kinds kept as the Kubernetes objects' JSON (put_object and friends).
OBJECT_KINDS = {("v1", "Service"), ("discovery.k8s.io/v1", "EndpointSlice")}


def is_object_kind(obj: Mapping[str, Any]) -> bool:
    return (str(obj.get("apiVersion")), str(obj.get("kind"))) in OBJECT_KINDS


class LabStore:
    def __init__(self, state: LabState) -> None:
        self.state = state
        self._datastore: Datastore | None = None
        self._client: ResourceClient | None = None
        self._kube: KubeObjects | None = None

    async def __aenter__(self) -> LabStore:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._datastore is not None:
            await self._datastore.close()
            self._datastore = self._client = None
        if self._kube is not None:
            await self._kube.client.close()
            self._kube = None

    @property
    def has_api(self) -> bool:
        return bool(self.state.kube)

    async def client(self) -> ResourceClient:
        """The resource client on the lab's datastore (opened on first use)."""
        if self._client is None:
            self._datastore = await connect(objects.datastore_config(self.state.datastore))
            self._client = ResourceClient(self._datastore)
        return self._client

    def kube(self) -> KubeObjects:
        if self._kube is None:
            self._kube = KubeObjects(str(self.state.kube["kubeconfig"]))
        return self._kube

    def _to_api(self, obj: Mapping[str, Any]) -> bool:
        return self.has_api and is_kube_kind(obj)

    # ---- writes ----

    async def apply_all(self, objs: Sequence[Mapping[str, Any]]) -> None:
        """Apply in order; consecutive objects for the same destination go together."""
        for obj in objs:
            if is_object_kind(obj):
                raise ValueError(f"{obj.get('kind')}: written by lab/services.py (put_object)")
        for to_api, run in _runs(objs, self._to_api):
            if to_api:
                for obj in run:
                    await self.kube().apply(obj)
            elif self.state.datastore.get("type") == "kubernetes":
                client = await self.client()
                for obj in run:
                    await client.apply_all([obj], "apply")
            else:
                await (await self.client()).apply_all(run, "apply")

    async def delete_all(self, refs: Sequence[Mapping[str, Any]]) -> None:
        """Delete every referenced object; ResourceNotFoundError when one does not exist."""
        for ref in refs:
            if is_object_kind(ref) and not await self.get_object(ref):
                raise ResourceNotFoundError(_describe(ref), _object_key(ref))
        for ref in [r for r in refs if is_object_kind(r)]:
            await self.remove_object(ref)
        refs = [r for r in refs if not is_object_kind(r)]
        for to_api, run in _runs(refs, self._to_api):
            if to_api:
                for ref in run:
                    if not await self.kube().delete(ref):
                        raise ResourceNotFoundError(_describe(ref), kubeobjects.object_path(ref))
            elif self.state.datastore.get("type") == "kubernetes":
                client = await self.client()
                for ref in run:
                    await client.delete_all([ref])
            else:
                await (await self.client()).delete_all(run)

    async def delete_if_present(self, refs: Sequence[Mapping[str, Any]]) -> int:
        """Delete each referenced object that exists; how many were deleted."""
        deleted = 0
        for ref in refs:
            if is_object_kind(ref):
                deleted += await self.remove_object(ref)
            elif self._to_api(ref):
                deleted += await self.kube().delete(ref)
            else:
                deleted += await objects.delete_if_present(await self.client(), [ref])
        return deleted

    # ---- Kubernetes objects kept as they are: Services, EndpointSlices ----

    def _api_objects(self) -> bool:
        return self.has_api

    async def get_object(self, ref: Mapping[str, Any]) -> dict[str, Any] | None:
        if self._api_objects():
            return await self.kube().get(ref)
        await self.client()
        assert self._datastore is not None
        try:
            kv = await self._datastore.get(_object_key(ref))
        except KeyNotFoundError:
            return None
        return dict(json.loads(kv.value))

    async def list_objects(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of the kind (in one namespace, or all), by (namespace, name)."""
        if self._api_objects():
            found = await self.kube().list(api_version, kind, namespace)
        else:
            await self.client()
            assert self._datastore is not None
            info = lookup_kind(kind)
            result = await self._datastore.list(resource_prefix(info.group, info.plural, namespace))
            found = [dict(json.loads(kv.value)) for kv in result.items]
        return sorted(
            found, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    async def put_object(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace; returns the object as stored (with an API server: as it
        allocated and defaulted it). A Service's `status` is written through the status
        subresource where there is one."""
        if self._api_objects():
            stored = await self.kube().apply(obj)
            if obj.get("kind") == "Service" and "status" in obj:
                stored = await self.kube().set_status(obj, obj["status"])
            return stored
        return await self._put_raw(obj)

    async def remove_object(self, ref: Mapping[str, Any]) -> bool:
        """Delete it; False when there was none."""
        if self._api_objects():
            return bool(await self.kube().delete(ref))
        await self.client()
        assert self._datastore is not None
        try:
            await self._datastore.delete(_object_key(ref))
        except KeyNotFoundError:
            return False
        return True

    async def _put_raw(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The object under its datastore key, as an API server would keep it (a uid and a
        creation time that survive replacement)."""
        await self.client()
        assert self._datastore is not None
        key = _object_key(obj)
        stored = json.loads(json.dumps(obj))
        meta = stored.setdefault("metadata", {})
        try:
            current = json.loads((await self._datastore.get(key)).value)
            old_meta = current.get("metadata") or {}
        except KeyNotFoundError:
            old_meta = {}
        meta.pop("resourceVersion", None)
        meta.setdefault("uid", old_meta.get("uid") or str(uuid.uuid4()))
        meta.setdefault(
            "creationTimestamp",
            old_meta.get("creationTimestamp")
            or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        await self._datastore.put(key, json.dumps(stored, sort_keys=True).encode())
        return dict(stored)

    # ---- labels ----

    async def labels(self, kind: str, name: str, namespace: str | None) -> dict[str, str]:
        ref = _core_ref(kind, name, namespace)
        if self._to_api(ref):
            return await self.kube().labels(ref)
        current = await (await self.client()).get(kind, name, namespace)
        return dict(current["metadata"].get("labels") or {})

    async def set_labels(
        self, kind: str, name: str, namespace: str | None, labels: Mapping[str, str]
    ) -> dict[str, str]:
        """Replace an object's labels (compare-and-swap on its version)."""
        ref = _core_ref(kind, name, namespace)
        if self._to_api(ref):
            return await self.kube().set_labels(ref, labels)
        await objects.set_labels(await self.client(), kind, name, namespace, labels)
        return dict(labels)

    # ---- what a kubelet or controller-manager would do ----

    async def ensure_namespace(self, name: str, labels: Mapping[str, str] | None) -> None:
        """Create the Namespace when missing; given labels replace an existing one's."""
        ref = _core_ref("Namespace", name, None)
        if self._to_api(ref):
            if labels is None and await self.kube().get(ref) is not None:
                return
            await self.kube().apply(objects.namespace(name, labels))
            return
        client = await self.client()
        try:
            await client.get("Namespace", name)
            if labels is None:
                return
        except ResourceNotFoundError:
            pass
        await client.apply_all([objects.namespace(name, labels)], "apply")

    async def set_pod_running(
        self, namespace: str, name: str, ips: Sequence[str], host_ip: str
    ) -> None:
        """A pod's status after its sandbox is up; only where Pods are API objects (the
        datastore's Pod objects have no status writer)."""
        if self.has_api:
            await self.kube().set_pod_running(namespace, name, ips, host_ip)

    async def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """A pod's Ready condition; only where Pods are API objects."""
        if self.has_api:
            await self.kube().set_pod_ready(namespace, name, ready)


def _core_ref(kind: str, name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": CORE_KINDS.get(kind, "v1"), "kind": kind, "metadata": meta}


def _object_key(ref: Mapping[str, Any]) -> str:
    meta = ref.get("metadata") or {}
    info = lookup_kind(str(ref.get("kind")))
    return resource_key(info.group, info.plural, str(meta.get("name")), meta.get("namespace"))


def _describe(ref: Mapping[str, Any]) -> str:
    meta = ref.get("metadata") or {}
    where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
    return f"{ref.get('kind')}({where}{meta.get('name')})"


def _runs(
    objs: Sequence[Mapping[str, Any]], to_api: Any
) -> list[tuple[bool, list[Mapping[str, Any]]]]:
    """Consecutive objects grouped by destination, order kept."""
    runs: list[tuple[bool, list[Mapping[str, Any]]]] = []
    for obj in objs:
        where = bool(to_api(obj))
        if runs and runs[-1][0] == where:
            runs[-1][1].append(obj)
        else:
            runs.append((where, [obj]))
    return runs
