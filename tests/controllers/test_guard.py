"""The right to act, checked on every write (in-process, embedded datastore, a test clock).

What keeps a replica resumed after SIGSTOP from acting even when one of its controllers runs
before the election loop notices the lapse: the write is refused before it is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, KeyNotFoundError, KeyValue, connect
from services.controllers.copier import CopyController
from services.controllers.copies import PODS
from services.controllers.guarded import GuardedDatastore
from services.controllers.informer import Informer
from services.controllers.leader import Leadership, NotLeaderError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def store(embedded_config: DatastoreConfig) -> AsyncIterator[Datastore]:
    ds = await connect(embedded_config)
    try:
        yield ds
    finally:
        await ds.close()


async def test_writes_stop_the_moment_the_right_lapses(store: Datastore) -> None:
    clock = FakeClock()
    leadership = Leadership(clock)
    guarded = GuardedDatastore(store, leadership)
    with pytest.raises(NotLeaderError):
        await guarded.create("/calico/test/before", b"x")  # never held
    leadership.extend(clock.now + 10)
    await guarded.create("/calico/test/a", b"1")
    clock.now += 9.99
    await guarded.put("/calico/test/a", b"2")
    clock.now += 0.01
    for write in (
        guarded.put("/calico/test/a", b"3"),
        guarded.create("/calico/test/b", b"1"),
        guarded.delete("/calico/test/a"),
    ):
        with pytest.raises(NotLeaderError):
            await write
    assert (await store.get("/calico/test/a")).value == b"2"
    with pytest.raises(KeyNotFoundError):
        await store.get("/calico/test/b")
    assert (guarded.writes, guarded.refused) == (2, 4)
    # Reads go on.
    assert (await guarded.get("/calico/test/a")).value == b"2"


class StuckDatastore(GuardedDatastore):
    """A backend whose creates hang (an unreachable etcd being retried)."""

    def __init__(self, inner: Datastore) -> None:
        super().__init__(inner, Leadership())
        self.cancelled = False

    async def create(self, key: str, value: bytes) -> KeyValue:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


async def test_a_write_still_pending_when_the_right_lapses_is_abandoned(
    store: Datastore,
) -> None:
    leadership = Leadership()
    leadership.extend(time.monotonic() + 0.2)
    stuck = StuckDatastore(store)
    guarded = GuardedDatastore(stuck, leadership)
    started = time.monotonic()
    with pytest.raises(NotLeaderError, match="abandoned"):
        await guarded.create("/calico/test/stuck", b"x")
    assert time.monotonic() - started < 1.0
    assert stuck.cancelled, "the backend's write was not cancelled: it could be sent later"


async def test_a_controller_running_after_the_lapse_writes_nothing(store: Datastore) -> None:
    clock = FakeClock()
    leadership = Leadership(clock)
    leadership.extend(clock.now + 10)
    informer = Informer(None, PODS.api_path, "pods")  # type: ignore[arg-type]
    informer.objects[("ns", "p")] = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c"}]},
    }
    informer.synced.set()
    copier = CopyController(PODS, informer, GuardedDatastore(store, leadership), 300.0)
    await copier.full_pass()
    key = PODS.key(("ns", "p"))
    written = await store.get(key)
    # Paused past the deadline; on resuming, the informer delivers a change first.
    clock.now += 30
    informer.objects[("ns", "p")]["metadata"]["labels"] = {"app": "b"}
    with pytest.raises(NotLeaderError):
        await copier.sync(("ns", "p"))
    assert (await store.get(key)).mod_revision == written.mod_revision
