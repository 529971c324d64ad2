"""IPAM semantics against both real datastores (embedded SQLite and etcd), in-process, and
against the embedded store with the kubernetes datastore's txn semantics (ordered writes,
tests/fixtures/ordered_writes.py): the same outcomes whether a batch is atomic or not."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, connect
from libcalico.ipam import keys
from libcalico.ipam.model import Block, BlockAffinity, Handle
from libcalico.ipam.release import ReleaseSpec
from services.ipam.allocator import Allocator, AssignRequest
from services.ipam.errors import AddressInUseError, InvalidRequestError, PoolsExhaustedError
from tests.fixtures.ordered_writes import OrderedWrites
from tests.ipam.helpers import put_ipam_config, put_node, put_pool

MakeAllocator = Callable[[str], Allocator]


@pytest.fixture(params=["embedded", "etcdv3", "ordered-writes"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def datastore_config(backend: str, request: pytest.FixtureRequest) -> DatastoreConfig:
    # Overrides the conftest's: the ordered-writes case is the embedded store, wrapped below.
    config: DatastoreConfig = request.getfixturevalue(
        "etcd_config" if backend == "etcdv3" else "embedded_config"
    )
    return config


@pytest_asyncio.fixture
async def datastore(datastore_config: DatastoreConfig, backend: str) -> AsyncIterator[Datastore]:
    store = await connect(datastore_config)
    wrapped = OrderedWrites(store) if backend == "ordered-writes" else store
    try:
        yield wrapped
    finally:
        await wrapped.close()


@pytest_asyncio.fixture
async def make_allocator(datastore: Datastore) -> AsyncIterator[MakeAllocator]:
    made: list[Allocator] = []

    def make(node: str) -> Allocator:
        allocator = Allocator(datastore, node)
        made.append(allocator)
        return allocator

    yield make
    for allocator in made:
        await allocator.close()


async def block_of(ds: Datastore, cidr: str) -> Block:
    kv = await ds.get(keys.block_key(ipaddress.ip_network(cidr)))
    return Block.from_bytes(kv.value)


async def affinities(ds: Datastore, node: str) -> list[str]:
    result = await ds.list(keys.affinity_prefix(node))
    return [str(keys.parse_affinity_key(kv.key)[1]) for kv in result.items]


def req(handle: str, v4: int = 1, v6: int = 0, **kw: object) -> AssignRequest:
    return AssignRequest(num_ipv4=v4, num_ipv6=v6, handle_id=handle, **kw)  # type: ignore[arg-type]


def cidr_of(ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> str:
    return str(ip.network)


async def test_allocates_from_affine_block_then_claims_another(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "pool4", "10.10.0.0/24", block_size=29)
    a = make_allocator("node-a")
    first = await a.auto_assign(req("h0", attributes={"pod": "p0", "namespace": "ns"}))
    block_cidr = cidr_of(first.ipv4[0])
    assert await affinities(datastore, "node-a") == [block_cidr]
    # The rest of the 8-address block comes from the same affine block.
    rest = [await a.auto_assign(req(f"h{i}")) for i in range(1, 8)]
    assert {cidr_of(r.ipv4[0]) for r in rest} == {block_cidr}
    # The ninth needs a new block, claimed and confirmed for this node.
    ninth = await a.auto_assign(req("h8"))
    assert cidr_of(ninth.ipv4[0]) != block_cidr
    assert sorted(await affinities(datastore, "node-a")) == sorted(
        [block_cidr, cidr_of(ninth.ipv4[0])]
    )
    aff_kv = await datastore.get(keys.affinity_key("node-a", ninth.ipv4[0].network))
    assert BlockAffinity.from_bytes("node-a", ninth.ipv4[0].network, aff_kv.value).state.value == (
        "confirmed"
    )
    block = await block_of(datastore, block_cidr)
    assert block.affinity == "host:node-a"
    alloc = block.allocation(block.ordinal_of(first.ipv4[0].ip))
    assert alloc is not None and alloc.handle_id == "h0"
    assert alloc.attributes == {"pod": "p0", "namespace": "ns", "node": "node-a"}


async def test_borrows_when_no_block_can_be_claimed_unless_strict(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    # Two blocks of 4: node-a takes both, node-b has nothing left to claim.
    await put_pool(datastore, "small", "10.20.0.0/29", block_size=30)
    a, b = make_allocator("node-a"), make_allocator("node-b")
    await a.auto_assign(req("a1", v4=5))  # claims both blocks
    assert len(await affinities(datastore, "node-a")) == 2
    borrowed = await b.auto_assign(req("b1"))
    block = await block_of(datastore, cidr_of(borrowed.ipv4[0]))
    assert block.affinity == "host:node-a"  # borrowed: the block stays node-a's
    assert await affinities(datastore, "node-b") == []

    await put_ipam_config(datastore, strictAffinity=True)
    with pytest.raises(PoolsExhaustedError, match="strictAffinity"):
        await b.auto_assign(req("b2"))
    assert await b.get_allocations("b2") == []


async def test_dual_stack_is_all_or_nothing(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "v4", "10.30.0.0/24", block_size=28)
    await put_pool(datastore, "v6", "fd00:30::/126", block_size=126)  # 4 addresses only
    a = make_allocator("node-a")
    ok = await a.auto_assign(req("both", v4=1, v6=2))
    assert len(ok.ipv4) == 1 and len(ok.ipv6) == 2
    with pytest.raises(PoolsExhaustedError, match="IPv6"):
        await a.auto_assign(req("too-many", v4=1, v6=3))
    # The IPv4 address of the failed request was not kept.
    assert await a.get_allocations("too-many") == []
    block = await block_of(datastore, cidr_of(ok.ipv4[0]))
    assert block.in_use == 1
    handle = Handle.from_bytes("both", (await datastore.get(keys.handle_key("both"))).value)
    assert sum(handle.blocks.values()) == 3


async def test_release_by_ip_and_by_handle(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "pool4", "10.40.0.0/24", block_size=28)
    a = make_allocator("node-a")
    one = await a.auto_assign(req("h1", v4=3))
    two = await a.auto_assign(req("h2", v4=1))
    ip = one.ipv4[0].ip
    result = await a.release_ips([ReleaseSpec(ip)])
    assert result.released == [ip] and result.unallocated == []
    assert len(await a.get_allocations("h1")) == 2
    again = await a.release_ips([ReleaseSpec(ip)])
    assert again.unallocated == [ip]
    # Release with a stale handle does not touch an address now held by someone else.
    stale = await a.release_ips([ReleaseSpec(two.ipv4[0].ip, handle_id="h1")])
    assert stale.released == []
    released = await a.release_by_handle("h1")
    assert sorted(released) == sorted(i.ip for i in one.ipv4[1:])
    assert await a.release_by_handle("h1") == []  # idempotent
    with pytest.raises(Exception, match="does not exist"):
        await datastore.get(keys.handle_key("h1"))
    # The freed addresses go to the back of the queue: the next one is a never-used address.
    nxt = await a.auto_assign(req("h3"))
    assert nxt.ipv4[0].ip not in {i.ip for i in one.ipv4}


async def test_empty_block_goes_back_except_the_nodes_last(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "pool4", "10.50.0.0/24", block_size=30)
    a = make_allocator("node-a")
    first = await a.auto_assign(req("first", v4=4))
    second = await a.auto_assign(req("second", v4=2))
    assert len(await affinities(datastore, "node-a")) == 2
    await a.release_by_handle("second")
    # The second block is empty and not the node's last: released with its affinity.
    assert await affinities(datastore, "node-a") == [cidr_of(first.ipv4[0])]
    with pytest.raises(Exception, match="does not exist"):
        await datastore.get(keys.block_key(second.ipv4[0].network))
    await a.release_by_handle("first")
    # Now empty too, but the node's last block: kept.
    assert await affinities(datastore, "node-a") == [cidr_of(first.ipv4[0])]
    assert (await block_of(datastore, cidr_of(first.ipv4[0]))).is_empty


async def test_pool_exhaustion_is_an_error_naming_the_pool(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "tiny", "10.60.0.0/30", block_size=30)
    a = make_allocator("node-a")
    await a.auto_assign(req("h1", v4=4))
    with pytest.raises(PoolsExhaustedError, match=r"tiny.*requested 1, found 0"):
        await a.auto_assign(req("h2"))


async def test_ipam_configuration_limits_block_claims(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "pool4", "10.70.0.0/24", block_size=30)
    await put_ipam_config(datastore, strictAffinity=True, maxBlocksPerHost=1)
    a = make_allocator("node-a")
    await a.auto_assign(req("h1", v4=4))
    with pytest.raises(PoolsExhaustedError):
        await a.auto_assign(req("h2"))
    await put_ipam_config(datastore, autoAllocateBlocks=False)
    b = make_allocator("node-b")
    # No claims allowed, so node-b can only borrow from node-a's (full) block.
    with pytest.raises(PoolsExhaustedError):
        await b.auto_assign(req("h3"))
    assert await affinities(datastore, "node-b") == []


async def test_assign_specific_ip_and_bad_input(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "pool4", "10.80.0.0/24", block_size=28)
    a = make_allocator("node-a")
    got = await a.assign_ip("10.80.0.77", "fixed", {"pod": "p"})
    assert str(got) == "10.80.0.77/28"
    assert await affinities(datastore, "node-a") == ["10.80.0.64/28"]
    with pytest.raises(AddressInUseError, match=r"10\.80\.0\.77"):
        await a.assign_ip("10.80.0.77", "other")
    with pytest.raises(InvalidRequestError, match="not in any configured IP pool"):
        await a.assign_ip("192.0.2.1", "other")
    with pytest.raises(InvalidRequestError, match="invalid IP address"):
        await a.assign_ip("10.80.0.300", "other")
    with pytest.raises(InvalidRequestError, match="handle_id"):
        await a.auto_assign(req(""))
    with pytest.raises(InvalidRequestError, match="'nope' does not exist"):
        await a.auto_assign(req("h", ipv4_pools=["nope"]))


async def test_node_selector_and_requested_pools(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "zone-a", "10.90.0.0/24", block_size=28, nodeSelector="zone == 'a'")
    await put_pool(datastore, "zone-b", "10.91.0.0/24", block_size=28, nodeSelector="zone == 'b'")
    await put_node(datastore, "node-a", {"zone": "a"})
    a = make_allocator("node-a")
    got = await a.auto_assign(req("h1"))
    assert got.ipv4[0].ip in ipaddress.ip_network("10.90.0.0/24")
    explicit = await a.auto_assign(req("h2", ipv4_pools=["10.91.0.0/24"]))
    assert explicit.ipv4[0].ip in ipaddress.ip_network("10.91.0.0/24")


async def test_concurrent_batches_in_one_allocator_never_duplicate(
    datastore: Datastore, make_allocator: MakeAllocator
) -> None:
    await put_pool(datastore, "pool4", "10.100.0.0/24", block_size=28)
    a = make_allocator("node-a")
    results = await asyncio.gather(*(a.auto_assign(req(f"c{i}")) for i in range(100)))
    ips = [r.ipv4[0].ip for r in results]
    assert len(set(ips)) == 100
    # Group commit: far fewer datastore transactions than requests.
    assert a.committer.batches < 50
