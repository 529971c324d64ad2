"""The datastore contract every backend implements.

A datastore is a key-value store with one revision counter, like etcd v3: every write gets a
new, larger revision; each key remembers the revision of its last write (`mod_revision`) and
of its creation (`create_revision`). Writes are compare-and-swap on `mod_revision`.

Keys follow Calico's etcd layout (see docs/architecture.md):
  /calico/resources/v3/<group>/<plural>/[<namespace>/]<name>   resources (group `core` for
                                                               Kubernetes core kinds)
  /calico/ipam/v2/...                                          IPAM blocks, affinities, handles
Values are bytes (JSON documents); embedded and etcd never interpret them. The Kubernetes
backend (kubernetes.py, KUBERNETES.md) maps these keys onto API objects and so reads the
values (projectcalico.org/v3 documents); `mod_revision` is then the object's resourceVersion.
Callers therefore treat revisions as opaque, comparable tokens obtained from the datastore,
never compute them.
"""

from __future__ import annotations

import abc
import builtins  # `list` inside Datastore names the method, not the type
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass


class DatastoreError(Exception):
    """Base class of every datastore failure."""


class KeyNotFoundError(DatastoreError):
    """The key does not exist (get, update, delete)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"resource does not exist: {key}")
        self.key = key


class KeyExistsError(DatastoreError):
    """create() of a key that already exists."""

    def __init__(self, key: str) -> None:
        super().__init__(f"resource already exists: {key}")
        self.key = key


class RevisionConflictError(DatastoreError):
    """Compare-and-swap failed: the key changed since the revision the caller read."""

    def __init__(self, key: str, expected: int, actual: int | None) -> None:
        super().__init__(f"update conflict on {key}: expected revision {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class ResyncRequiredError(DatastoreError):
    """A watch cannot continue from the requested revision (compacted, or the watch broke).

    The watcher must list again and restart its watch from the list's revision.
    """


class DatastoreUnavailableError(DatastoreError):
    """The backend cannot be reached (etcd down, file unreadable)."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    key: str
    # For PUT the new value; for DELETE the value before deletion when the backend knows it.
    value: bytes | None
    # The revision of this change (the datastore revision at which it happened).
    revision: int


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    # The datastore revision the list is consistent at: watch from revision + 1.
    revision: int


class Datastore(abc.ABC):
    """Async key-value datastore with revisions, compare-and-swap and watch."""

    # True: txn() is all-or-nothing and isolated (etcd, embedded). False: its ops are applied
    # in order and reverted on a failure, but a reader (or a crash) can see the middle
    # (kubernetes; ordered_txn.py): callers order their ops so that every prefix is safe.
    atomic_txn = True
    # Whether one list/watch may span many kinds (a whole subtree such as `/calico/`): etcd
    # and embedded serve any prefix; the kubernetes datastore serves one kind (or API group)
    # per list/watch, so a consumer of many kinds (Typha) watches each prefix it needs.
    watches_any_prefix = True

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue:
        """Return the key's current value; KeyNotFoundError if absent."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> ListResult:
        """All keys starting with `prefix`, sorted by key, and the revision they are current at."""

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> KeyValue:
        """Write a new key; KeyExistsError if it exists."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        """Replace the key's value if its mod_revision equals `revision`.

        KeyNotFoundError if absent; RevisionConflictError if it changed.
        """

    @abc.abstractmethod
    async def put(self, key: str, value: bytes) -> KeyValue:
        """Create or replace unconditionally (tests, tools; services use create/update)."""

    @abc.abstractmethod
    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        """Delete the key, compare-and-swap when `revision` is given; returns the old value.

        KeyNotFoundError if absent; RevisionConflictError if it changed.
        """

    @abc.abstractmethod
    async def txn(self, ops: builtins.list[TxnOp]) -> builtins.list[KeyValue | None]:
        """Apply several conditional writes atomically: all succeed or none (see atomic_txn).

        Raises the error of the first failing condition (KeyExistsError, KeyNotFoundError or
        RevisionConflictError) and writes nothing. Returns per op the written KeyValue (None for
        deletes). IPAM uses it to update a block and its handle together.
        """

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Events for keys under `prefix` with revision >= start_revision, in revision order.

        Raises ResyncRequiredError (from the iterator) when `start_revision` is no longer
        available or the stream broke; the caller lists again and re-watches.
        The iterator runs until the caller stops iterating (aclose) or the datastore closes.
        """

    @abc.abstractmethod
    async def current_revision(self) -> int:
        """The datastore's latest revision."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and stop watches."""

    async def __aenter__(self) -> Datastore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class TxnOpType(enum.Enum):
    CREATE = "create"  # key must not exist
    UPDATE = "update"  # key must exist at `revision`
    DELETE = "delete"  # key must exist (at `revision` when given)


@dataclass(frozen=True, slots=True)
class TxnOp:
    type: TxnOpType
    key: str
    value: bytes = b""
    revision: int | None = None
