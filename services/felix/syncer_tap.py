"""A syncer whose batches are also shown to observers: one datastore stream feeds both the
policy engine and the VXLAN manager (each would otherwise open its own watch, or its own Typha
connection)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from libcalico.syncer.api import Syncer, SyncerUpdate

Observer = Callable[[list[SyncerUpdate]], None]


class ObservedSyncer:
    def __init__(self, inner: Syncer, observers: Sequence[Observer]) -> None:
        self._inner = inner
        self._observers = tuple(observers)

    async def updates(self) -> AsyncIterator[list[SyncerUpdate]]:
        async for batch in self._inner.updates():
            for observe in self._observers:
                observe(batch)  # observers only record the batch: they never block the stream
            yield batch

    async def close(self) -> None:
        await self._inner.close()
