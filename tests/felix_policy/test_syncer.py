"""DatastoreSyncer: snapshot then InSync then deltas; a resync emits only the difference."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from libcalico.datastore.embedded import EmbeddedDatastore
from libcalico.syncer import DatastoreSyncer, Delete, InSync, SyncerUpdate, Update

PREFIX = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/"


async def next_batch(stream: AsyncIterator[list[SyncerUpdate]]) -> list[SyncerUpdate]:
    return await asyncio.wait_for(anext(stream), 5)


async def test_snapshot_insync_then_deltas(tmp_path: Path) -> None:
    store = EmbeddedDatastore(str(tmp_path / "db"))
    await store.put(PREFIX + "a", b'{"n": 1}')
    await store.put(PREFIX + "b", b'{"n": 2}')
    syncer = DatastoreSyncer(store, [PREFIX])
    stream = syncer.updates()
    try:
        first = await next_batch(stream)
        assert isinstance(first[-1], InSync)
        assert {u.key for u in first if isinstance(u, Update)} == {PREFIX + "a", PREFIX + "b"}

        await store.put(PREFIX + "c", b'{"n": 3}')
        await store.delete(PREFIX + "a")
        seen: list[SyncerUpdate] = []
        while len(seen) < 2:
            seen += await next_batch(stream)
        assert isinstance(seen[0], Update) and seen[0].key == PREFIX + "c"
        assert isinstance(seen[1], Delete) and seen[1].key == PREFIX + "a"
    finally:
        await syncer.close()
        await store.close()


async def test_resync_emits_only_the_difference(tmp_path: Path) -> None:
    store = EmbeddedDatastore(str(tmp_path / "db"))
    await store.put(PREFIX + "keep", b"{}")
    await store.put(PREFIX + "gone", b"{}")
    syncer = DatastoreSyncer(store, [PREFIX])
    stream = syncer.updates()
    try:
        await next_batch(stream)
        # As if the watch broke while these happened: re-list and diff.
        await store.delete(PREFIX + "gone")
        await store.put(PREFIX + "new", b"{}")
        await asyncio.sleep(0.2)  # let the live watch deliver them first
        delivered: list[SyncerUpdate] = []
        while len(delivered) < 2:
            delivered += await next_batch(stream)
        await syncer._resync_prefix(PREFIX)  # nothing changed since: nothing queued
        assert syncer._queue.empty()
        syncer._sent[PREFIX + "stale"] = 1  # a key we sent that the store no longer has
        await syncer._resync_prefix(PREFIX)
        batch = await next_batch(stream)
        assert [type(u) for u in batch] == [Delete]
        assert batch[0].key == PREFIX + "stale"  # type: ignore[union-attr]
    finally:
        await syncer.close()
        await store.close()
