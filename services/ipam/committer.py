"""Group commit: run waiting IPAM operations as one batch and write them in one transaction.

One worker per allocator takes every queued operation (up to `max_batch`), runs them one after
another against a shared Staging (each sees the earlier ones' changes; a failing one is rolled
back alone), and commits all their writes in a single compare-and-swap transaction. Within one
process there is therefore never a CAS conflict with itself; a conflict with another process
invalidates the failing key and the whole batch is re-run, at most `max_attempts` times.

On a datastore whose txn is ordered writes (kubernetes) the batch's writes come in the order
Staging.txn_ops gives, one write per touched block and handle (a block carries all of the
batch's allocations in it), and the follow-ups operations queued (Staging.after_commit) run
once the batch is written, before the callers get their answers.

Linger: a transaction costs the daemon and the datastore far more CPU than one more operation
in it, so when recent batches had several operations (concurrent callers, typically each
waiting for its previous reply to come back) the worker waits, idle and at most `linger`
seconds, until as many are queued as the largest recent batch. A lone caller never waits.
When the wait runs out, or the worker was idle for a while, the expectation drops to what
actually came, so a drop in load costs at most one linger.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from libcalico.ipam.staging import Staging
from libcalico.ipam.store import IpamStore
from libcalico.ipam.transact import CONFLICTS
from services.ipam.errors import IpamError, TooManyConflictsError

log = logging.getLogger(__name__)

R = TypeVar("R")
Operation = Callable[[Staging], Awaitable[Any]]
# etcd refuses transactions of more than 128 operations by default; an assignment writes a
# block and a handle, so 48 operations stay well below.
DEFAULT_MAX_BATCH = 48
DEFAULT_MAX_ATTEMPTS = 100
# How long a batch may wait for the operations recent batches suggest are coming.
DEFAULT_LINGER_SECONDS = 0.01
# Batch sizes remembered, and how long idle before they are forgotten.
_RECENT_BATCHES = 8
_IDLE_FORGET_SECONDS = 0.05

Queued = tuple[Operation, "asyncio.Future[Any]"]


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class Committer:
    def __init__(
        self,
        store: IpamStore,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        linger: float = DEFAULT_LINGER_SECONDS,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.linger = linger
        self._queue: collections.deque[Queued] = collections.deque()
        # Set when the worker waits and the queue reaches `_wanted` operations.
        self._ready: asyncio.Future[None] | None = None
        self._wanted = 1
        self._recent: collections.deque[int] = collections.deque(maxlen=_RECENT_BATCHES)
        self._idle_since = 0.0
        self._worker: asyncio.Task[None] | None = None
        # Statistics for tests and benchmarks.
        self.batches = 0
        self.operations = 0
        self.conflicts = 0

    async def run(self, op: Callable[[Staging], Awaitable[R]]) -> R:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="ipam-committer")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._ready is not None and len(self._queue) >= self._wanted:
            _wake(self._ready)
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _wait_for(self, count: int, limit: float | None) -> bool:
        """Until `count` operations are queued (True) or `limit` seconds pass (False)."""
        if len(self._queue) >= count:
            return True
        loop = asyncio.get_running_loop()
        self._ready, self._wanted = loop.create_future(), count
        # A timer, not asyncio.timeout(): no task or cancellation on this hot path.
        timer = None if limit is None else loop.call_later(limit, _wake, self._ready)
        try:
            await self._ready
        finally:
            if timer is not None:
                timer.cancel()
            self._ready, self._wanted = None, 1
        return len(self._queue) >= count

    async def _next_batch(self) -> list[Queued]:
        loop = asyncio.get_running_loop()
        await self._wait_for(1, None)
        if loop.time() - self._idle_since > _IDLE_FORGET_SECONDS:
            self._recent.clear()
        expected = min(max(self._recent, default=1), self.max_batch)
        if expected > 1 and self.linger > 0 and not await self._wait_for(expected, self.linger):
            self._recent.clear()  # they did not come: expect only what did
        batch: list[Queued] = []
        while self._queue and len(batch) < self.max_batch:
            batch.append(self._queue.popleft())
        self._recent.append(len(batch))
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            live = [(op, fut) for op, fut in batch if not fut.done()]
            try:
                await self._run_batch(live)
            except Exception as exc:  # a datastore outage or a bug: fail this batch only
                log.exception("IPAM batch failed")
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
            self._idle_since = asyncio.get_running_loop().time()

    async def _run_batch(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.operations += len(batch)
        for attempt in range(self.max_attempts):
            staging = Staging(self.store)
            outcomes: list[tuple[bool, Any]] = []
            for op, _ in batch:
                savepoint = staging.savepoint()
                try:
                    outcomes.append((True, await op(staging)))
                except IpamError as exc:
                    staging.rollback(savepoint)
                    outcomes.append((False, exc))
            ops, objects = staging.txn_ops()
            try:
                await self.store.commit(ops, objects)
            except CONFLICTS as exc:
                self.conflicts += 1
                log.debug("IPAM commit conflict (attempt %d): %s", attempt + 1, exc)
                if attempt >= 2:
                    # Back off a little so racing daemons stop colliding in lock-step.
                    await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
                continue
            await staging.run_follow_ups()
            for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            return
        error = TooManyConflictsError(
            f"gave up after {self.max_attempts} compare-and-swap conflicts; retry the request"
        )
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(error)
