"""Kubernetes-owned kinds behind datastore keys: where each lives in the API, and the handler
contract the Kubernetes datastore dispatches their keys to.

Calico's own kinds are custom resources (kube_keys.py, kube_values.py). The kinds here are the
API server's: Namespaces, Pods, ServiceAccounts, NetworkPolicies, Services and EndpointSlices
read as they are (kube_core.py), and the Calico kinds derived from them: Node from the
Kubernetes Node (kube_nodes.py), WorkloadEndpoint from the Pod (kube_pods.py), the kns./ksa.
Profiles from Namespaces and ServiceAccounts (kube_profiles.py). Each is one `KindHandler`:
the datastore contract for the keys under one `<group>/<plural>/` prefix.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.api import DatastoreError, KeyValue, ListResult, WatchEvent
from libcalico.datastore.keys import GROUP_CORE, RESOURCE_PREFIX


@dataclass(frozen=True, slots=True)
class ApiKind:
    """One built-in API collection, and the key prefix it is read under."""

    group: str  # the key's group: "core", "networking.k8s.io", "projectcalico.org"
    plural: str  # the key's plural
    api_group_version: str  # "v1" or "networking.k8s.io/v1"
    resource: str  # the API's plural: "pods"
    kind: str  # "Pod"
    namespaced: bool

    @property
    def key_prefix(self) -> str:
        return f"{RESOURCE_PREFIX}{self.group}/{self.plural}/"

    def collection_path(self, namespace: str | None = None) -> str:
        base = "/api/v1" if self.api_group_version == "v1" else f"/apis/{self.api_group_version}"
        where = f"/namespaces/{namespace}" if namespace is not None else ""
        return f"{base}{where}/{self.resource}"

    def object_path(self, name: str, namespace: str | None) -> str:
        return f"{self.collection_path(namespace)}/{name}"


@dataclass(frozen=True, slots=True)
class KeyName:
    """What a key under a kind's prefix names: a name, and a namespace for namespaced kinds."""

    name: str
    namespace: str | None


def name_in_key(key: str, prefix: str, namespaced: bool) -> KeyName:
    """The name (and namespace) of `key` under `prefix`; DatastoreError naming the key."""
    if not key.startswith(prefix):
        raise DatastoreError(f"{key}: not under {prefix}")
    parts = key[len(prefix) :].split("/")
    if namespaced and len(parts) == 2 and all(parts):
        return KeyName(parts[1], parts[0])
    if not namespaced and len(parts) == 1 and parts[0]:
        return KeyName(parts[0], None)
    shape = "<namespace>/<name>" if namespaced else "<name>"
    raise DatastoreError(f"{key}: a key under {prefix} ends in {shape}")


def namespace_in_prefix(prefix: str, kind_prefix: str, namespaced: bool) -> str | None:
    """The namespace a list/watch prefix names completely (`.../pods/ns/`), else None."""
    rest = prefix[len(kind_prefix) :]
    if namespaced and "/" in rest:
        return rest.split("/", 1)[0]
    return None


def api_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def decode_json_object(key: str, value: bytes) -> dict[str, Any]:
    """A written value as a JSON object; DatastoreError naming the key otherwise."""
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatastoreError(f"{key}: value is not a JSON document: {error}") from error
    if not isinstance(doc, dict):
        raise DatastoreError(f"{key}: value is not a JSON object")
    return doc


def compact_json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class KindHandler(abc.ABC):
    """The datastore contract (api.Datastore) for the keys under one prefix (`prefix`)."""

    prefix: str

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue: ...

    @abc.abstractmethod
    async def list(self, prefix: str) -> ListResult: ...

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> KeyValue: ...

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, revision: int) -> KeyValue: ...

    @abc.abstractmethod
    async def put(self, key: str, value: bytes) -> KeyValue: ...

    @abc.abstractmethod
    async def delete(self, key: str, revision: int | None = None) -> KeyValue: ...

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]: ...

    def owns(self, key: str) -> bool:
        """Whether this handler serves `key` (all of its prefix unless it says otherwise)."""
        return key.startswith(self.prefix)


# Built-in collections the mappings read.
NAMESPACES = ApiKind(GROUP_CORE, "namespaces", "v1", "namespaces", "Namespace", False)
PODS = ApiKind(GROUP_CORE, "pods", "v1", "pods", "Pod", True)
SERVICE_ACCOUNTS = ApiKind(
    GROUP_CORE, "serviceaccounts", "v1", "serviceaccounts", "ServiceAccount", True
)
K8S_NETWORK_POLICIES = ApiKind(
    "networking.k8s.io",
    "networkpolicies",
    "networking.k8s.io/v1",
    "networkpolicies",
    "NetworkPolicy",
    True,
)
NODES = ApiKind(GROUP_CORE, "nodes", "v1", "nodes", "Node", False)
SERVICES = ApiKind(GROUP_CORE, "services", "v1", "services", "Service", True)
ENDPOINT_SLICES = ApiKind(
    "discovery.k8s.io",
    "endpointslices",
    "discovery.k8s.io/v1",
    "endpointslices",
    "EndpointSlice",
    True,
)

CORE_KINDS: tuple[ApiKind, ...] = (
    NAMESPACES,
    PODS,
    SERVICE_ACCOUNTS,
    K8S_NETWORK_POLICIES,
    SERVICES,
    ENDPOINT_SLICES,
)


class RepeatFilter:
    """Drops a watch stream's PUT whose value equals the last one sent for its key.

    Derived values change less often than their objects (a Pod's status updates leave its
    WorkloadEndpoint as it was); consumers need not see those. Per stream: a key this stream
    has not sent yet always passes.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def put_is_new(self, key: str, value: bytes) -> bool:
        digest = hash(value)
        if self._last.get(key) == digest:
            return False
        self._last[key] = digest
        return True

    def deleted(self, key: str) -> bool:
        """Forget `key`; whether this stream had sent it (so the DELETE is news)."""
        return self._last.pop(key, None) is not None


async def merge_streams(streams: Sequence[AsyncIterator[WatchEvent]]) -> AsyncIterator[WatchEvent]:
    """The events of several watches as they arrive (each stream stays in its own order).

    The first stream to fail ends the merge with its error; closing the merge closes them all.
    """
    if len(streams) == 1:
        async for event in streams[0]:
            yield event
        return
    queue: asyncio.Queue[WatchEvent | BaseException | None] = asyncio.Queue(maxsize=1000)

    async def pump(stream: AsyncIterator[WatchEvent]) -> None:
        try:
            async for event in stream:
                await queue.put(event)
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the consumer, raised there
            await queue.put(error)

    tasks = [asyncio.create_task(pump(stream)) for stream in streams]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await close_stream(stream)


async def close_stream(stream: AsyncIterator[WatchEvent]) -> None:
    """Close a watch stream that is an async generator (ending its request)."""
    closer = getattr(stream, "aclose", None)
    if closer is None:
        return
    # RuntimeError "already running": the event loop's shutdown is closing it at the same
    # time (a consumer that never closed its watch); it ends either way.
    with contextlib.suppress(RuntimeError):
        await closer()
