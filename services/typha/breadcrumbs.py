"""Breadcrumbs: the ordered chain of delta batches every client follows at its own pace.

Each breadcrumb holds one batch of changes, already serialized as the `SyncMessage` bytes
written to every client (encoded once, however many clients), and a future resolved with the
next breadcrumb when it exists. A client keeps a reference only to the breadcrumb it sent last;
older breadcrumbs are garbage as soon as the slowest client has moved past them, so memory is
bounded by the laggiest client, and the lag limit bounds that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from calico.typha.v1 import typha_pb2


class Breadcrumb:
    __slots__ = ("change_count", "encoded", "next", "received", "received_unix_nanos", "sequence")

    def __init__(self, sequence: int, encoded: bytes, change_count: int) -> None:
        # `next` is shared by every client following the chain: they wait on it through
        # asyncio.shield, so one client's cancellation never cancels it for the others.
        self.sequence = sequence
        self.encoded = encoded
        self.change_count = change_count
        self.received = time.monotonic()
        self.received_unix_nanos = time.time_ns()
        self.next: asyncio.Future[Breadcrumb] = asyncio.get_running_loop().create_future()


def change(key: str, value: bytes, revision: int) -> typha_pb2.Change:
    return typha_pb2.Change(key=key, value=value, revision=revision)


def deletion(key: str, revision: int) -> typha_pb2.Change:
    return typha_pb2.Change(key=key, revision=revision, deleted=True)


class BreadcrumbChain:
    """The head of the chain; appending resolves the old head's `next`."""

    def __init__(self) -> None:
        self.head = Breadcrumb(0, b"", 0)

    def append(self, changes: list[typha_pb2.Change]) -> Breadcrumb:
        sequence = self.head.sequence + 1
        message = typha_pb2.SyncMessage(
            deltas=typha_pb2.DeltaBatch(
                sequence=sequence, received_unix_nanos=time.time_ns(), changes=changes
            )
        )
        crumb = Breadcrumb(sequence, message.SerializeToString(), len(changes))
        old, self.head = self.head, crumb
        old.next.set_result(crumb)
        return crumb


def encode_snapshot(items: Iterable[tuple[str, tuple[bytes, int]]], batch_size: int) -> list[bytes]:
    """The snapshot as serialized `SyncMessage.snapshot` messages of `batch_size` keys each."""
    chunks: list[bytes] = []
    batch: list[typha_pb2.Change] = []
    for key, (value, revision) in items:
        batch.append(change(key, value, revision))
        if len(batch) >= batch_size:
            chunks.append(_snapshot_message(batch))
            batch = []
    if batch:
        chunks.append(_snapshot_message(batch))
    return chunks


def _snapshot_message(batch: list[typha_pb2.Change]) -> bytes:
    msg = typha_pb2.SyncMessage(snapshot=typha_pb2.SnapshotBatch(changes=batch))
    return msg.SerializeToString()
