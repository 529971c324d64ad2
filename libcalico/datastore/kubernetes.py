"""The kubernetes datastore (DATASTORE_TYPE=kubernetes): Calico kinds as custom resources.

Keys map to API objects in kube_keys.py, values to custom resources in kube_values.py.
mod_revision is the object's resourceVersion (kube-apiserver serves etcd's one revision counter);
compare-and-swap is a PUT or DELETE carrying it. The HTTP client is plain HTTP/1.1 on aiohttp
(KUBERNETES.md has the measurements behind that choice). create_revision has no API equivalent:
it is reported as the mod_revision of the read (no caller outside the backends uses it).
Multi-key transactions are refused for now (issue 12): the API has none.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from libcalico.datastore.api import (
    Datastore,
    DatastoreError,
    DatastoreUnavailableError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    ResyncRequiredError,
    RevisionConflictError,
    TxnOp,
    TxnOpType,
    WatchEvent,
)
from libcalico.datastore.common import check_key, check_txn_ops
from libcalico.datastore.kube_keys import (
    ObjectRef,
    Scope,
    collection_path,
    object_for_key,
    ref_of,
    scope_for_prefix,
)
from libcalico.datastore.kube_values import from_custom_resource, revision_of, to_custom_resource
from libcalico.datastore.kubeconfig import KubeConnection, load_kubeconfig
from libcalico.resources.crds import CALICO_CRDS, CRD_API_VERSION

LIST_PAGE = 500
WATCH_SECONDS = 300  # the server ends a watch after this; we reconnect from the last revision
REQUEST_TIMEOUT = 30.0
_REVISION_KIND = next(crd for crd in CALICO_CRDS if crd.kind == "ClusterInformation")


class _Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", ""))

    @property
    def message(self) -> str:
        return str(self.body.get("message", self.body))


class KubernetesDatastore(Datastore):
    def __init__(self, kubeconfig: str | None = None) -> None:
        self._connection: KubeConnection = load_kubeconfig(kubeconfig)
        self._session: aiohttp.ClientSession | None = None
        self._watches: set[aiohttp.ClientResponse] = set()
        self._closed = False

    # ---- HTTP ----

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise DatastoreError("datastore is closed")
        if self._session is None:
            headers = {"Accept": "application/json"}
            if self._connection.token:
                headers["Authorization"] = f"Bearer {self._connection.token}"
            connector = aiohttp.TCPConnector(ssl=self._connection.ssl_context or False)
            self._session = aiohttp.ClientSession(headers=headers, connector=connector)
        return self._session

    async def _request(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> _Response:
        url = self._connection.server + path
        try:
            async with self._open().request(
                method,
                url,
                json=body,
                params=params,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise DatastoreUnavailableError(
                f"kube-apiserver {self._connection.server}: {method} {path}: {error}"
            ) from error
        try:
            decoded = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            decoded = {"message": raw[:200].decode(errors="replace")}
        if status >= 500:
            raise DatastoreUnavailableError(f"kube-apiserver {method} {path}: {status} {decoded}")
        if status in (401, 403):
            raise DatastoreError(f"kube-apiserver refused {method} {path}: {status} {decoded}")
        return _Response(status, decoded if isinstance(decoded, dict) else {})

    def _kv(self, ref: ObjectRef, obj: dict[str, Any]) -> KeyValue:
        revision = revision_of(ref, obj)
        return KeyValue(ref.key, from_custom_resource(ref, obj), revision, revision)

    @staticmethod
    def _unexpected(what: str, response: _Response) -> DatastoreError:
        return DatastoreError(f"{what}: {response.status} {response.reason}: {response.message}")

    # ---- reads ----

    async def _get_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        response = await self._request("GET", ref.path)
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._unexpected(f"get {ref.key}", response)
        return response.body

    async def get(self, key: str) -> KeyValue:
        check_key(key)
        ref = object_for_key(key)
        obj = await self._get_object(ref)
        if obj is None:
            raise KeyNotFoundError(key)
        return self._kv(ref, obj)

    async def _list_scope(self, scope: Scope) -> tuple[builtins.list[dict[str, Any]], int]:
        items: builtins.list[dict[str, Any]] = []
        revision: int | None = None
        params = {"limit": str(LIST_PAGE)}
        while True:
            response = await self._request("GET", scope.path, params=params)
            if response.status == 404:
                raise DatastoreError(
                    f"list {scope.prefix}: {scope.crd.name} is not installed (k8s/crds)"
                )
            if response.status != 200:
                raise self._unexpected(f"list {scope.prefix}", response)
            metadata = response.body.get("metadata") or {}
            if revision is None:
                revision = int(metadata.get("resourceVersion", 0))
            items.extend(response.body.get("items") or [])
            token = metadata.get("continue")
            if not token:
                return items, revision
            params = {"limit": str(LIST_PAGE), "continue": str(token)}

    async def list(self, prefix: str) -> ListResult:
        scope = scope_for_prefix(prefix)
        objects, revision = await self._list_scope(scope)
        kvs = []
        for obj in objects:
            ref = ref_of(scope.crd, obj)
            if ref.key.startswith(prefix):
                kvs.append(self._kv(ref, obj))
        kvs.sort(key=lambda kv: kv.key)
        return ListResult(kvs, revision)

    async def current_revision(self) -> int:
        response = await self._request(
            "GET", collection_path(_REVISION_KIND, None), params={"limit": "1"}
        )
        if response.status != 200:
            raise self._unexpected("current revision (list clusterinformations)", response)
        return int((response.body.get("metadata") or {}).get("resourceVersion", 0))

    # ---- writes ----

    async def create(self, key: str, value: bytes) -> KeyValue:
        check_key(key)
        ref = object_for_key(key)
        body = to_custom_resource(ref, value)
        response = await self._request("POST", collection_path(ref.crd, ref.namespace), body)
        if response.status == 409:
            raise KeyExistsError(key)
        if response.status == 404 and ref.namespace is not None:
            raise DatastoreError(f"create {key}: namespace {ref.namespace!r} does not exist")
        if response.status != 201 and response.status != 200:
            raise self._unexpected(f"create {key}", response)
        return self._kv(ref, response.body)

    async def _actual_revision(self, ref: ObjectRef) -> int | None:
        obj = await self._get_object(ref)
        return None if obj is None else revision_of(ref, obj)

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        check_key(key)
        ref = object_for_key(key)
        body = to_custom_resource(ref, value)
        body["metadata"]["resourceVersion"] = str(revision)
        response = await self._request("PUT", ref.path, body)
        if response.status == 404:
            raise KeyNotFoundError(key)
        if response.status == 409:
            actual = await self._actual_revision(ref)
            if actual is None:
                raise KeyNotFoundError(key)
            raise RevisionConflictError(key, revision, actual)
        if response.status != 200:
            raise self._unexpected(f"update {key}", response)
        return self._kv(ref, response.body)

    async def put(self, key: str, value: bytes) -> KeyValue:
        # Custom resources allow no unconditional PUT: read the revision, then compare-and-swap.
        check_key(key)
        ref = object_for_key(key)
        while True:
            obj = await self._get_object(ref)
            try:
                if obj is None:
                    return await self.create(key, value)
                return await self.update(key, value, revision_of(ref, obj))
            except (KeyExistsError, KeyNotFoundError, RevisionConflictError):
                continue  # raced with another writer: read again

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        check_key(key)
        ref = object_for_key(key)
        while True:
            obj = await self._get_object(ref)
            if obj is None:
                raise KeyNotFoundError(key)
            current = revision_of(ref, obj)
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
                raise self._unexpected(f"delete {key}", response)
            if revision is not None:
                raise RevisionConflictError(key, revision, await self._actual_revision(ref))
            # Changed between our read and the delete: read again.

    async def txn(self, ops: builtins.list[TxnOp]) -> builtins.list[KeyValue | None]:
        check_txn_ops(ops)
        if len(ops) != 1:
            keys = ", ".join(op.key for op in ops)
            raise DatastoreError(
                f"txn of {len(ops)} keys ({keys}): multi-key transactions are not mapped to the "
                "Kubernetes API yet (issue 12; KUBERNETES.md says how they will be)"
            )
        op = ops[0]
        if op.type is TxnOpType.CREATE:
            return [await self.create(op.key, op.value)]
        if op.type is TxnOpType.UPDATE:
            assert op.revision is not None  # check_txn_ops
            return [await self.update(op.key, op.value, op.revision)]
        await self.delete(op.key, op.revision)
        return [None]

    # ---- watch ----

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        scope = scope_for_prefix(prefix)
        # Kubernetes sends what is strictly newer than resourceVersion; the contract includes
        # start_revision. "0" would mean "any", so never ask for less than 1.
        last = max(start_revision - 1, 1)
        while not self._closed:
            params = {
                "watch": "1",
                "resourceVersion": str(last),
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_SECONDS),
            }
            try:
                response = await self._open().get(
                    self._connection.server + scope.path,
                    params=params,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT),
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                if self._closed:
                    return
                raise DatastoreUnavailableError(f"watch {prefix}: {error}") from error
            except DatastoreError:
                return  # closed meanwhile
            self._watches.add(response)
            try:
                if response.status == 410:
                    raise ResyncRequiredError(f"watch {prefix}: revision {last} is compacted")
                if response.status != 200:
                    text = await response.text()
                    raise DatastoreError(f"watch {prefix}: {response.status} {text[:300]}")
                while True:
                    try:
                        line = await response.content.readline()
                    except (aiohttp.ClientError, OSError) as error:
                        if self._closed:
                            return
                        raise ResyncRequiredError(
                            f"watch {prefix}: stream broke: {error}"
                        ) from error
                    if not line:
                        break  # the server ended the watch: reconnect from `last`
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise ResyncRequiredError(f"watch {prefix}: {obj.get('message')}")
                        raise DatastoreError(f"watch {prefix}: {obj.get('message', obj)}")
                    ref = ref_of(scope.crd, obj)
                    revision = revision_of(ref, obj)
                    last = max(last, revision)
                    if kind == "BOOKMARK" or not ref.key.startswith(prefix):
                        continue
                    value = from_custom_resource(ref, obj)
                    kind_of = EventType.DELETE if kind == "DELETED" else EventType.PUT
                    yield WatchEvent(kind_of, ref.key, value, revision)
            finally:
                self._watches.discard(response)
                response.close()

    async def close(self) -> None:
        self._closed = True
        for response in builtins.list(self._watches):
            response.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["CRD_API_VERSION", "KubernetesDatastore"]
