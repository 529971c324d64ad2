"""A small asyncio client for the Kubernetes API: JSON requests, paginated lists, watches.

The layer under the kubernetes datastore (`kubernetes.py`, which maps keys to objects) and
calico-kube-controllers (which reads Kubernetes kinds and leases). It knows paths, JSON and
HTTP status codes, nothing about Calico. Plain HTTP/1.1 on aiohttp: KUBERNETES.md has the
measurements behind that choice.

Errors: connection failures, timeouts and 5xx raise DatastoreUnavailableError; 401/403 raise
DatastoreError with the server's message; any other status is returned for the caller to map.
A watch raises ResyncRequiredError on 410 Gone (as the status or as an ERROR event) and when
its stream breaks; the server ending a watch (timeoutSeconds) reconnects from the last
resourceVersion seen, bookmarks included.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from libcalico.datastore.api import (
    DatastoreError,
    DatastoreUnavailableError,
    KeyNotFoundError,
    ResyncRequiredError,
    RevisionConflictError,
)
from libcalico.datastore.kubeconfig import KubeConnection, load_kubeconfig

LIST_PAGE = 500
WATCH_SECONDS = 300  # the server ends a watch after this; we reconnect from the last revision
REQUEST_TIMEOUT = 30.0
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class KubeResponse:
    status: int
    body: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", ""))

    @property
    def message(self) -> str:
        return str(self.body.get("message", self.body))

    def error(self, what: str) -> DatastoreError:
        """The DatastoreError for an unexpected answer to `what`."""
        return DatastoreError(f"{what}: {self.status} {self.reason}: {self.message}")


@dataclass(frozen=True, slots=True)
class KubeEvent:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK, and the object."""

    type: str
    object: dict[str, Any]
    resource_version: int


def resource_version(obj: dict[str, Any], what: str = "object") -> int:
    """metadata.resourceVersion as an integer (kube-apiserver over etcd 3 serves etcd's
    revision); DatastoreError naming the object when it is not one."""
    metadata = obj.get("metadata") or {}
    raw = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    try:
        return int(str(raw))
    except ValueError:
        raise DatastoreError(f"{what}: resourceVersion {raw!r} is not an integer") from None


class KubeClient:
    def __init__(self, kubeconfig: str | None = None) -> None:
        self.connection: KubeConnection = load_kubeconfig(kubeconfig)
        self._session: aiohttp.ClientSession | None = None
        self._watches: set[aiohttp.ClientResponse] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise DatastoreError("kubernetes client is closed")
        if self._session is None:
            headers = {"Accept": "application/json"}
            if self.connection.token:
                headers["Authorization"] = f"Bearer {self.connection.token}"
            connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context or False)
            self._session = aiohttp.ClientSession(headers=headers, connector=connector)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> KubeResponse:
        url = self.connection.server + path
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": content_type} if data is not None else None
        try:
            async with self._open().request(
                method,
                url,
                data=data,
                headers=headers,
                params=params,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise DatastoreUnavailableError(
                f"kube-apiserver {self.connection.server}: {method} {path}: {error}"
            ) from error
        try:
            decoded = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            decoded = {"message": raw[:200].decode(errors="replace")}
        if status >= 500:
            raise DatastoreUnavailableError(f"kube-apiserver {method} {path}: {status} {decoded}")
        if status in (401, 403):
            raise DatastoreError(f"kube-apiserver refused {method} {path}: {status} {decoded}")
        return KubeResponse(status, decoded if isinstance(decoded, dict) else {})

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        response = await self.request("GET", path)
        if response.status == 404:
            return None
        if response.status != 200:
            raise response.error(f"get {path}")
        return response.body

    async def replace(
        self,
        key: str,
        path: str,
        body: dict[str, Any],
        revision: int,
        actual_revision: Callable[[], Awaitable[int | None]],
    ) -> dict[str, Any]:
        """PUT `body` (its metadata.resourceVersion set to `revision`): the stored object. The
        datastore contract's errors for `key`: KeyNotFoundError when the object is gone (also
        between a 409 and the re-read), RevisionConflictError with the object's revision now."""
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(revision)}}
        response = await self.request("PUT", path, body)
        if response.status == 404:
            raise KeyNotFoundError(key)
        if response.status == 409:
            actual = await actual_revision()
            if actual is None:
                raise KeyNotFoundError(key)
            raise RevisionConflictError(key, revision, actual)
        if response.status != 200:
            raise response.error(f"update {key}")
        return response.body

    async def list(
        self, path: str, params: dict[str, str] | None = None
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """Every item of a collection (paginated on one snapshot) and the list's revision.

        A 404 (a kind the server does not serve) raises DatastoreError naming the path.
        """
        items: builtins.list[dict[str, Any]] = []
        revision: int | None = None
        query = {**(params or {}), "limit": str(LIST_PAGE)}
        while True:
            response = await self.request("GET", path, params=query)
            if response.status == 404:
                raise DatastoreError(f"list {path}: the API server does not serve it (404)")
            if response.status != 200:
                raise response.error(f"list {path}")
            metadata = response.body.get("metadata") or {}
            if revision is None:
                revision = int(metadata.get("resourceVersion", 0))
            items.extend(response.body.get("items") or [])
            token = metadata.get("continue")
            if not token:
                return items, revision
            query = {**(params or {}), "limit": str(LIST_PAGE), "continue": str(token)}

    async def watch(
        self, path: str, since: int, params: dict[str, str] | None = None
    ) -> AsyncIterator[KubeEvent]:
        """Events newer than resourceVersion `since` (at least 1: 0 would mean "any"),
        bookmarks included, until close(); see the module note for errors."""
        last = max(since, 1)
        while not self._closed:
            query = {
                **(params or {}),
                "watch": "1",
                "resourceVersion": str(last),
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_SECONDS),
            }
            try:
                response = await self._open().get(
                    self.connection.server + path,
                    params=query,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT),
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                if self._closed:
                    return
                raise DatastoreUnavailableError(f"watch {path}: {error}") from error
            except DatastoreError:
                return  # closed meanwhile
            self._watches.add(response)
            try:
                if response.status == 410:
                    raise ResyncRequiredError(f"watch {path}: revision {last} is compacted")
                if response.status >= 500:
                    text = await response.text()
                    raise DatastoreUnavailableError(f"watch {path}: {response.status} {text[:300]}")
                if response.status != 200:
                    text = await response.text()
                    raise DatastoreError(f"watch {path}: {response.status} {text[:300]}")
                while True:
                    try:
                        line = await response.content.readline()
                    except (aiohttp.ClientError, OSError) as error:
                        if self._closed:
                            return
                        raise ResyncRequiredError(f"watch {path}: stream broke: {error}") from error
                    if not line:
                        break  # the server ended the watch: reconnect from `last`
                    event = json.loads(line)
                    kind, obj = str(event.get("type")), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise ResyncRequiredError(f"watch {path}: {obj.get('message')}")
                        raise DatastoreError(f"watch {path}: {obj.get('message', obj)}")
                    revision = resource_version(obj, f"watch {path}")
                    last = max(last, revision)
                    yield KubeEvent(kind, obj, revision)
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
