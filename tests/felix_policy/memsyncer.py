"""A Syncer the test drives by hand: snapshot + InSync first, then whatever it sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from libcalico.syncer.api import InSync, SyncerUpdate


class MemorySyncer:
    def __init__(self, snapshot: list[SyncerUpdate]) -> None:
        self._queue: asyncio.Queue[list[SyncerUpdate] | None] = asyncio.Queue()
        self._queue.put_nowait([*snapshot, InSync()])

    def send(self, batch: list[SyncerUpdate]) -> None:
        self._queue.put_nowait(batch)

    async def updates(self) -> AsyncIterator[list[SyncerUpdate]]:
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            yield batch

    async def close(self) -> None:
        self._queue.put_nowait(None)

    def drained(self) -> bool:
        return self._queue.empty()
