"""A batch of IPAM changes staged in memory and committed as one datastore transaction.

Operations read objects through the staging (seeing the batch's earlier changes), change
copies and put them back. `savepoint`/`rollback` undo one failed operation without losing
the others. `txn_ops` turns the changes into compare-and-swap writes: CREATE for keys absent
when first read, UPDATE/DELETE at the revision they were read at, in an order whose every
prefix is safe (for a datastore whose txn is ordered writes: the kubernetes one).
`after_commit` queues work to run once the batch is written (Calico's stepwise release of an
empty block, on such a datastore).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from libcalico.datastore import TxnOp, TxnOpType
from libcalico.ipam import keys
from libcalico.ipam.keys import Network
from libcalico.ipam.model import Block, BlockAffinity, Handle
from libcalico.ipam.store import IpamStore

log = logging.getLogger(__name__)

StagedObject = Block | Handle | BlockAffinity


FollowUp = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Entry:
    # What the key holds now in this batch (None: absent) and the revision it was read at
    # (None: absent in the datastore when read). `dirty` marks keys to write. `base` is the
    # value as read (txn_ops compares handles with it).
    value: StagedObject | None
    base_revision: int | None
    dirty: bool
    base: StagedObject | None = None


Savepoint = tuple[dict[str, _Entry], int]


class Staging:
    def __init__(self, store: IpamStore) -> None:
        self.store = store
        self._entries: dict[str, _Entry] = {}
        self._follow_ups: list[FollowUp] = []

    # -- savepoints -------------------------------------------------------------------------

    def savepoint(self) -> Savepoint:
        return dict(self._entries), len(self._follow_ups)

    def rollback(self, savepoint: Savepoint) -> None:
        entries, follow_ups = savepoint
        self._entries = dict(entries)
        del self._follow_ups[follow_ups:]

    def after_commit(self, follow_up: FollowUp) -> None:
        """Run `follow_up` once this batch is written (and not if it is rolled back)."""
        self._follow_ups.append(follow_up)

    async def run_follow_ups(self) -> None:
        """Run what `after_commit` queued, once the batch is written. A failure is logged,
        not raised: the batch stands, and a follow-up only tidies after it."""
        for follow_up in self._follow_ups:
            try:
                await follow_up()
            except Exception:
                log.exception("IPAM follow-up after a commit failed")

    @property
    def dirty(self) -> bool:
        return any(e.dirty for e in self._entries.values())

    # -- generic ----------------------------------------------------------------------------

    def _base(self, key: str, value: StagedObject | None, revision: int | None) -> _Entry:
        entry = _Entry(value, revision, False, value)
        self._entries[key] = entry
        return entry

    def _put(self, key: str, value: StagedObject | None) -> None:
        entry = self._entries.get(key)
        if entry is None:
            raise AssertionError(f"staging: {key} written before it was read")
        self._entries[key] = _Entry(value, entry.base_revision, True, entry.base)

    def adopt(self, key: str, value: StagedObject | None, revision: int | None) -> None:
        """Record an object written outside the batch (a block claim; None: a deletion) as
        the key's base."""
        self._entries[key] = _Entry(value, revision, False, value)

    # -- blocks -----------------------------------------------------------------------------

    async def peek_block(self, cidr: Network) -> Block | None:
        """The block as this batch sees it, NOT a copy: look, do not touch."""
        key = keys.block_key(cidr)
        entry = self._entries.get(key)
        if entry is None:
            found = await self.store.block(cidr)
            entry = self._base(
                key, found.value if found else None, found.revision if found else None
            )
        value = entry.value
        assert value is None or isinstance(value, Block)
        return value

    async def get_block(self, cidr: Network) -> Block | None:
        """A private copy of the block (None when absent); put_block to change it."""
        value = await self.peek_block(cidr)
        return value.copy() if value is not None else None

    def put_block(self, block: Block) -> None:
        self._put(keys.block_key(block.cidr), block)

    def delete_block(self, cidr: Network) -> None:
        self._put(keys.block_key(cidr), None)

    # -- handles ----------------------------------------------------------------------------

    async def get_handle(self, handle_id: str, assume_new: bool = False) -> Handle | None:
        """A private copy of the handle (None when absent).

        `assume_new`: when the handle is not cached, assume it does not exist instead of
        reading it; the commit then CREATEs it, and fails (and is retried with a real read)
        if it did exist. New handles are the common case of an assignment.
        """
        key = keys.handle_key(handle_id)
        entry = self._entries.get(key)
        if entry is None:
            cached = self.store.cached(key)
            if cached is not None:
                assert isinstance(cached.value, Handle)
                entry = self._base(key, cached.value, cached.revision)
            elif assume_new and not self.store.suspect(key):
                entry = self._base(key, None, None)
            else:
                found = await self.store.handle(handle_id, fresh=True)
                entry = self._base(
                    key, found.value if found else None, found.revision if found else None
                )
        value = entry.value
        assert value is None or isinstance(value, Handle)
        return value.copy() if value is not None else None

    def put_handle(self, handle: Handle) -> None:
        key = keys.handle_key(handle.handle_id)
        self._put(key, None if handle.empty else handle)

    # -- affinities -------------------------------------------------------------------------

    async def get_affinity(self, node: str, cidr: Network) -> BlockAffinity | None:
        key = keys.affinity_key(node, cidr)
        entry = self._entries.get(key)
        if entry is None:
            found = await self.store.affinity(node, cidr)
            entry = self._base(
                key, found.value if found else None, found.revision if found else None
            )
        value = entry.value
        assert value is None or isinstance(value, BlockAffinity)
        return value

    def delete_affinity(self, node: str, cidr: Network) -> None:
        self._put(keys.affinity_key(node, cidr), None)

    async def node_affinities(self, node: str, version: int) -> list[BlockAffinity]:
        """The node's affinities as this batch sees them (staged deletions removed)."""
        out = []
        for found in await self.store.node_affinities(node, version):
            key = keys.affinity_key(node, found.value.cidr)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._base(key, found.value, found.revision)
            if isinstance(entry.value, BlockAffinity):
                out.append(entry.value)
        return out

    # -- commit -----------------------------------------------------------------------------

    def txn_ops(self) -> tuple[list[TxnOp], list[StagedObject | None]]:
        """The batch's writes, and what each leaves at its key (None: deleted).

        Ordered so that writing any prefix of them, and stopping, is safe (a datastore without
        transactions applies them one by one and a crash can stop it anywhere; KUBERNETES.md):
          1. handles that count more addresses in some block (new ones included), so a handle
             may count an address its block does not hold yet (a leak `ipam check` reports and
             `ipam release --from-report` trims) but a block never holds an address its handle
             does not count;
          2. blocks;
          3. affinities (deleted with their empty block, on an atomic datastore only);
          4. handles that only count less or go away: a block frees an address before its
             handle stops counting it.
        A handle that grows in one block and shrinks in another in the same batch (its own
        release and re-assignment batched together) goes first: for the shrinking block the
        middle state then holds an address its handle no longer counts, which `ipam check`
        reports as a handle mismatch; still never one address given twice.
        """
        groups: list[list[tuple[str, _Entry]]] = [[], [], [], []]
        for key, entry in self._entries.items():
            if not entry.dirty or (entry.value is None and entry.base_revision is None):
                continue
            groups[_write_group(entry)].append((key, entry))
        ops: list[TxnOp] = []
        objects: list[StagedObject | None] = []
        # A group's writes are independent of each other: one step each (TxnOp.step), which
        # an ordered-writes datastore sends concurrently.
        for step, group in enumerate(groups):
            for key, entry in group:
                if entry.value is not None:
                    raw = entry.value.to_bytes()
                    if entry.base_revision is None:
                        ops.append(TxnOp(TxnOpType.CREATE, key, raw, step=step))
                    else:
                        ops.append(
                            TxnOp(TxnOpType.UPDATE, key, raw, entry.base_revision, step=step)
                        )
                else:
                    ops.append(
                        TxnOp(TxnOpType.DELETE, key, revision=entry.base_revision, step=step)
                    )
                objects.append(entry.value)
        return ops, objects


def _write_group(entry: _Entry) -> int:
    """Where a write goes in txn_ops' order (see there)."""
    value = entry.value if entry.value is not None else entry.base
    if isinstance(value, Block):
        return 1
    if isinstance(value, BlockAffinity):
        return 2
    new, old = entry.value, entry.base
    if not isinstance(new, Handle):
        return 3  # a handle going away
    if not isinstance(old, Handle):
        return 0  # a new handle
    grows = any(count > old.blocks.get(cidr, 0) for cidr, count in new.blocks.items())
    return 0 if grows else 3
