"""The datastore as the controllers see it: every write first checks the right to act.

The check is synchronous and immediately before the write is handed to the backend, so a
replica that was paused past its renew deadline refuses the first write it attempts after
resuming (NotLeaderError). A write the backend has not finished by the end of the right to act
is abandoned (cancelled, then NotLeaderError): a backend retrying an unreachable etcd must not
send the write later, when another replica may lead. Reads and watches pass through. Writes
and refusals are counted for the status RPC and the tests.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from libcalico.datastore import Datastore, KeyValue, ListResult, TxnOp, WatchEvent
from services.controllers.leader import Leadership, NotLeaderError

log = logging.getLogger(__name__)

T = TypeVar("T")


class GuardedDatastore(Datastore):
    def __init__(self, inner: Datastore, leadership: Leadership) -> None:
        self.inner = inner
        self.leadership = leadership
        self.writes = 0
        self.refused = 0

    async def _write(self, what: str, write: Awaitable[T]) -> T:
        try:
            left = self.leadership.check(what)
        except NotLeaderError:
            self.refused += 1
            log.warning("%s refused: not leading", what)
            if asyncio.iscoroutine(write):
                write.close()  # never started: nothing was sent
            raise
        self.writes += 1
        try:
            return await asyncio.wait_for(write, left)
        except TimeoutError:
            raise NotLeaderError(f"{what} abandoned: the lease lapsed before it finished") from None

    async def get(self, key: str) -> KeyValue:
        return await self.inner.get(key)

    async def list(self, prefix: str) -> ListResult:
        return await self.inner.list(prefix)

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        return self.inner.watch(prefix, start_revision)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def create(self, key: str, value: bytes) -> KeyValue:
        return await self._write(f"create {key}", self.inner.create(key, value))

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        return await self._write(f"update {key}", self.inner.update(key, value, revision))

    async def put(self, key: str, value: bytes) -> KeyValue:
        return await self._write(f"put {key}", self.inner.put(key, value))

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        return await self._write(f"delete {key}", self.inner.delete(key, revision))

    async def txn(self, ops: builtins.list[TxnOp]) -> builtins.list[KeyValue | None]:
        what = f"txn of {len(ops)} ops from {ops[0].key}" if ops else "empty txn"
        return await self._write(what, self.inner.txn(ops))

    async def close(self) -> None:
        await self.inner.close()
