"""Behaviour specific to the SQLite backend: file handling, bounded history."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from libcalico.datastore import DatastoreError, ResyncRequiredError
from libcalico.datastore.embedded import EmbeddedDatastore
from tests.fixtures.watch import aclose


async def test_creates_missing_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "calico.db"
    async with EmbeddedDatastore(path) as store:
        await store.put("/calico/x", b"1")
    assert path.exists()
    # The file is in WAL mode, which persists for every later opener.
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "calico.db"
    async with EmbeddedDatastore(path) as store:
        written = await store.put("/calico/x", b"1")
    async with EmbeddedDatastore(path) as store:
        assert await store.get("/calico/x") == written
        assert await store.current_revision() == written.mod_revision


async def test_history_is_bounded_and_old_watches_resync(tmp_path: Path) -> None:
    store = EmbeddedDatastore(tmp_path / "calico.db", history_limit=20)
    async with store:
        first = await store.put("/calico/k", b"0")
        for i in range(1, 100):
            await store.put("/calico/k", str(i).encode())
        with sqlite3.connect(tmp_path / "calico.db") as conn:
            rows = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        assert rows <= 20 + 2  # the limit plus at most one compaction interval
        with pytest.raises(ResyncRequiredError):
            async for _ in store.watch("/calico/", first.mod_revision):
                pass
        # Recent history is still replayed.
        head = await store.current_revision()
        stream = store.watch("/calico/", head - 9)
        seen = []
        async with asyncio.timeout(5):
            async for event in stream:
                seen.append(event.value)
                if len(seen) == 10:
                    break
        await aclose(stream)
        assert seen == [str(i).encode() for i in range(90, 100)]


async def test_compact_to_future_revision_is_rejected(tmp_path: Path) -> None:
    store = EmbeddedDatastore(tmp_path / "calico.db")
    async with store:
        with pytest.raises(ValueError, match="future"):
            await store.compact(await store.current_revision() + 5)


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = EmbeddedDatastore(tmp_path / "calico.db")
    await store.put("/calico/x", b"1")
    await store.close()
    with pytest.raises(DatastoreError, match="closed"):
        await store.get("/calico/x")
