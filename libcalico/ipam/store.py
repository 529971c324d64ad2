"""Typed access to IPAM objects in the datastore, with an optional revision cache.

The cache remembers objects this process read or wrote together with their revision, so a
daemon that owns a block can update it without reading it first. It may be stale: every write
is compare-and-swap on the cached revision, and a conflict invalidates the key (and the node
affinity lists) before the caller retries. Absence is never cached, except for handles the
caller explicitly assumes new (see Staging.get_handle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from libcalico.datastore import Datastore, KeyNotFoundError, KeyValue, TxnOp
from libcalico.ipam import keys
from libcalico.ipam.keys import Network
from libcalico.ipam.model import Block, BlockAffinity, Handle

T = TypeVar("T", covariant=True)


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """An object and the mod_revision it was read or written at. Never mutate `value`."""

    value: T
    revision: int


CacheEntry = Versioned[Block | Handle | BlockAffinity]


class IpamStore:
    def __init__(self, datastore: Datastore, cache: bool = True) -> None:
        self.datastore = datastore
        self._use_cache = cache
        self._objects: dict[str, CacheEntry] = {}
        # (node, version) -> affinity keys of that node, when listed.
        self._affinity_lists: dict[tuple[str, int], set[str]] = {}
        # The same keys sorted by CIDR, rebuilt lazily after a change.
        self._affinity_order: dict[tuple[str, int], list[str]] = {}
        # Handle keys a commit found to exist although assumed new: read them next time.
        self._suspects: set[str] = set()

    # -- cache ------------------------------------------------------------------------------

    def remember(self, key: str, entry: CacheEntry | None) -> None:
        if not self._use_cache:
            return
        if entry is None:
            self._objects.pop(key, None)
        else:
            self._objects[key] = entry
        if key.startswith(keys.HOST_PREFIX):
            node, cidr = keys.parse_affinity_key(key)
            listed = self._affinity_lists.get((node, cidr.version))
            if listed is not None and (entry is None) == (key in listed):
                if entry is None:
                    listed.discard(key)
                else:
                    listed.add(key)
                self._affinity_order.pop((node, cidr.version), None)

    def invalidate(self, key: str | None = None) -> None:
        """Forget `key` (all objects when None) and every affinity list."""
        if key is None:
            self._objects.clear()
        else:
            self._objects.pop(key, None)
            if key.startswith(keys.HANDLE_PREFIX):
                self._suspects.add(key)
        self._affinity_lists.clear()
        self._affinity_order.clear()

    def suspect(self, key: str) -> bool:
        return key in self._suspects

    def cached(self, key: str) -> CacheEntry | None:
        return self._objects.get(key)

    # -- reads ------------------------------------------------------------------------------

    async def _get(self, key: str) -> KeyValue | None:
        try:
            return await self.datastore.get(key)
        except KeyNotFoundError:
            return None

    async def block(self, cidr: Network, fresh: bool = False) -> Versioned[Block] | None:
        key = keys.block_key(cidr)
        hit = None if fresh else self._objects.get(key)
        if hit is not None:
            assert isinstance(hit.value, Block)
            return cast("Versioned[Block]", hit)
        kv = await self._get(key)
        if kv is None:
            self.remember(key, None)
            return None
        entry = Versioned(Block.from_bytes(kv.value), kv.mod_revision)
        self.remember(key, entry)
        return entry

    async def handle(self, handle_id: str, fresh: bool = False) -> Versioned[Handle] | None:
        key = keys.handle_key(handle_id)
        self._suspects.discard(key)
        hit = None if fresh else self._objects.get(key)
        if hit is not None:
            assert isinstance(hit.value, Handle)
            return cast("Versioned[Handle]", hit)
        kv = await self._get(key)
        if kv is None:
            self.remember(key, None)
            return None
        entry = Versioned(Handle.from_bytes(handle_id, kv.value), kv.mod_revision)
        self.remember(key, entry)
        return entry

    async def affinity(
        self, node: str, cidr: Network, fresh: bool = False
    ) -> Versioned[BlockAffinity] | None:
        key = keys.affinity_key(node, cidr)
        hit = None if fresh else self._objects.get(key)
        if hit is not None:
            assert isinstance(hit.value, BlockAffinity)
            return cast("Versioned[BlockAffinity]", hit)
        kv = await self._get(key)
        if kv is None:
            self.remember(key, None)
            return None
        entry = Versioned(BlockAffinity.from_bytes(node, cidr, kv.value), kv.mod_revision)
        self.remember(key, entry)
        return entry

    async def node_affinities(self, node: str, version: int) -> list[Versioned[BlockAffinity]]:
        """The node's affinities of one IP version, sorted by CIDR."""
        listed = self._affinity_lists.get((node, version)) if self._use_cache else None
        if listed is not None:
            order = self._affinity_order.get((node, version))
            if order is None:
                order = sorted(listed, key=lambda k: keys.parse_affinity_key(k)[1])
                self._affinity_order[(node, version)] = order
            found = [self._objects.get(k) for k in order]
            if all(e is not None for e in found):
                return [cast("Versioned[BlockAffinity]", e) for e in found]
        result = await self.datastore.list(keys.affinity_prefix(node, version))
        entries: list[Versioned[BlockAffinity]] = []
        for kv in result.items:
            _, cidr = keys.parse_affinity_key(kv.key)
            entry = Versioned(BlockAffinity.from_bytes(node, cidr, kv.value), kv.mod_revision)
            entries.append(entry)
            self.remember(kv.key, entry)
        entries.sort(key=lambda e: e.value.cidr)
        if self._use_cache:
            order = [keys.affinity_key(node, e.value.cidr) for e in entries]
            self._affinity_lists[(node, version)] = set(order)
            self._affinity_order[(node, version)] = order
        return entries

    async def list_blocks(self, version: int) -> list[Versioned[Block]]:
        """Every block of one IP version, read fresh."""
        result = await self.datastore.list(keys.block_prefix(version))
        out = []
        for kv in result.items:
            entry = Versioned(Block.from_bytes(kv.value), kv.mod_revision)
            self.remember(kv.key, entry)
            out.append(entry)
        return out

    async def list_all_affinities(self) -> list[Versioned[BlockAffinity]]:
        result = await self.datastore.list(keys.HOST_PREFIX)
        out = []
        for kv in result.items:
            node, cidr = keys.parse_affinity_key(kv.key)
            out.append(Versioned(BlockAffinity.from_bytes(node, cidr, kv.value), kv.mod_revision))
        return out

    async def list_handles(self) -> list[Versioned[Handle]]:
        result = await self.datastore.list(keys.HANDLE_PREFIX)
        return [
            Versioned(Handle.from_bytes(keys.handle_id_from_key(kv.key), kv.value), kv.mod_revision)
            for kv in result.items
        ]

    # -- writes -----------------------------------------------------------------------------

    async def commit(
        self, ops: list[TxnOp], objects: list[Block | Handle | BlockAffinity | None]
    ) -> None:
        """Apply `ops` atomically; `objects[i]` is what ops[i] leaves at its key (None: gone).

        Datastore conflict errors propagate after the failing key is invalidated.
        """
        if not ops:
            return
        try:
            results = await self.datastore.txn(ops)
        except Exception as exc:
            self.invalidate(getattr(exc, "key", None))
            raise
        for op, obj, kv in zip(ops, objects, results, strict=True):
            if obj is None or kv is None:
                self.remember(op.key, None)
            else:
                self.remember(op.key, Versioned(obj, kv.mod_revision))
