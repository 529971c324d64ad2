"""IPAM where a txn is ordered writes (the kubernetes datastore's semantics), without a server.

tests/fixtures/ordered_writes.py gives the embedded store the kubernetes backend's txn (ops in
order, reverted on failure) and can kill the "process" after any number of writes. Checked
here: the order of every kind of batch (handles that grow, blocks, handles that shrink; claims
and releases of blocks in Calico's steps), and, for a crash after each single write of those
batches, that the state left has no duplicate or inconsistent allocation (at worst a leak that
`ipam check` reports), that the node's next daemon carries on, and that the whole pool can still
be handed out exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, connect
from libcalico.ipam import keys
from libcalico.ipam.model import AffinityState, Block, BlockAffinity
from services.ipam.allocator import Allocator, AssignRequest
from services.ipam.check import Report, run_check
from services.ipam.errors import PoolsExhaustedError
from tests.fixtures.ordered_writes import Crashed, OrderedWrites
from tests.ipam.helpers import put_pool

POOL = "10.5.0.0/28"  # 4 blocks of 4 addresses
POOL_SIZE = 16
A, B = "node-a", "node-b"
Step = Callable[[Allocator], Awaitable[object]]


def net(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


@pytest_asyncio.fixture
async def inner(tmp_path: Path) -> AsyncIterator[Datastore]:
    store = await connect(DatastoreConfig(type="embedded", path=str(tmp_path / "calico.db")))
    await put_pool(store, "pool", POOL, block_size=30)
    try:
        yield store
    finally:
        await store.close()


async def assign(allocator: Allocator, handle: str) -> str:
    result = await allocator.auto_assign(AssignRequest(num_ipv4=1, handle_id=handle))
    return str(result.ipv4[0].ip)


# Each scenario: what runs before (no crash), and the step whose writes a crash interrupts.
async def setup_nothing(a: Allocator) -> None:
    return None


async def setup_one(a: Allocator) -> None:
    await assign(a, "h0")


async def setup_two_blocks(a: Allocator) -> None:
    for i in range(5):  # a full first block, and one address in a second
        await assign(a, f"h{i}")


async def three_at_once(a: Allocator) -> object:
    # One batch: three handles created in one step (concurrently), then the block (which has
    # room for exactly three more).
    return await asyncio.gather(*(assign(a, f"new{i}") for i in range(3)))


SCENARIOS: dict[str, tuple[Callable[[Allocator], Awaitable[None]], Step]] = {
    "claim-and-assign": (setup_nothing, lambda a: assign(a, "new")),
    "three-assignments-in-one-batch": (setup_one, three_at_once),
    "assign": (setup_one, lambda a: assign(a, "new")),
    "release": (setup_one, lambda a: a.release_by_handle("h0")),
    "release-emptying-a-block": (setup_two_blocks, lambda a: a.release_by_handle("h4")),
}


async def run_step(
    inner: Datastore, scenario: str, crash_after: int | None
) -> tuple[OrderedWrites, list[tuple[str, str]]]:
    """Set the scenario up, then run its step crashing after `crash_after` of its writes."""
    setup, step = SCENARIOS[scenario]
    store = OrderedWrites(inner)
    # Cluster reads cached: concurrent requests reach the committer's queue together.
    allocator = Allocator(store, A, cluster_ttl=60)
    try:
        await setup(allocator)
        before = len(store.writes)
        if crash_after is not None:
            store.crash_after = before + crash_after
            # A crash in a follow-up after the commit is logged, not raised: either way the
            # "process" is dead from there on.
            with contextlib.suppress(Crashed):
                await step(allocator)
            assert store.dead
        else:
            await step(allocator)
    finally:
        await allocator.close()
    return store, store.writes[before:]


def block(cidr: str) -> str:
    return keys.block_key(net(cidr))


def affinity(node: str, cidr: str) -> str:
    return keys.affinity_key(node, net(cidr))


def handle(handle_id: str) -> str:
    return keys.handle_key(handle_id)


async def test_batches_write_handles_that_grow_then_blocks_then_handles_that_shrink(
    inner: Datastore,
) -> None:
    # Node A's scan starts at a hash of its name: find its first block from a clean run.
    _, writes = await run_step(inner, "claim-and-assign", None)
    first = keys.cidr_from_block_key(writes[1][1])
    cidr = str(first)
    assert writes == [
        ("create", affinity(A, cidr)),  # claim: pending
        ("create", block(cidr)),
        ("update", affinity(A, cidr)),  # confirmed
        ("create", handle("new")),  # the batch: the handle first...
        ("update", block(cidr)),  # ...then the block holding its address
    ]


async def test_a_release_frees_the_address_before_its_handle_and_a_block_goes_in_steps(
    inner: Datastore,
) -> None:
    _, writes = await run_step(inner, "release-emptying-a-block", None)
    second = str(keys.cidr_from_block_key(writes[0][1]))
    assert writes == [
        ("update", block(second)),  # the address freed...
        ("delete", handle("h4")),  # ...then the handle
        ("update", affinity(A, second)),  # pendingDeletion: no longer owned
        ("delete", block(second)),  # at the revision the release wrote
        ("delete", affinity(A, second)),
    ]
    assert [kv.key for kv in (await inner.list(keys.affinity_prefix(A))).items] != []
    assert (await inner.list(keys.affinity_prefix(A, 4))).items[0].key != affinity(A, second)


async def test_one_batch_with_an_assignment_and_a_release_orders_both(inner: Datastore) -> None:
    store = OrderedWrites(inner)
    allocator = Allocator(store, A, cluster_ttl=60)  # as in run_step
    try:
        await assign(allocator, "old")
        await assign(allocator, "keep")
        before = len(store.writes)
        await asyncio.gather(assign(allocator, "new"), allocator.release_by_handle("old"))
        assert allocator.committer.batches == 3  # the two ran as one batch
        kinds = [(op, key.split("/")[4]) for op, key in store.writes[before:]]
        assert kinds == [("create", "handle"), ("update", "assignment"), ("delete", "handle")]
    finally:
        await allocator.close()


async def test_a_batch_creates_its_handles_in_one_step_before_its_block(inner: Datastore) -> None:
    _, writes = await run_step(inner, "three-assignments-in-one-batch", None)
    assert sorted(writes[:3]) == [("create", handle(f"new{i}")) for i in range(3)]
    assert [op for op, _ in writes[3:]] == ["update"] and "assignment" in writes[3][1]


def assert_consistent(report: Report) -> None:
    """What a crash may leave: leaks (the report's leaks and leaked handle counts), nothing
    else."""
    assert report.duplicates == [], report.duplicates
    assert report.out_of_block == [], report.out_of_block
    assert report.handle_mismatches == [], report.handle_mismatches
    assert report.missing_node_blocks == [] or all(
        item["node"] in (A, B) for item in report.missing_node_blocks
    )


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_a_crash_after_any_write_leaves_no_double_allocation(
    tmp_path: Path, scenario: str
) -> None:
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean = await connect(DatastoreConfig(type="embedded", path=str(clean_dir / "calico.db")))
    try:
        await put_pool(clean, "pool", POOL, block_size=30)
        _, writes = await run_step(clean, scenario, None)
    finally:
        await clean.close()
    assert writes, "the step writes something"
    for crash_after in range(len(writes)):
        where = tmp_path / f"crash-{crash_after}"
        where.mkdir()
        inner = await connect(DatastoreConfig(type="embedded", path=str(where / "calico.db")))
        try:
            await put_pool(inner, "pool", POOL, block_size=30)
            await run_step(inner, scenario, crash_after)
            assert_consistent(await run_check(inner))
            await carry_on_and_fill_the_pool(inner)
        finally:
            await inner.close()


async def carry_on_and_fill_the_pool(inner: Datastore) -> None:
    """The node's next daemon and another node hand out the rest of the pool: every address
    once; then the leaked handle counts are trimmed as `ipam release --from-report` does."""
    store = OrderedWrites(inner)
    a, b = Allocator(store, A), Allocator(store, B)
    try:
        handed: list[str] = []
        for i in range(POOL_SIZE + 1):
            for allocator in (a, b):
                with contextlib.suppress(PoolsExhaustedError):
                    handed.append(await assign(allocator, f"after-{allocator.node}-{i}"))
        report = await run_check(inner)
        assert_consistent(report)
        assert len(handed) == len(set(handed))
        assert report.summary["allocations"] == POOL_SIZE  # no address lost for good
        # Claims and releases the crash interrupted were settled by the node's next requests.
        for kv in (await inner.list(keys.HOST_PREFIX)).items:
            node, cidr = keys.parse_affinity_key(kv.key)
            state = BlockAffinity.from_bytes(node, cidr, kv.value).state
            assert state is AffinityState.CONFIRMED, (kv.key, state)
            held = Block.from_bytes((await inner.get(keys.block_key(cidr))).value)
            assert held.affine_node == node
        for item in report.leaked_handles:
            excess = item["handleCount"] - item["blockCount"]
            assert await a.trim_handle(item["handle"], net(item["block"]), excess) == excess
        after = await run_check(inner)
        assert after.leaked_handles == [] and after.handle_mismatches == []
    finally:
        await a.close()
        await b.close()
