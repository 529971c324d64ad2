"""Block bookkeeping: FIFO reuse, attributes, sequence numbers, JSON round trip."""

from __future__ import annotations

import ipaddress

from libcalico.ipam.model import Block, BlockAffinity, Handle
from services.ipam.pools import pool_from_resource


def make_block(cidr: str = "10.1.0.0/29") -> Block:
    network = ipaddress.ip_network(cidr)
    return Block(network, "host:n1")


def test_assign_takes_lowest_first_and_reuses_least_recently_freed() -> None:
    block = make_block()
    assert block.assign(3, "h1", {"pod": "a"}) == [0, 1, 2]
    block.release([1])
    block.release([0])
    # 3..7 were never used, so they come before the freed 1, then 0.
    assert block.assign(5, "h2", {}) == [3, 4, 5, 6, 7]
    assert block.assign(2, "h3", {}) == [1, 0]
    assert block.free_count == 0
    assert block.assign(1, "h4", {}) == []


def test_attributes_are_shared_and_compacted() -> None:
    block = make_block()
    block.assign(2, "h1", {"pod": "a"})
    block.assign(1, "h2", {"pod": "b"})
    assert len(block.attributes) == 2
    freed = block.release(block.ordinals_of_handle("h1"))
    assert freed == {"h1": 2}
    assert [a.handle_id for a in block.attributes] == ["h2"]
    alloc = block.allocation(2)
    assert alloc is not None and alloc.handle_id == "h2" and alloc.attributes == {"pod": "b"}


def test_sequence_numbers_change_on_reassignment() -> None:
    block = make_block("10.1.0.0/30")
    block.assign_ordinal(2, "h1", {})
    first = block.allocation(2)
    block.release([2])
    block.assign_ordinal(2, "h2", {})
    second = block.allocation(2)
    assert first is not None and second is not None
    assert second.sequence_number > first.sequence_number
    assert not block.assign_ordinal(2, "h3", {})


def test_json_round_trip_keeps_everything() -> None:
    block = make_block("fd00::/125")
    block.assign(3, "h1", {"namespace": "ns", "pod": "p"})
    block.release([1])
    again = Block.from_bytes(block.to_bytes())
    assert again.to_json() == block.to_json()
    assert again.ip_of(2) == ipaddress.ip_address("fd00::2")
    handle = Handle("h1", {"fd00::/125": 2})
    assert Handle.from_bytes("h1", handle.to_bytes()) == handle
    aff = BlockAffinity("n1", block.cidr)
    assert BlockAffinity.from_bytes("n1", block.cidr, aff.to_bytes()) == aff


def test_pool_defaults_and_block_enumeration() -> None:
    pool = pool_from_resource({"metadata": {"name": "p"}, "spec": {"cidr": "10.2.0.0/24"}})
    assert pool.block_size == 26 and pool.block_count == 4
    assert [str(c) for c in pool.blocks_from(3)] == [
        "10.2.0.192/26",
        "10.2.0.0/26",
        "10.2.0.64/26",
        "10.2.0.128/26",
    ]
    v6 = pool_from_resource({"metadata": {"name": "q"}, "spec": {"cidr": "fd00::/120"}})
    assert v6.block_size == 122 and v6.block_of(ipaddress.ip_address("fd00::41")) == (
        ipaddress.ip_network("fd00::40/122")
    )
