"""Typha's one datastore watch: a DatastoreSyncer over the common root of every syncer type's
prefixes, its batches routed into the per-type caches.

One watch serves every client and every syncer type, so the datastore's load does not grow
with the number of nodes. When the syncer fails outright (datastore down at start-up), the
feed starts a new one; its first batch is a complete listing, which each cache diffs against
what it holds, so clients only see what really changed meanwhile.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
from collections.abc import AsyncIterator, Sequence

from libcalico.datastore.api import Datastore, KeyValue, ListResult, TxnOp, WatchEvent
from libcalico.syncer.api import InSync, SyncerUpdate, Update
from libcalico.syncer.datastore import DatastoreSyncer
from services.typha.cache import SyncerCache

log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0


def common_root(prefixes: Sequence[str]) -> str:
    """The longest common prefix of `prefixes` that ends at a '/'."""
    # Character-wise on purpose: keys are strings, then cut back to the last '/'.
    common = os.path.commonprefix(list(prefixes))  # noqa: RUF071
    return common[: common.rfind("/") + 1]


def distinct_prefixes(prefixes: Sequence[str]) -> tuple[str, ...]:
    """The prefixes that no other prefix in `prefixes` already covers, each once."""
    unique = sorted(set(prefixes))
    return tuple(p for p in unique if not any(p != q and p.startswith(q) for q in unique))


class WatchCountingDatastore(Datastore):
    """Delegates to a datastore and counts the watches open through it (for status)."""

    def __init__(self, inner: Datastore) -> None:
        self.inner = inner
        self.open_watches = 0
        self.watches_any_prefix = inner.watches_any_prefix
        self.atomic_txn = inner.atomic_txn

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        self.open_watches += 1
        try:
            async for event in self.inner.watch(prefix, start_revision):
                yield event
        finally:
            self.open_watches -= 1

    async def get(self, key: str) -> KeyValue:
        return await self.inner.get(key)

    async def list(self, prefix: str) -> ListResult:
        return await self.inner.list(prefix)

    async def create(self, key: str, value: bytes) -> KeyValue:
        return await self.inner.create(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        return await self.inner.update(key, value, revision)

    async def put(self, key: str, value: bytes) -> KeyValue:
        return await self.inner.put(key, value)

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        return await self.inner.delete(key, revision)

    async def txn(self, ops: builtins.list[TxnOp]) -> builtins.list[KeyValue | None]:
        return await self.inner.txn(ops)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def close(self) -> None:
        await self.inner.close()


class DatastoreFeed:
    def __init__(self, datastore: Datastore, caches: Sequence[SyncerCache]) -> None:
        self.datastore = WatchCountingDatastore(datastore)
        self.caches = list(caches)
        prefixes = [p for cache in self.caches for p in cache.prefixes]
        self.root = common_root(prefixes)
        # One watch on the common root where the datastore serves any prefix (etcd); else
        # one per prefix the caches need (the kubernetes datastore: one per kind).
        self.watched: tuple[str, ...] = (
            (self.root,) if datastore.watches_any_prefix else distinct_prefixes(prefixes)
        )
        self.restarts = 0

    @property
    def open_watches(self) -> int:
        return self.datastore.open_watches

    async def run(self) -> None:
        """Feed the caches until cancelled."""
        while True:
            syncer = DatastoreSyncer(self.datastore, self.watched)
            first = True
            try:
                async for batch in syncer.updates():
                    self._route(batch, first)
                    first = False
                log.warning("datastore syncer ended; restarting it")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("datastore syncer failed; restarting it")
            finally:
                await syncer.close()
            self.restarts += 1
            await asyncio.sleep(RETRY_DELAY_S)

    def _route(self, batch: list[SyncerUpdate], complete: bool) -> None:
        for cache in self.caches:
            mine = [u for u in batch if not isinstance(u, InSync) and cache.covers(u.key)]
            if complete:
                cache.apply_snapshot([u for u in mine if isinstance(u, Update)])
                if any(isinstance(u, InSync) for u in batch):
                    cache.in_sync.set()
            elif mine:
                cache.apply(mine)

    async def close(self) -> None:
        await self.datastore.close()
