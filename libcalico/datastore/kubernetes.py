"""The kubernetes datastore (DATASTORE_TYPE=kubernetes): Calico kinds as custom resources,
Kubernetes kinds as themselves, and the Calico kinds Calico derives from them.

Keys of Calico's own kinds map to custom resources in kube_keys.py, values in kube_values.py;
IPAM's keys (/calico/ipam/v2/...) to IPAMBlock/BlockAffinity/IPAMHandle/IPAMConfig in kube_ipam.py.
Keys of Kubernetes-owned kinds (core kinds, Node, WorkloadEndpoint, the kns./ksa. profiles)
go to their handlers (kube_kinds.py: KindHandler), each in its own module; `_handler` and
`_handlers_under` below are the whole dispatch.
mod_revision is the object's resourceVersion (kube-apiserver serves etcd's one revision counter);
compare-and-swap is a PUT or DELETE carrying it. HTTP, lists and watches are kube_client.py.
create_revision has no API equivalent: it is reported as the mod_revision of the read (no
caller outside the backends uses it).
The API has no multi-object transaction: a multi-key txn is ordered writes, reverted on a
failure (ordered_txn.py), so atomic_txn is False and IPAM orders its batches (KUBERNETES.md).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any

from libcalico.datastore import kube_ipam
from libcalico.datastore.api import (
    Datastore,
    DatastoreError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionConflictError,
    TxnOp,
    WatchEvent,
)
from libcalico.datastore.common import check_key, check_txn_ops
from libcalico.datastore.kube_client import KubeClient, KubeResponse, resource_version
from libcalico.datastore.kube_core import CoreObjects
from libcalico.datastore.kube_ipam import IpamRef, IpamScope
from libcalico.datastore.kube_keys import (
    CALICO_PREFIX,
    ObjectRef,
    Scope,
    collection_path,
    object_for_key,
    ref_of,
    scope_for_prefix,
)
from libcalico.datastore.kube_kinds import (
    CORE_KINDS,
    NAMESPACES,
    KindHandler,
    close_stream,
    merge_streams,
)
from libcalico.datastore.kube_nodes import CalicoNodes
from libcalico.datastore.kube_pods import PodEndpoints
from libcalico.datastore.kube_profiles import Profiles
from libcalico.datastore.kube_values import from_custom_resource, revision_of, to_custom_resource
from libcalico.datastore.ordered_txn import apply_in_order
from libcalico.resources.crds import CRD_API_VERSION

# ---- which mapping a key uses: IPAM's keys are kube_ipam.py's, the rest kube_keys.py's ----

Ref = ObjectRef | IpamRef


def _ref_for_key(key: str) -> Ref:
    return kube_ipam.ref_for_key(key) if kube_ipam.is_ipam_key(key) else object_for_key(key)


def _scope_for_prefix(prefix: str) -> Scope | IpamScope:
    if kube_ipam.is_ipam_key(prefix):
        return kube_ipam.scope_for_prefix(prefix)
    return scope_for_prefix(prefix)


def _ref_in_scope(scope: Scope | IpamScope, obj: dict[str, Any]) -> Ref | None:
    """The key an object listed or watched stands for (None: it has none; already logged)."""
    if isinstance(scope, IpamScope):
        return kube_ipam.ref_of(scope.crd, obj)
    return ref_of(scope.crd, obj)


def _to_object(ref: Ref, value: bytes) -> dict[str, Any]:
    if isinstance(ref, IpamRef):
        return kube_ipam.to_object(ref, value)
    return to_custom_resource(ref, value)


def _value_of(ref: Ref, obj: dict[str, Any]) -> bytes:
    if isinstance(ref, IpamRef):
        return kube_ipam.value_of(ref, obj)
    return from_custom_resource(ref, obj)


def _revision_of(ref: Ref, obj: dict[str, Any]) -> int:
    if isinstance(ref, IpamRef):
        return resource_version(obj, ref.key)
    return revision_of(ref, obj)


class KubernetesDatastore(Datastore):
    atomic_txn = False  # ordered writes, reverted on failure (ordered_txn.py)
    any_prefix = False  # one kind (or API group) per list/watch

    def __init__(self, kubeconfig: str | None = None) -> None:
        self._client = KubeClient(kubeconfig)
        self._owned: tuple[KindHandler, ...] = (
            *(CoreObjects(self._client, kind) for kind in CORE_KINDS),
            CalicoNodes(self._client),
            PodEndpoints(self._client),
            Profiles(self._client, self._list_custom_resources, self._watch_custom_resources),
        )

    # ---- dispatch: Kubernetes-owned kinds to their handlers, the rest to custom resources ----

    def _handler(self, key: str) -> KindHandler | None:
        return next((handler for handler in self._owned if handler.owns(key)), None)

    def _handlers_under(self, prefix: str) -> builtins.list[KindHandler]:
        """The owned kinds a list/watch prefix spans: every kind under it (`.../core/`), or
        the one kind it lies in."""
        under = [handler for handler in self._owned if handler.prefix.startswith(prefix)]
        if under and CALICO_PREFIX.startswith(prefix):
            raise DatastoreError(
                f"{prefix}: spans Calico's custom resources and Kubernetes-owned kinds; the "
                "kubernetes datastore lists and watches one kind (or one API group) at a time"
            )
        if under:
            return under
        handler = self._handler(prefix)
        return [handler] if handler is not None else []

    async def _request(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> KubeResponse:
        return await self._client.request(method, path, body, params)

    def _kv(self, ref: Ref, obj: dict[str, Any]) -> KeyValue:
        revision = _revision_of(ref, obj)
        return KeyValue(ref.key, _value_of(ref, obj), revision, revision)

    # ---- reads ----

    async def _get_object(self, ref: Ref) -> dict[str, Any] | None:
        response = await self._request("GET", ref.path)
        if response.status == 404:
            return None
        if response.status != 200:
            raise response.error(f"get {ref.key}")
        return response.body

    async def get(self, key: str) -> KeyValue:
        check_key(key)
        if (handler := self._handler(key)) is not None:
            return await handler.get(key)
        ref = _ref_for_key(key)
        obj = await self._get_object(ref)
        if obj is None:
            raise KeyNotFoundError(key)
        return self._kv(ref, obj)

    async def _list_scope(
        self, scope: Scope | IpamScope
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        try:
            return await self._client.list(scope.path)
        except DatastoreError as error:
            if "(404)" in str(error):
                raise DatastoreError(
                    f"list {scope.prefix}: {scope.crd.name} is not installed (k8s/crds)"
                ) from None
            raise

    async def list(self, prefix: str) -> ListResult:
        handlers = self._handlers_under(prefix)
        if not handlers:
            return await self._list_custom_resources(prefix)
        results = [await handler.list(prefix) for handler in handlers]
        if len(results) == 1:
            return results[0]
        items = sorted((kv for result in results for kv in result.items), key=lambda kv: kv.key)
        # Watching from the oldest list's revision replays a few events: harmless.
        return ListResult(items, min(result.revision for result in results))

    async def _list_custom_resources(self, prefix: str) -> ListResult:
        scope = _scope_for_prefix(prefix)
        objects, revision = await self._list_scope(scope)
        kvs = []
        for obj in objects:
            ref = _ref_in_scope(scope, obj)
            if ref is not None and ref.key.startswith(prefix):
                kvs.append(self._kv(ref, obj))
        kvs.sort(key=lambda kv: kv.key)
        return ListResult(kvs, revision)

    async def current_revision(self) -> int:
        response = await self._request(
            # Namespaces: always served, CRDs installed or not.
            "GET",
            NAMESPACES.collection_path(),
            params={"limit": "1"},
        )
        if response.status != 200:
            raise response.error("current revision (list namespaces)")
        return int((response.body.get("metadata") or {}).get("resourceVersion", 0))

    # ---- writes ----

    async def create(self, key: str, value: bytes) -> KeyValue:
        check_key(key)
        if (handler := self._handler(key)) is not None:
            return await handler.create(key, value)
        ref = _ref_for_key(key)
        body = _to_object(ref, value)
        response = await self._request("POST", collection_path(ref.crd, ref.namespace), body)
        if response.status == 409:
            raise KeyExistsError(key)
        if response.status == 404 and ref.namespace is not None:
            raise DatastoreError(f"create {key}: namespace {ref.namespace!r} does not exist")
        if response.status != 201 and response.status != 200:
            raise response.error(f"create {key}")
        return self._kv(ref, response.body)

    async def _actual_revision(self, ref: Ref) -> int | None:
        obj = await self._get_object(ref)
        return None if obj is None else _revision_of(ref, obj)

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        check_key(key)
        if (handler := self._handler(key)) is not None:
            return await handler.update(key, value, revision)
        ref = _ref_for_key(key)
        stored = await self._client.replace(
            key, ref.path, _to_object(ref, value), revision, lambda: self._actual_revision(ref)
        )
        return self._kv(ref, stored)

    async def put(self, key: str, value: bytes) -> KeyValue:
        # Custom resources allow no unconditional PUT: read the revision, then compare-and-swap.
        check_key(key)
        if (handler := self._handler(key)) is not None:
            return await handler.put(key, value)
        ref = _ref_for_key(key)
        while True:
            obj = await self._get_object(ref)
            try:
                if obj is None:
                    return await self.create(key, value)
                return await self.update(key, value, _revision_of(ref, obj))
            except (KeyExistsError, KeyNotFoundError, RevisionConflictError):
                continue  # raced with another writer: read again

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        check_key(key)
        if (handler := self._handler(key)) is not None:
            return await handler.delete(key, revision)
        ref = _ref_for_key(key)
        while True:
            obj = await self._get_object(ref)
            if obj is None:
                raise KeyNotFoundError(key)
            current = _revision_of(ref, obj)
            if revision is not None and current != revision:
                raise RevisionConflictError(key, revision, current)
            options = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": str(current)},
            }
            response = await self._request("DELETE", ref.path, options)
            if response.status in (200, 202):
                return self._kv(ref, obj)  # the value and revision it had when deleted
            if response.status == 404:
                raise KeyNotFoundError(key)
            if response.status != 409:
                raise response.error(f"delete {key}")
            if revision is not None:
                raise RevisionConflictError(key, revision, await self._actual_revision(ref))
            # Changed between our read and the delete: read again.

    async def txn(self, ops: builtins.list[TxnOp]) -> builtins.list[KeyValue | None]:
        # No transactions in the API: in order, reverted on a failure; not isolated.
        check_txn_ops(ops)
        return await apply_in_order(self, ops)

    # ---- watch ----

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        handlers = self._handlers_under(prefix)
        stream = (
            merge_streams([handler.watch(prefix, start_revision) for handler in handlers])
            if handlers
            else self._watch_custom_resources(prefix, start_revision)
        )
        try:
            async for event in stream:
                yield event
        finally:
            await close_stream(stream)

    async def _watch_custom_resources(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[WatchEvent]:
        scope = _scope_for_prefix(prefix)
        # Kubernetes sends what is strictly newer than resourceVersion; the contract includes
        # start_revision.
        async for event in self._client.watch(scope.path, start_revision - 1):
            if event.type == "BOOKMARK":
                continue
            ref = _ref_in_scope(scope, event.object)
            if ref is None or not ref.key.startswith(prefix):
                continue
            value = _value_of(ref, event.object)
            kind_of = EventType.DELETE if event.type == "DELETED" else EventType.PUT
            yield WatchEvent(kind_of, ref.key, value, event.resource_version)

    async def close(self) -> None:
        await self._client.close()


__all__ = ["CRD_API_VERSION", "KubernetesDatastore"]
