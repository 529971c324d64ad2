"""SyncerCache: Typha's view of one syncer type (felix, bgp): snapshot plus breadcrumbs.

The cache holds every key of its prefixes with value and revision. Each batch from the
datastore becomes at most one breadcrumb, holding only real changes: an update whose value is
byte-identical to the cached one, or a delete of an unknown key, is dropped (as Calico's Typha
deduplicates), so clients never receive a duplicate. A new client gets the current state as
its snapshot and then follows the chain from the head breadcrumb at that moment: nothing is
missed, nothing is sent twice. Snapshot bytes are cached per head breadcrumb, so many clients
joining together share one encoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from calico.typha.v1 import typha_pb2
from libcalico.syncer.api import Delete, SyncerUpdate, Update
from services.typha.breadcrumbs import (
    Breadcrumb,
    BreadcrumbChain,
    change,
    deletion,
    encode_snapshot,
)

DEFAULT_SNAPSHOT_BATCH = 200  # keys per snapshot message (Calico sends 100)


class SyncerCache:
    def __init__(
        self,
        syncer_type: str,
        prefixes: Sequence[str],
        snapshot_batch_size: int = DEFAULT_SNAPSHOT_BATCH,
    ) -> None:
        self.syncer_type = syncer_type
        self.prefixes = tuple(prefixes)
        self.snapshot_batch_size = snapshot_batch_size
        self.state: dict[str, tuple[bytes, int]] = {}
        self.chain = BreadcrumbChain()
        # Set once Typha's own view is complete; clients wait for it before their snapshot.
        self.in_sync = asyncio.Event()
        self._snapshot_cache: tuple[Breadcrumb, list[bytes]] | None = None

    @property
    def head(self) -> Breadcrumb:
        return self.chain.head

    def covers(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    def apply(self, updates: Sequence[SyncerUpdate]) -> Breadcrumb | None:
        """Apply datastore deltas; returns the new breadcrumb, None if nothing changed."""
        changes: list[typha_pb2.Change] = []
        for item in updates:
            if isinstance(item, Update):
                if self._put(item):
                    changes.append(change(item.key, item.value, item.revision))
            elif isinstance(item, Delete) and self.state.pop(item.key, None) is not None:
                changes.append(deletion(item.key, item.revision))
        return self._append(changes)

    def apply_snapshot(self, updates: Sequence[Update]) -> Breadcrumb | None:
        """A complete listing (Typha's feed started or restarted): keys not in it are deleted."""
        present = {u.key for u in updates}
        gone = [deletion(key, 0) for key in self.state if key not in present]
        for d in gone:
            del self.state[d.key]
        changes = [change(u.key, u.value, u.revision) for u in updates if self._put(u)]
        return self._append(gone + changes)

    def _put(self, update: Update) -> bool:
        old = self.state.get(update.key)
        self.state[update.key] = (update.value, update.revision)
        return old is None or old[0] != update.value

    def _append(self, changes: list[typha_pb2.Change]) -> Breadcrumb | None:
        if not changes or not self.in_sync.is_set():
            # Before the first in-sync nobody streams: the state is the snapshot to come.
            return None
        return self.chain.append(changes)

    def snapshot(self) -> tuple[Breadcrumb, list[bytes]]:
        """The current state, encoded, and the breadcrumb it corresponds to."""
        head = self.chain.head
        cached = self._snapshot_cache
        if cached is None or cached[0] is not head:
            cached = (head, encode_snapshot(self.state.items(), self.snapshot_batch_size))
            self._snapshot_cache = cached
        return cached
