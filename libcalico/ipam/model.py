"""IPAM objects and their JSON form (the shapes Calico stores in etcd, as far as sensible).

Block: the addresses of one CIDR. `allocations[ordinal]` is an index into `attributes` (who
holds the address) or None when free; `unallocated` is a FIFO of free ordinals so the address
freed longest ago is handed out first; every allocation gets a sequence number so a release
decided on an old observation can tell the address was reassigned meanwhile.
BlockAffinity: a node's claim on a block (pending -> confirmed -> pendingDeletion).
Handle: which blocks hold a handle's addresses, and how many in each (the release index).
"""

from __future__ import annotations

import enum
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from libcalico.ipam.keys import Network
from libcalico.ipam_block import affine_node

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ATTR_NAMESPACE = "namespace"
ATTR_POD = "pod"
ATTR_NODE = "node"
ATTR_TYPE = "type"
# Tunnel addresses carry `type` <encap>TunnelAddress (vxlanTunnelAddress, ipipTunnelAddress).
TUNNEL_TYPE_SUFFIX = "TunnelAddress"


@dataclass(frozen=True, slots=True)
class AllocationAttribute:
    handle_id: str | None
    # Never mutated after creation: blocks share these between copies.
    secondary: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"handle_id": self.handle_id, "secondary": dict(self.secondary)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AllocationAttribute:
        return cls(data.get("handle_id"), dict(data.get("secondary") or {}))


@dataclass(frozen=True, slots=True)
class Allocation:
    """One allocated address as seen from outside the block."""

    ip: IPAddress
    ordinal: int
    handle_id: str | None
    attributes: dict[str, str]
    sequence_number: int


class Block:
    """An allocation block: one CIDR, its allocations and free list."""

    __slots__ = (
        "affinity",
        "allocations",
        "attributes",
        "cidr",
        "deleted",
        "sequence_for_allocation",
        "sequence_number",
        "strict_affinity",
        "unallocated",
    )

    def __init__(self, cidr: Network, affinity: str | None, strict_affinity: bool = False) -> None:
        self.cidr = cidr
        self.affinity = affinity
        self.strict_affinity = strict_affinity
        self.allocations: list[int | None] = [None] * cidr.num_addresses
        self.unallocated: list[int] = list(range(cidr.num_addresses))
        self.attributes: list[AllocationAttribute] = []
        self.deleted = False
        self.sequence_number = 0
        self.sequence_for_allocation: dict[int, int] = {}

    # -- identity ---------------------------------------------------------------------------

    @property
    def affine_node(self) -> str | None:
        return affine_node(self.affinity)

    def copy(self) -> Block:
        other = Block.__new__(Block)
        other.cidr = self.cidr
        other.affinity = self.affinity
        other.strict_affinity = self.strict_affinity
        other.allocations = list(self.allocations)
        other.unallocated = list(self.unallocated)
        other.attributes = list(self.attributes)
        other.deleted = self.deleted
        other.sequence_number = self.sequence_number
        other.sequence_for_allocation = dict(self.sequence_for_allocation)
        return other

    # -- addresses --------------------------------------------------------------------------

    def ip_of(self, ordinal: int) -> IPAddress:
        return self.cidr.network_address + ordinal

    def ordinal_of(self, ip: IPAddress) -> int:
        if ip not in self.cidr:
            raise ValueError(f"{ip} is not in block {self.cidr}")
        return int(ip) - int(self.cidr.network_address)

    @property
    def free_count(self) -> int:
        return len(self.unallocated)

    @property
    def in_use(self) -> int:
        return self.cidr.num_addresses - len(self.unallocated)

    @property
    def is_empty(self) -> bool:
        return len(self.unallocated) == self.cidr.num_addresses

    def allocation(self, ordinal: int) -> Allocation | None:
        index = self.allocations[ordinal]
        if index is None:
            return None
        attr = self.attributes[index]
        return Allocation(
            ip=self.ip_of(ordinal),
            ordinal=ordinal,
            handle_id=attr.handle_id,
            attributes=dict(attr.secondary),
            sequence_number=self.sequence_for_allocation.get(ordinal, 0),
        )

    def all_allocations(self) -> list[Allocation]:
        found = []
        for ordinal, index in enumerate(self.allocations):
            if index is not None:
                alloc = self.allocation(ordinal)
                assert alloc is not None
                found.append(alloc)
        return found

    def ordinals_of_handle(self, handle_id: str) -> list[int]:
        indexes = {i for i, a in enumerate(self.attributes) if a.handle_id == handle_id}
        if not indexes:
            return []
        return [o for o, index in enumerate(self.allocations) if index in indexes]

    # -- changes ----------------------------------------------------------------------------

    def _attribute_index(self, handle_id: str | None, secondary: dict[str, str]) -> int:
        for i, attr in enumerate(self.attributes):
            if attr.handle_id == handle_id and attr.secondary == secondary:
                return i
        self.attributes.append(AllocationAttribute(handle_id, dict(secondary)))
        return len(self.attributes) - 1

    def _mark_allocated(self, ordinal: int, attr_index: int) -> None:
        self.allocations[ordinal] = attr_index
        self.sequence_for_allocation[ordinal] = self.sequence_number
        self.sequence_number += 1

    def assign(self, count: int, handle_id: str | None, secondary: dict[str, str]) -> list[int]:
        """Take up to `count` free ordinals, least recently freed first."""
        take = self.unallocated[:count]
        if not take:
            return []
        del self.unallocated[: len(take)]
        index = self._attribute_index(handle_id, secondary)
        for ordinal in take:
            self._mark_allocated(ordinal, index)
        return take

    def assign_ordinal(
        self, ordinal: int, handle_id: str | None, secondary: dict[str, str]
    ) -> bool:
        """Take one specific ordinal; False when it is already allocated."""
        if self.allocations[ordinal] is not None:
            return False
        self.unallocated.remove(ordinal)
        self._mark_allocated(ordinal, self._attribute_index(handle_id, secondary))
        return True

    def release(self, ordinals: list[int]) -> dict[str | None, int]:
        """Free the given allocated ordinals; returns how many were freed per handle."""
        freed: dict[str | None, int] = {}
        for ordinal in ordinals:
            index = self.allocations[ordinal]
            if index is None:
                continue
            handle_id = self.attributes[index].handle_id
            freed[handle_id] = freed.get(handle_id, 0) + 1
            self.allocations[ordinal] = None
            self.unallocated.append(ordinal)
            self.sequence_for_allocation.pop(ordinal, None)
        if freed:
            self._drop_unused_attributes()
        return freed

    def _drop_unused_attributes(self) -> None:
        used = sorted({i for i in self.allocations if i is not None})
        if len(used) == len(self.attributes):
            return
        renumber = {old: new for new, old in enumerate(used)}
        self.attributes = [self.attributes[i] for i in used]
        self.allocations = [None if i is None else renumber[i] for i in self.allocations]

    # -- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "cidr": str(self.cidr),
            "affinity": self.affinity,
            "strictAffinity": self.strict_affinity,
            "allocations": self.allocations,
            "unallocated": self.unallocated,
            "attributes": [a.to_json() for a in self.attributes],
            "deleted": self.deleted,
            "sequenceNumber": self.sequence_number,
            "sequenceNumberForAllocation": {
                str(k): v for k, v in self.sequence_for_allocation.items()
            },
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Block:
        block = cls.__new__(cls)
        block.cidr = ipaddress.ip_network(data["cidr"])
        block.affinity = data.get("affinity")
        block.strict_affinity = bool(data.get("strictAffinity", False))
        block.allocations = list(data["allocations"])
        block.unallocated = list(data["unallocated"])
        block.attributes = [AllocationAttribute.from_json(a) for a in data.get("attributes") or []]
        block.deleted = bool(data.get("deleted", False))
        block.sequence_number = int(data.get("sequenceNumber", 0))
        block.sequence_for_allocation = {
            int(k): int(v) for k, v in (data.get("sequenceNumberForAllocation") or {}).items()
        }
        return block

    @classmethod
    def from_bytes(cls, raw: bytes) -> Block:
        return cls.from_json(json.loads(raw))


class AffinityState(enum.Enum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    PENDING_DELETION = "pendingDeletion"


@dataclass(slots=True)
class BlockAffinity:
    node: str
    cidr: Network
    state: AffinityState = AffinityState.CONFIRMED
    deleted: bool = False

    def to_bytes(self) -> bytes:
        return json.dumps({"state": self.state.value, "deleted": self.deleted}).encode()

    @classmethod
    def from_bytes(cls, node: str, cidr: Network, raw: bytes) -> BlockAffinity:
        data = json.loads(raw)
        return cls(
            node, cidr, AffinityState(data.get("state", "confirmed")), bool(data.get("deleted"))
        )


@dataclass(slots=True)
class Handle:
    handle_id: str
    # Block CIDR (text) -> number of the handle's addresses in that block.
    blocks: dict[str, int] = field(default_factory=dict)
    deleted: bool = False

    def copy(self) -> Handle:
        return Handle(self.handle_id, dict(self.blocks), self.deleted)

    def add(self, cidr: Network, count: int) -> None:
        key = str(cidr)
        self.blocks[key] = self.blocks.get(key, 0) + count

    def remove(self, cidr: Network, count: int) -> None:
        key = str(cidr)
        left = self.blocks.get(key, 0) - count
        if left > 0:
            self.blocks[key] = left
        else:
            self.blocks.pop(key, None)

    @property
    def empty(self) -> bool:
        return not self.blocks

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"handleID": self.handle_id, "block": self.blocks, "deleted": self.deleted}
        ).encode()

    @classmethod
    def from_bytes(cls, handle_id: str, raw: bytes) -> Handle:
        data = json.loads(raw)
        blocks = {str(k): int(v) for k, v in (data.get("block") or {}).items()}
        return cls(handle_id, blocks, bool(data.get("deleted")))


@dataclass(frozen=True, slots=True)
class IpamConfig:
    """IPAMConfiguration 'default' (spec fields)."""

    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    # 0 means unlimited.
    max_blocks_per_host: int = 0

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> IpamConfig:
        return cls(
            strict_affinity=bool(spec.get("strictAffinity", False)),
            auto_allocate_blocks=bool(spec.get("autoAllocateBlocks", True)),
            max_blocks_per_host=int(spec.get("maxBlocksPerHost", 0) or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "strictAffinity": self.strict_affinity,
            "autoAllocateBlocks": self.auto_allocate_blocks,
            "maxBlocksPerHost": self.max_blocks_per_host,
        }
