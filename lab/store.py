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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab import kubeobjects, objects
from lab.kubeobjects import KubeObjects, is_kube_kind
from lab.state import LabState
from libcalico.datastore import Datastore, connect
from libcalico.resources import ResourceClient, ResourceNotFoundError

CORE_KINDS = {"Namespace": "v1", "Pod": "v1", "ServiceAccount": "v1", "Node": "v1"}


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
            if self._to_api(ref):
                deleted += await self.kube().delete(ref)
            else:
                deleted += await objects.delete_if_present(await self.client(), [ref])
        return deleted

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


def _core_ref(kind: str, name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": CORE_KINDS.get(kind, "v1"), "kind": kind, "metadata": meta}


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
