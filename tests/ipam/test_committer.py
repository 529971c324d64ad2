"""The group committer's linger: concurrent callers share a transaction, a lone one never waits."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from libcalico.ipam.staging import Staging
from libcalico.ipam.store import IpamStore
from services.ipam.committer import Committer


class CountingStore:
    """Stands in for IpamStore: counts commits, each taking a little time like a datastore."""

    def __init__(self) -> None:
        self.commits = 0

    async def commit(self, ops: list[Any], objects: list[Any]) -> None:
        self.commits += 1
        await asyncio.sleep(0.001)


def committer(linger: float) -> Committer:
    return Committer(cast(IpamStore, CountingStore()), linger=linger)


async def nothing(stg: Staging) -> int:
    return 1


async def closed_loop(c: Committer, callers: int, rounds: int) -> None:
    """`callers` clients, each sending its next operation after its previous reply and a
    think time of its own (so, without linger, they drift into separate batches)."""

    async def caller(i: int) -> None:
        for _ in range(rounds):
            await c.run(nothing)
            await asyncio.sleep(0.002 * i)

    await asyncio.gather(*(caller(i) for i in range(callers)))


async def test_concurrent_callers_share_batches_with_linger() -> None:
    lingering, eager = committer(linger=5.0), committer(linger=0.0)
    try:
        await closed_loop(lingering, 8, 5)
        await closed_loop(eager, 8, 5)
    finally:
        await lingering.close()
        await eager.close()
    assert lingering.operations == eager.operations == 40
    # Every round waits for all eight callers: one batch per round.
    assert lingering.batches == 5
    assert eager.batches > 10


async def test_lone_caller_never_waits() -> None:
    c = committer(linger=5.0)
    try:
        start = time.monotonic()
        for _ in range(20):
            assert await c.run(nothing) == 1
        assert time.monotonic() - start < 2.0
    finally:
        await c.close()
    assert c.batches == 20


async def test_expectation_drops_when_callers_do_not_come() -> None:
    c = committer(linger=0.3)
    try:
        await asyncio.gather(*(c.run(nothing) for _ in range(8)))  # a batch of 8
        # At once a single caller: the worker expects 8 and waits out the linger once...
        start = time.monotonic()
        await c.run(nothing)
        waited = time.monotonic() - start
        # ...and not again: the expectation dropped to what came.
        start = time.monotonic()
        await c.run(nothing)
        again = time.monotonic() - start
    finally:
        await c.close()
    assert waited >= 0.25
    assert again < 0.2


async def test_expectation_is_forgotten_after_idle_time() -> None:
    c = committer(linger=5.0)
    try:
        await asyncio.gather(*(c.run(nothing) for _ in range(8)))
        await asyncio.sleep(0.2)  # idle longer than the committer remembers batch sizes
        start = time.monotonic()
        await c.run(nothing)
        assert time.monotonic() - start < 2.0
    finally:
        await c.close()
