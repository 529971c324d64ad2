"""The embedded datastore: one SQLite file (WAL mode) shared by every process on a host.

Layout of the file:
  kv(key, value, create_rev, mod_rev)     the current keys
  events(rev, idx, deleted, key, value)   the history watchers read; one row per changed key,
                                          `idx` orders the keys of one multi-key txn
  meta(name, value)                       'revision' (the global counter, starts at 1 like
                                          etcd) and 'compacted' (events below it are gone)

Every write runs in `BEGIN IMMEDIATE`, which takes SQLite's single write lock up front, so the
compare-and-swap check and the write see the same state even with several processes on the
file; `busy_timeout` makes contenders queue for the lock instead of failing.

Threads: a sqlite3 connection belongs to the thread that made it, and its calls block, so each
instance owns two single-worker executors (reads/writes, and watch reads — a write waiting on
another process's lock must not stall watchers), each with its own connection, plus one
polling thread that checks `PRAGMA data_version` (changes when another connection commits) and
wakes the watchers. Local writes wake watchers directly, without waiting for the poll.
"""

from __future__ import annotations

import asyncio
import builtins  # `list` inside the class names the list() method
import enum
import functools
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from libcalico.datastore.api import (
    Datastore,
    DatastoreError,
    DatastoreUnavailableError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    ResyncRequiredError,
    RevisionConflictError,
    TxnOp,
    TxnOpType,
    WatchEvent,
)
from libcalico.datastore.common import check_key, check_txn_ops, prefix_range_end

T = TypeVar("T")

DEFAULT_HISTORY_LIMIT = 10_000
# Compacting deletes a range of history rows; doing it every N revisions amortises the cost.
COMPACT_EVERY = 500
DEFAULT_POLL_INTERVAL = 0.005
DEFAULT_BUSY_TIMEOUT = 30.0
# A watcher reads at most this many revisions per round trip to its thread.
WATCH_BATCH_REVISIONS = 1_000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY, value BLOB NOT NULL,
        create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS events (
        rev INTEGER NOT NULL, idx INTEGER NOT NULL, deleted INTEGER NOT NULL,
        key TEXT NOT NULL, value BLOB,
        PRIMARY KEY (rev, idx)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 1), ('compacted', 0)",
)


class _Kind(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    PUT = "put"


@dataclass(frozen=True, slots=True)
class _Op:
    kind: _Kind
    key: str
    value: bytes = b""
    revision: int | None = None


@dataclass(frozen=True, slots=True)
class _Applied:
    written: KeyValue | None  # the new KeyValue of a create/update/put
    previous: KeyValue | None  # the old KeyValue (deletes, and updates/puts of existing keys)


_TXN_KINDS = {
    TxnOpType.CREATE: _Kind.CREATE,
    TxnOpType.UPDATE: _Kind.UPDATE,
    TxnOpType.DELETE: _Kind.DELETE,
}


class EmbeddedDatastore(Datastore):
    """Datastore on a SQLite file; several processes may open the same file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.path = Path(path)
        self.history_limit = history_limit
        self._compact_every = min(COMPACT_EVERY, max(1, history_limit // 10))
        self._poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._local = threading.local()  # each worker thread's own connection
        self._db = ThreadPoolExecutor(1, thread_name_prefix="calico-sqlite")
        self._watch_db = ThreadPoolExecutor(1, thread_name_prefix="calico-sqlite-watch")
        self._closed = False
        # Watchers wait on the current event; waking replaces it so no wake-up is lost.
        self._wakeup = asyncio.Event()
        self._poller: threading.Thread | None = None
        self._poller_stop = threading.Event()

    # ---- connection handling (runs in the worker threads) ----

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open_connection()
            self._local.conn = conn
        return conn

    def _open_connection(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            # Switching to WAL needs a moment of exclusive access; it is persistent, so only
            # the first opener of a new file pays, and busy_timeout covers racing openers.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DatastoreUnavailableError(f"{self.path}: cannot switch to WAL ({mode})")
            # NORMAL in WAL mode: a crash cannot corrupt the file; a power loss may lose the
            # last commits. Cluster state is reconciled by the services, so speed wins here.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _close_connection(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        if self._closed:
            raise DatastoreError("datastore is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(self._guard, fn))

    def _guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (sqlite3.Error, OSError) as exc:  # OSError: cannot create the directory
            raise DatastoreUnavailableError(f"{self.path}: {exc}") from exc

    # ---- reads ----

    @staticmethod
    def _meta(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    @staticmethod
    def _row_to_kv(key: str, row: Sequence[Any]) -> KeyValue:
        return KeyValue(key=key, value=bytes(row[0]), create_revision=row[1], mod_revision=row[2])

    def _get_sync(self, key: str) -> KeyValue | None:
        row = (
            self._connection()
            .execute("SELECT value, create_rev, mod_rev FROM kv WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else self._row_to_kv(key, row)

    def _list_sync(self, prefix: str) -> ListResult:
        conn = self._connection()
        end = prefix_range_end(prefix)
        # One read transaction: the rows and the revision come from the same snapshot.
        conn.execute("BEGIN")
        try:
            if end is None:
                cursor = conn.execute(
                    "SELECT key, value, create_rev, mod_rev FROM kv WHERE key >= ? ORDER BY key",
                    (prefix,),
                )
            else:
                cursor = conn.execute(
                    "SELECT key, value, create_rev, mod_rev FROM kv"
                    " WHERE key >= ? AND key < ? ORDER BY key",
                    (prefix, end),
                )
            items = [self._row_to_kv(r[0], r[1:]) for r in cursor]
            revision = self._meta(conn, "revision")
        finally:
            conn.execute("COMMIT")
        return ListResult(items=items, revision=revision)

    async def get(self, key: str) -> KeyValue:
        check_key(key)
        kv = await self._run(self._db, lambda: self._get_sync(key))
        if kv is None:
            raise KeyNotFoundError(key)
        return kv

    async def list(self, prefix: str) -> ListResult:
        return await self._run(self._db, lambda: self._list_sync(prefix))

    async def current_revision(self) -> int:
        return await self._run(self._db, lambda: self._meta(self._connection(), "revision"))

    # ---- writes ----

    def _apply_sync(self, ops: Sequence[_Op]) -> builtins.list[_Applied]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            applied = self._apply_locked(conn, ops)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return applied

    def _apply_locked(
        self, conn: sqlite3.Connection, ops: Sequence[_Op]
    ) -> builtins.list[_Applied]:
        # Check every condition against the state before the txn, then write: keys are
        # unique within a txn, so the order of checks does not matter.
        current: builtins.list[KeyValue | None] = []
        for op in ops:
            row = conn.execute(
                "SELECT value, create_rev, mod_rev FROM kv WHERE key = ?", (op.key,)
            ).fetchone()
            existing = None if row is None else self._row_to_kv(op.key, row)
            if op.kind is _Kind.CREATE and existing is not None:
                raise KeyExistsError(op.key)
            if op.kind in (_Kind.UPDATE, _Kind.DELETE):
                if existing is None:
                    raise KeyNotFoundError(op.key)
                if op.revision is not None and existing.mod_revision != op.revision:
                    raise RevisionConflictError(op.key, op.revision, existing.mod_revision)
            current.append(existing)

        revision = self._meta(conn, "revision") + 1
        applied: builtins.list[_Applied] = []
        for idx, (op, existing) in enumerate(zip(ops, current, strict=True)):
            if op.kind is _Kind.DELETE:
                conn.execute("DELETE FROM kv WHERE key = ?", (op.key,))
                conn.execute(
                    "INSERT INTO events (rev, idx, deleted, key, value) VALUES (?, ?, 1, ?, ?)",
                    (revision, idx, op.key, None if existing is None else existing.value),
                )
                applied.append(_Applied(written=None, previous=existing))
                continue
            create_rev = revision if existing is None else existing.create_revision
            conn.execute(
                "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " mod_rev = excluded.mod_rev",
                (op.key, op.value, create_rev, revision),
            )
            conn.execute(
                "INSERT INTO events (rev, idx, deleted, key, value) VALUES (?, ?, 0, ?, ?)",
                (revision, idx, op.key, op.value),
            )
            written = KeyValue(op.key, op.value, mod_revision=revision, create_revision=create_rev)
            applied.append(_Applied(written=written, previous=existing))

        conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
        if revision % self._compact_every == 0:
            self._compact_locked(conn, revision - self.history_limit + 1)
        return applied

    def _compact_locked(self, conn: sqlite3.Connection, revision: int) -> None:
        if revision <= self._meta(conn, "compacted"):
            return
        conn.execute("DELETE FROM events WHERE rev < ?", (revision,))
        conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (revision,))

    async def _apply(self, ops: Sequence[_Op]) -> builtins.list[_Applied]:
        applied = await self._run(self._db, lambda: self._apply_sync(ops))
        self._wake_watchers()
        return applied

    async def create(self, key: str, value: bytes) -> KeyValue:
        check_key(key)
        (result,) = await self._apply([_Op(_Kind.CREATE, key, value)])
        assert result.written is not None
        return result.written

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        check_key(key)
        (result,) = await self._apply([_Op(_Kind.UPDATE, key, value, revision)])
        assert result.written is not None
        return result.written

    async def put(self, key: str, value: bytes) -> KeyValue:
        check_key(key)
        (result,) = await self._apply([_Op(_Kind.PUT, key, value)])
        assert result.written is not None
        return result.written

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        check_key(key)
        (result,) = await self._apply([_Op(_Kind.DELETE, key, revision=revision)])
        assert result.previous is not None
        return result.previous

    async def txn(self, ops: builtins.list[TxnOp]) -> builtins.list[KeyValue | None]:
        check_txn_ops(ops)
        if not ops:
            return []
        internal = [_Op(_TXN_KINDS[op.type], op.key, op.value, op.revision) for op in ops]
        return [result.written for result in await self._apply(internal)]

    async def compact(self, revision: int) -> None:
        """Drop history below `revision` (as etcd's compact): watching from earlier resyncs."""

        def compact_sync() -> None:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if revision > self._meta(conn, "revision"):
                    raise ValueError(f"cannot compact to future revision {revision}")
                self._compact_locked(conn, revision)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(self._db, compact_sync)

    # ---- watch ----

    def _wake_watchers(self) -> None:
        woken, self._wakeup = self._wakeup, asyncio.Event()
        woken.set()

    def _ensure_poller(self) -> None:
        if self._poller is not None:
            return
        loop = asyncio.get_running_loop()
        self._poller = threading.Thread(
            target=self._poll_for_commits, args=(loop,), name="calico-sqlite-poll", daemon=True
        )
        self._poller.start()

    def _poll_for_commits(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread body: wake watchers whenever any other connection commits to the file."""
        try:
            conn = self._open_connection()
        except (sqlite3.Error, OSError, DatastoreError):
            # Watchers then notice only local writes; their own reads report the error.
            return
        try:
            last = None
            while not self._poller_stop.is_set():
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version != last:
                    last = version
                    try:
                        loop.call_soon_threadsafe(self._wake_watchers)
                    except RuntimeError:  # the loop is closed
                        return
                self._poller_stop.wait(self._poll_interval)
        except sqlite3.Error:
            return
        finally:
            conn.close()

    def _read_events_sync(
        self, prefix: str, start: int
    ) -> tuple[builtins.list[WatchEvent], int, int, int]:
        """Events from `start` on, the last revision covered, the head and compacted revision."""
        conn = self._connection()
        end = prefix_range_end(prefix)
        conn.execute("BEGIN")
        try:
            head = self._meta(conn, "revision")
            compacted = self._meta(conn, "compacted")
            last = min(head, start + WATCH_BATCH_REVISIONS - 1)
            sql = (
                "SELECT rev, deleted, key, value FROM events"
                " WHERE rev >= ? AND rev <= ? AND key >= ?"
            )
            params: tuple[object, ...] = (start, last, prefix)
            if end is not None:
                sql += " AND key < ?"
                params += (end,)
            rows = conn.execute(sql + " ORDER BY rev, idx", params).fetchall()
        finally:
            conn.execute("COMMIT")
        events = [
            WatchEvent(
                type=EventType.DELETE if deleted else EventType.PUT,
                key=key,
                value=None if value is None else bytes(value),
                revision=rev,
            )
            for rev, deleted, key, value in rows
        ]
        return events, last, head, compacted

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """See Datastore.watch; `start_revision` <= 0 means "changes after now"."""
        if start_revision <= 0:
            start_revision = await self.current_revision() + 1
        next_rev = start_revision
        self._ensure_poller()
        while not self._closed:
            # Take the wake-up event before reading so a commit in between is not missed.
            wakeup = self._wakeup
            events, last, head, compacted = await self._run(
                self._watch_db, functools.partial(self._read_events_sync, prefix, next_rev)
            )
            if next_rev < compacted:
                raise ResyncRequiredError(
                    f"watch of {prefix!r} from revision {next_rev}: history compacted"
                    f" below {compacted}"
                )
            for event in events:
                yield event
            next_rev = max(next_rev, last + 1)
            if last >= head:
                await wakeup.wait()

    # ---- lifecycle ----

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_watchers()
        self._poller_stop.set()
        loop = asyncio.get_running_loop()
        for executor in (self._db, self._watch_db):
            await loop.run_in_executor(executor, self._close_connection)
            executor.shutdown(wait=False)
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
