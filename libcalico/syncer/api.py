"""The update types a syncer emits and the interface every syncer implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Update:
    """A key now has this value (created or changed)."""

    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Delete:
    """A key no longer exists."""

    key: str
    revision: int = 0


@dataclass(frozen=True, slots=True)
class InSync:
    """Everything that existed when the stream started has been delivered.

    Sent once after the initial snapshot. After a resync the syncer only sends the diff
    (never a second InSync), so consumers never regress to "not in sync".
    """


SyncerUpdate = Update | Delete | InSync


class Syncer(Protocol):
    """A stream of update batches: snapshot, InSync, then deltas, until closed."""

    def updates(self) -> AsyncIterator[list[SyncerUpdate]]:
        """Batches of updates in order; runs until the consumer stops iterating."""
        ...

    async def close(self) -> None:
        """Stop the stream and release resources."""
        ...
