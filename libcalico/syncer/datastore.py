"""A syncer over a datastore: list, then watch; on ResyncRequiredError list again and diff.

The syncer remembers the revision of every key it has sent. A resync re-lists each prefix
and emits only what changed since (Updates for changed keys, Deletes for keys gone), so a
consumer never keeps a stale leftover and never sees a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from libcalico.datastore.api import (
    Datastore,
    DatastoreError,
    EventType,
    ResyncRequiredError,
    WatchEvent,
)
from libcalico.datastore.keys import (
    GROUP_CALICO,
    GROUP_CORE,
    GROUP_DISCOVERY,
    GROUP_NETWORKING,
    ipam_block_prefix,
    resource_prefix,
)
from libcalico.runtime.tasks import cancel_and_wait
from libcalico.syncer.api import Delete, InSync, SyncerUpdate, Update

log = logging.getLogger(__name__)

# What Felix needs: the calculation graph's policy inputs, and for the VXLAN overlay the
# nodes (their VTEPs), the pools (their encapsulation) and the IPv4 IPAM blocks (which node
# each block is affine to: where its traffic goes).
FELIX_PREFIXES: tuple[str, ...] = (
    resource_prefix(GROUP_CALICO, "workloadendpoints"),
    resource_prefix(GROUP_CALICO, "networkpolicies"),
    resource_prefix(GROUP_CALICO, "globalnetworkpolicies"),
    resource_prefix(GROUP_CALICO, "networksets"),
    resource_prefix(GROUP_CALICO, "globalnetworksets"),
    resource_prefix(GROUP_CALICO, "profiles"),
    resource_prefix(GROUP_CORE, "namespaces"),
    resource_prefix(GROUP_CORE, "serviceaccounts"),
    resource_prefix(GROUP_CORE, "pods"),
    resource_prefix(GROUP_NETWORKING, "networkpolicies"),
    resource_prefix(GROUP_CALICO, "nodes"),
    resource_prefix(GROUP_CALICO, "ippools"),
    ipam_block_prefix(4),
    resource_prefix(GROUP_CALICO, "felixconfigurations"),
    # Services and EndpointSlices: Felix load-balances them (it replaces kube-proxy).
    resource_prefix(GROUP_CORE, "services"),
    resource_prefix(GROUP_DISCOVERY, "endpointslices"),
)

# Events arriving within this window are delivered as one batch (fewer dataplane applies).
_BATCH_WINDOW_S = 0.002
_MAX_BATCH = 1000
_RETRY_DELAY_S = 0.5


class DatastoreSyncer:
    """List + watch several key prefixes of one datastore, as one ordered update stream."""

    def __init__(self, datastore: Datastore, prefixes: Sequence[str] = FELIX_PREFIXES) -> None:
        self._datastore = datastore
        self._prefixes = tuple(prefixes)
        # Key -> mod revision of what we last sent.
        self._sent: dict[str, int] = {}
        self._queue: asyncio.Queue[SyncerUpdate | BaseException] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def updates(self) -> AsyncIterator[list[SyncerUpdate]]:
        snapshot, revisions = await self._list_all()
        yield [*snapshot, InSync()]
        for prefix, revision in zip(self._prefixes, revisions, strict=True):
            self._tasks.append(asyncio.create_task(self._watch(prefix, revision + 1)))
        try:
            while not self._closed:
                first = await self._queue.get()
                batch = [first]
                # Gather what arrives right behind it into the same batch.
                await asyncio.sleep(_BATCH_WINDOW_S)
                while not self._queue.empty() and len(batch) < _MAX_BATCH:
                    batch.append(self._queue.get_nowait())
                out: list[SyncerUpdate] = []
                for item in batch:
                    if isinstance(item, BaseException):
                        raise item
                    out.append(item)
                if out:
                    yield out
        finally:
            await self.close()

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._tasks)

    async def _list_all(self) -> tuple[list[SyncerUpdate], list[int]]:
        """List every prefix; return Updates for all keys and each prefix's list revision."""
        updates: list[SyncerUpdate] = []
        revisions: list[int] = []
        for prefix in self._prefixes:
            result = await self._datastore.list(prefix)
            revisions.append(result.revision)
            for kv in result.items:
                self._sent[kv.key] = kv.mod_revision
                updates.append(Update(kv.key, kv.value, kv.mod_revision))
        return updates, revisions

    async def _resync_prefix(self, prefix: str) -> int:
        """Re-list one prefix and queue the diff against what was sent; returns the revision."""
        result = await self._datastore.list(prefix)
        present: set[str] = set()
        for kv in result.items:
            present.add(kv.key)
            if self._sent.get(kv.key) != kv.mod_revision:
                self._sent[kv.key] = kv.mod_revision
                self._queue.put_nowait(Update(kv.key, kv.value, kv.mod_revision))
        for key in [k for k in self._sent if k.startswith(prefix) and k not in present]:
            del self._sent[key]
            self._queue.put_nowait(Delete(key, result.revision))
        return result.revision

    async def _watch(self, prefix: str, start_revision: int) -> None:
        try:
            await self._follow(prefix, start_revision)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # Never die silently: the consumer's `updates()` raises it (and restarts us).
            self._queue.put_nowait(exc)

    async def _follow(self, prefix: str, start_revision: int) -> None:
        revision = start_revision
        while not self._closed:
            try:
                async for event in self._datastore.watch(prefix, revision):
                    self._deliver(event)
                    revision = event.revision + 1
                return  # the datastore closed
            except ResyncRequiredError:
                log.info("watch on %s needs a resync; listing again", prefix)
            except DatastoreError as exc:
                # Unavailable, or refused for now: a kube-apiserver that has just started
                # answers 403 until its RBAC is loaded. Either way: list again, later.
                log.warning("watch on %s failed (%s); retrying", prefix, exc)
                await asyncio.sleep(_RETRY_DELAY_S)
            while not self._closed:
                try:
                    revision = await self._resync_prefix(prefix) + 1
                    break
                except DatastoreError as exc:
                    log.warning("re-list of %s failed (%s); retrying", prefix, exc)
                    await asyncio.sleep(_RETRY_DELAY_S)

    def _deliver(self, event: WatchEvent) -> None:
        if event.type is EventType.PUT:
            if self._sent.get(event.key) == event.revision:
                return  # already delivered (the list already covered it)
            self._sent[event.key] = event.revision
            self._queue.put_nowait(Update(event.key, event.value or b"", event.revision))
        else:
            if self._sent.pop(event.key, None) is None:
                return
            self._queue.put_nowait(Delete(event.key, event.revision))
