"""A Kubernetes collection kept in memory by list + watch, and the queues of its changed keys.

The informer lists the collection, then watches from the list's resourceVersion; a watch that
cannot resume (410 Gone, a broken stream) lists again and reports what differs from the cache,
so no change is ever missed, only coalesced. Every listener gets its own `KeyQueue`: the set
of keys changed since it last looked (a key changed twice is there once), and reads the
object's current state from the cache, as client-go's workqueues do. `synced` is set after
the first complete list: nothing may judge an object absent before that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from libcalico.datastore import DatastoreError, ResyncRequiredError
from libcalico.datastore.kube_client import KubeClient

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# (namespace, name); namespace "" for cluster-scoped kinds.
ObjectKey = tuple[str, str]


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class KeyQueue:
    """Keys changed since the consumer last took them."""

    def __init__(self) -> None:
        self._keys: set[ObjectKey] = set()
        self._event = asyncio.Event()

    def add(self, key: ObjectKey) -> None:
        self._keys.add(key)
        self._event.set()

    async def wait(self, seconds: float | None = None) -> bool:
        """Until a key is queued (True) or `seconds` pass (False)."""
        if self._keys:
            return True
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def take(self) -> set[ObjectKey]:
        """The queued keys (the queue empties); their state is the informer's cache."""
        keys, self._keys = self._keys, set()
        self._event.clear()
        return keys


class Informer:
    def __init__(self, client: KubeClient, path: str, name: str) -> None:
        self.client = client
        self.path = path  # the collection: /api/v1/pods, /apis/networking.k8s.io/v1/...
        self.name = name
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.revision = 0
        self.relists = 0
        self._queues: list[KeyQueue] = []

    def subscribe(self) -> KeyQueue:
        queue = KeyQueue()
        self._queues.append(queue)
        for key in self.objects:
            queue.add(key)
        return queue

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        return self.objects.get(key)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.objects.values()))

    def _notify(self, key: ObjectKey) -> None:
        for queue in self._queues:
            queue.add(key)

    async def _list(self) -> None:
        items, revision = await self.client.list(self.path)
        fresh = {object_key(obj): obj for obj in items}
        before = self.objects
        self.objects = fresh
        self.revision = revision
        for key in before.keys() | fresh.keys():
            old, new = before.get(key), fresh.get(key)
            if old is None or new is None or _version(old) != _version(new):
                self._notify(key)
        self.relists += 1
        self.synced.set()

    async def run(self) -> None:
        """List and watch until cancelled; errors are retried, never raised."""
        while True:
            try:
                await self._list()
                async for event in self.client.watch(self.path, self.revision):
                    self.revision = max(self.revision, event.resource_version)
                    if event.type == "BOOKMARK":
                        continue
                    key = object_key(event.object)
                    if event.type == "DELETED":
                        self.objects.pop(key, None)
                    else:
                        self.objects[key] = event.object
                    self._notify(key)
            except ResyncRequiredError as exc:
                log.info("%s: listing again: %s", self.name, exc)
            except DatastoreError as exc:
                log.warning("%s: list/watch failed, retrying: %s", self.name, exc)
                await asyncio.sleep(RETRY_SECONDS)


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion"))
