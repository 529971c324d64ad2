"""Kubernetes kinds kept as they are: Namespaces, Pods, ServiceAccounts, NetworkPolicies,
Services, EndpointSlices.

`/calico/resources/v3/core/{namespaces,pods,serviceaccounts,services}/...`,
`/calico/resources/v3/networking.k8s.io/networkpolicies/<ns>/<name>` and
`/calico/resources/v3/discovery.k8s.io/endpointslices/<ns>/<name>` are the API objects
themselves. A value is the object's JSON with its apiVersion and kind (a LIST's items carry
neither), without `metadata.resourceVersion` (the key's mod_revision, as with every backend)
and without `metadata.managedFields` (the server's field-ownership bookkeeping: large, and
no reader wants it). Everything else the server adds stays (defaults, `status`, the
`kubernetes.io/metadata.name` label of a Namespace, the service-account token volume of a
Pod); readers take the fields they know.

Writes send the object as given, minus the fields the server owns (uid, creationTimestamp,
resourceVersion, generation, managedFields); compare-and-swap is the resourceVersion, as for
custom resources. Two deletes differ from a plain DELETE because no controller-manager or
kubelet may be running (the lab has neither):
- a Pod is deleted with `gracePeriodSeconds: 0`: a graceful delete waits for a kubelet to
  confirm, and the datastore contract says the key is gone when delete returns;
- a Namespace still held by its `kubernetes` finalizer after the DELETE is finalized by the
  backend (what the namespace controller does once the namespace is empty): delete what is
  inside first.
Creating a Pod needs its namespace's `default` ServiceAccount (the ServiceAccount admission
plugin refuses the Pod otherwise; the controller-manager would make it).

A Service's `status` (its load balancer's ingress IPs, which Felix serves) is ignored by the
API server on the main POST/PUT: when the written value has a status the server did not keep,
the backend writes it through the status subresource right after, at the revision the main
write returned; the key's revision is then the status write's (a watch sees both writes, the
second with the status).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any

from libcalico.datastore.api import (
    DatastoreError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionConflictError,
    WatchEvent,
)
from libcalico.datastore.kube_client import KubeClient, resource_version
from libcalico.datastore.kube_kinds import (
    NAMESPACES,
    PODS,
    SERVICES,
    ApiKind,
    KeyName,
    KindHandler,
    api_metadata,
    compact_json,
    decode_json_object,
    name_in_key,
    namespace_in_prefix,
)

# Metadata the API server owns: never sent on a write (an update keeps the stored ones).
SERVER_OWNED_METADATA = (
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "managedFields",
    "selfLink",
)
_NOT_IN_VALUES = ("resourceVersion", "managedFields")
NAMESPACE_FINALIZER = "kubernetes"


def object_value(kind: ApiKind, obj: dict[str, Any]) -> bytes:
    """The datastore value of an API object (see the module note)."""
    metadata = {k: v for k, v in api_metadata(obj).items() if k not in _NOT_IN_VALUES}
    doc: dict[str, Any] = {"apiVersion": kind.api_group_version, "kind": kind.kind}
    doc["metadata"] = metadata
    for field, value in obj.items():
        if field not in ("apiVersion", "kind", "metadata"):
            doc[field] = value
    return compact_json(doc)


def object_body(kind: ApiKind, key: str, where: KeyName, value: bytes) -> dict[str, Any]:
    """The API object to send for a written value; DatastoreError naming key and field."""
    doc = decode_json_object(key, value)
    if doc.get("apiVersion", kind.api_group_version) != kind.api_group_version:
        raise DatastoreError(
            f"{key}: apiVersion {doc.get('apiVersion')!r} is not {kind.api_group_version}"
        )
    if doc.get("kind", kind.kind) != kind.kind:
        raise DatastoreError(
            f"{key}: kind {doc.get('kind')!r} does not match the key ({kind.kind})"
        )
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DatastoreError(f"{key}: metadata is not an object")
    if metadata.get("name", where.name) != where.name:
        raise DatastoreError(f"{key}: metadata.name {metadata.get('name')!r} differs from the key")
    if metadata.get("namespace", where.namespace) != where.namespace:
        raise DatastoreError(
            f"{key}: metadata.namespace {metadata.get('namespace')!r} differs from the key"
        )
    out_meta = {k: v for k, v in metadata.items() if k not in SERVER_OWNED_METADATA}
    out_meta["name"] = where.name
    if where.namespace is not None:
        out_meta["namespace"] = where.namespace
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    return {"apiVersion": kind.api_group_version, "kind": kind.kind, "metadata": out_meta, **body}


# Kinds whose `status` the main write ignores but a datastore value may carry (see module).
STATUS_WRITTEN_SEPARATELY = (SERVICES,)


class ApiObjects:
    """GET/POST/PUT/DELETE of one kind's objects with resourceVersion preconditions; shared by
    the handlers that read or write whole API objects."""

    def __init__(self, client: KubeClient, kind: ApiKind) -> None:
        self.client = client
        self.kind = kind

    def path(self, where: KeyName) -> str:
        return self.kind.object_path(where.name, where.namespace)

    async def read(self, where: KeyName) -> dict[str, Any] | None:
        return await self.client.get(self.path(where))

    def revision(self, obj: dict[str, Any]) -> int:
        return resource_version(obj, f"{self.kind.kind} {api_metadata(obj).get('name')}")

    async def actual_revision(self, where: KeyName) -> int | None:
        obj = await self.read(where)
        return None if obj is None else self.revision(obj)

    async def replace(
        self, key: str, where: KeyName, body: dict[str, Any], revision: int, subresource: str = ""
    ) -> dict[str, Any]:
        """PUT `body` if the object is at `revision` (to `subresource` when given, e.g.
        "status", which also takes metadata and needs a narrower RBAC grant); the stored
        object."""
        path = self.path(where) + (f"/{subresource}" if subresource else "")
        return await self.client.replace(
            key, path, body, revision, lambda: self.actual_revision(where)
        )

    async def list(self, namespace: str | None) -> tuple[builtins.list[dict[str, Any]], int]:
        return await self.client.list(self.kind.collection_path(namespace))


class CoreObjects(KindHandler):
    """One Kubernetes kind read and written as it is (see the module note)."""

    def __init__(self, client: KubeClient, kind: ApiKind) -> None:
        self.kind = kind
        self.prefix = kind.key_prefix
        self._objects = ApiObjects(client, kind)
        self._client = client

    def _where(self, key: str) -> KeyName:
        return name_in_key(key, self.prefix, self.kind.namespaced)

    def _key(self, obj: dict[str, Any]) -> str:
        metadata = api_metadata(obj)
        middle = f"{metadata.get('namespace')}/" if self.kind.namespaced else ""
        return f"{self.prefix}{middle}{metadata.get('name')}"

    def _kv(self, key: str, obj: dict[str, Any]) -> KeyValue:
        revision = self._objects.revision(obj)
        return KeyValue(key, object_value(self.kind, obj), revision, revision)

    async def get(self, key: str) -> KeyValue:
        obj = await self._objects.read(self._where(key))
        if obj is None:
            raise KeyNotFoundError(key)
        return self._kv(key, obj)

    async def list(self, prefix: str) -> ListResult:
        namespace = namespace_in_prefix(prefix, self.prefix, self.kind.namespaced)
        objects, revision = await self._objects.list(namespace)
        kvs = [self._kv(key, obj) for obj in objects if (key := self._key(obj)).startswith(prefix)]
        kvs.sort(key=lambda kv: kv.key)
        return ListResult(kvs, revision)

    async def create(self, key: str, value: bytes) -> KeyValue:
        where = self._where(key)
        body = object_body(self.kind, key, where, value)
        path = self.kind.collection_path(where.namespace)
        response = await self._client.request("POST", path, body)
        if response.status == 409:
            raise KeyExistsError(key)
        if response.status == 404 and where.namespace is not None:
            raise DatastoreError(f"create {key}: namespace {where.namespace!r} does not exist")
        if response.status not in (200, 201):
            raise response.error(f"create {key}")
        return self._kv(key, await self._with_status(key, where, body, response.body))

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        where = self._where(key)
        body = object_body(self.kind, key, where, value)
        stored = await self._objects.replace(key, where, body, revision)
        return self._kv(key, await self._with_status(key, where, body, stored))

    async def _with_status(
        self, key: str, where: KeyName, body: dict[str, Any], stored: dict[str, Any]
    ) -> dict[str, Any]:
        """`stored` with the written value's status, through the status subresource when the
        main write did not keep it (see the module note); the object as stored."""
        if self.kind not in STATUS_WRITTEN_SEPARATELY or "status" not in body:
            return stored
        if stored.get("status") == body["status"]:
            return stored
        status_body = {**stored, "status": body["status"]}
        return await self._objects.replace(
            key, where, status_body, self._objects.revision(stored), subresource="status"
        )

    async def put(self, key: str, value: bytes) -> KeyValue:
        where = self._where(key)
        while True:
            obj = await self._objects.read(where)
            try:
                if obj is None:
                    return await self.create(key, value)
                return await self.update(key, value, self._objects.revision(obj))
            except (KeyExistsError, KeyNotFoundError, RevisionConflictError):
                continue  # raced with another writer: read again

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        where = self._where(key)
        while True:
            obj = await self._objects.read(where)
            if obj is None:
                raise KeyNotFoundError(key)
            current = self._objects.revision(obj)
            if revision is not None and current != revision:
                raise RevisionConflictError(key, revision, current)
            options: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": str(current)},
            }
            if self.kind == PODS:
                options["gracePeriodSeconds"] = 0  # no kubelet to finish a graceful delete
            response = await self._client.request("DELETE", self._objects.path(where), options)
            if response.status in (200, 202):
                if self.kind == NAMESPACES:
                    await self._finalize_namespace(key, where)
                return self._kv(key, obj)
            if response.status == 404:
                raise KeyNotFoundError(key)
            if response.status != 409:
                raise response.error(f"delete {key}")
            if revision is not None:
                raise RevisionConflictError(
                    key, revision, await self._objects.actual_revision(where)
                )

    async def _finalize_namespace(self, key: str, where: KeyName) -> None:
        """Finish a namespace delete that waits for the namespace controller (see module)."""
        obj = await self._objects.read(where)
        if obj is None:
            return
        finalizers = (obj.get("spec") or {}).get("finalizers") or []
        if NAMESPACE_FINALIZER not in finalizers:
            return
        obj["spec"]["finalizers"] = [f for f in finalizers if f != NAMESPACE_FINALIZER]
        response = await self._client.request("PUT", f"{self._objects.path(where)}/finalize", obj)
        if response.status not in (200, 404, 409):  # 409: someone else finalized it first
            raise response.error(f"delete {key}: finalize the namespace")

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        namespace = namespace_in_prefix(prefix, self.prefix, self.kind.namespaced)
        path = self.kind.collection_path(namespace)
        async for event in self._client.watch(path, start_revision - 1):
            if event.type == "BOOKMARK":
                continue
            key = self._key(event.object)
            if not key.startswith(prefix):
                continue
            kind_of = EventType.DELETE if event.type == "DELETED" else EventType.PUT
            value = object_value(self.kind, event.object)
            yield WatchEvent(kind_of, key, value, event.resource_version)
