"""One staged IPAM operation, committed as one compare-and-swap transaction, retried on conflict.

For callers that change IPAM data now and then (calico-kube-controllers); calico-ipamd batches
many operations per transaction with its group committer instead. The operation is re-run
from fresh reads after every conflict, so it must decide from what it reads through the
staging, never from what it saw before.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from libcalico.datastore import KeyExistsError, KeyNotFoundError, RevisionConflictError
from libcalico.ipam.staging import Staging
from libcalico.ipam.store import IpamStore

R = TypeVar("R")

# What a compare-and-swap transaction raises when another writer got there first.
CONFLICTS = (RevisionConflictError, KeyExistsError, KeyNotFoundError)
DEFAULT_ATTEMPTS = 100


class TooManyConflictsError(RuntimeError):
    """The operation lost every one of its attempts to concurrent writers."""


async def run_staged(
    store: IpamStore,
    op: Callable[[Staging], Awaitable[R]],
    attempts: int = DEFAULT_ATTEMPTS,
) -> R:
    for attempt in range(attempts):
        staging = Staging(store)
        result = await op(staging)
        ops, objects = staging.txn_ops()
        try:
            await store.commit(ops, objects)
        except CONFLICTS:
            if attempt >= 2:
                # Racing writers back off a little so they stop colliding in lock-step.
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
            continue
        await staging.run_follow_ups()
        return result
    raise TooManyConflictsError(f"IPAM change gave up after {attempts} conflicting attempts")
