"""Group commit: run waiting IPAM operations as one batch and write them in one transaction.

One worker per allocator takes every queued operation (up to `max_batch`), runs them one after
another against a shared Staging (each sees the earlier ones' changes; a failing one is rolled
back alone), and commits all their writes in a single compare-and-swap transaction. Within one
process there is therefore never a CAS conflict with itself; a conflict with another process
invalidates the failing key and the whole batch is re-run, at most `max_attempts` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from libcalico.datastore import KeyExistsError, KeyNotFoundError, RevisionConflictError
from services.ipam.errors import IpamError, TooManyConflictsError
from services.ipam.staging import Staging
from services.ipam.store import IpamStore

log = logging.getLogger(__name__)

R = TypeVar("R")
Operation = Callable[[Staging], Awaitable[Any]]
CONFLICTS = (RevisionConflictError, KeyExistsError, KeyNotFoundError)
# etcd refuses transactions of more than 128 operations by default; an assignment writes a
# block and a handle, so 48 operations stay well below.
DEFAULT_MAX_BATCH = 48
DEFAULT_MAX_ATTEMPTS = 100


class Committer:
    def __init__(
        self,
        store: IpamStore,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self._queue: asyncio.Queue[tuple[Operation, asyncio.Future[Any]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        # Statistics for tests and benchmarks.
        self.batches = 0
        self.conflicts = 0

    async def run(self, op: Callable[[Staging], Awaitable[R]]) -> R:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="ipam-committer")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(op, fut) for op, fut in batch if not fut.done()]
            try:
                await self._run_batch(live)
            except Exception as exc:  # a datastore outage or a bug: fail this batch only
                log.exception("IPAM batch failed")
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)

    async def _run_batch(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        self.batches += 1
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
