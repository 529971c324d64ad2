"""The stream a client gets from a real calico-typha: snapshot, in-sync, deltas, status."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from calico.typha.v1 import typha_pb2
from libcalico.datastore import Datastore
from libcalico.datastore.keys import GROUP_CALICO, resource_key
from libcalico.syncer.api import Delete, InSync, Update
from libcalico.syncer.selection import BGP_PREFIXES
from libcalico.syncer.typha import TyphaSyncer
from tests.typha.typhakit import (
    TyphaProcess,
    View,
    raw_stream,
    typha_has,
    typha_status,
    wait_for,
)


def wep(name: str) -> str:
    return resource_key(GROUP_CALICO, "workloadendpoints", name, "default")


def body(name: str, n: int) -> bytes:
    return json.dumps({"name": name, "n": n}).encode()


async def consume(syncer: TyphaSyncer, view: View) -> None:
    async for batch in syncer.updates():
        view.apply(batch)


async def test_snapshot_then_deltas(typha: TyphaProcess, datastore: Datastore) -> None:
    for i in range(5):
        await datastore.put(wep(f"a{i}"), body("a", i))
    await typha_has(typha.address, "felix", 5)
    syncer = TyphaSyncer(typha.address, "node-1", "felix", tracing=False)
    updates = syncer.updates()
    first = await asyncio.wait_for(updates.__anext__(), 10)
    assert isinstance(first[-1], InSync)
    assert sorted(u.key for u in first if isinstance(u, Update)) == sorted(
        wep(f"a{i}") for i in range(5)
    )
    await datastore.put(wep("b"), body("b", 1))
    batch = await asyncio.wait_for(updates.__anext__(), 10)
    assert isinstance(batch[0], Update)
    assert batch == [Update(wep("b"), body("b", 1), batch[0].revision)]
    await datastore.delete(wep("a0"))
    batch = await asyncio.wait_for(updates.__anext__(), 10)
    assert [type(u) for u in batch] == [Delete]
    assert isinstance(batch[0], Delete) and batch[0].key == wep("a0")
    await syncer.close()


async def test_duplicates_not_sent_and_late_joiner(
    typha: TyphaProcess, datastore: Datastore
) -> None:
    """A value rewritten unchanged produces no message; a client joining after some deltas
    sees the same final state as one that was there from the start."""
    early = TyphaSyncer(typha.address, "early", "felix", tracing=False)
    early_view = View({})
    task = asyncio.create_task(consume(early, early_view))
    await wait_for(lambda: _true(early_view.in_sync))
    await datastore.put(wep("x"), body("x", 1))
    await datastore.put(wep("x"), body("x", 1))  # same bytes: a duplicate for Typha
    await datastore.put(wep("x"), body("x", 2))
    await wait_for(lambda: _true(early_view.state.get(wep("x")) == body("x", 2)))
    # Raw stream: exactly one delta for the first put, none for the repeat, one for the change.
    async with raw_stream(
        typha.address, typha_pb2.ClientHello(node_name="raw", syncer_type="felix")
    ) as call:
        kinds: list[str | None] = []
        while not kinds or kinds[-1] != "in_sync":
            msg = await asyncio.wait_for(call.read(), 10)
            kinds.append(msg.WhichOneof("payload"))
        assert kinds[0] == "hello" and kinds[-1] == "in_sync"
        await datastore.put(wep("x"), body("x", 2))  # duplicate again
        await datastore.put(wep("y"), body("y", 1))
        msg = await asyncio.wait_for(call.read(), 10)
        assert [c.key for c in msg.deltas.changes] == [wep("y")]
    late = TyphaSyncer(typha.address, "late", "felix", tracing=False)
    late_view = View({})
    late_task = asyncio.create_task(consume(late, late_view))
    await wait_for(lambda: _true(late_view.state == early_view.state and late_view.in_sync))
    assert early_view.updates == 3  # x twice (1, then 2) and y: the duplicates never arrived
    for t, s in ((task, early), (late_task, late)):
        await s.close()
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)


async def _true(value: bool) -> bool:
    return value


async def test_status_and_single_watch(typha: TyphaProcess, datastore: Datastore) -> None:
    await datastore.put(wep("s"), body("s", 1))
    await typha_has(typha.address, "felix", 1)
    syncers = [TyphaSyncer(typha.address, f"n{i}", "felix", tracing=False) for i in range(5)]
    syncers.append(TyphaSyncer(typha.address, "bgp-node", "bgp", tracing=False))
    views = [View({}) for _ in syncers]
    tasks = [asyncio.create_task(consume(s, v)) for s, v in zip(syncers, views, strict=True)]
    await wait_for(lambda: _true(all(v.in_sync for v in views)))
    status = await typha_status(typha.address)
    assert len(status.clients) == 6
    assert {c.node_name for c in status.clients} == {"n0", "n1", "n2", "n3", "n4", "bgp-node"}
    assert all(c.in_sync and c.lag_breadcrumbs == 0 for c in status.clients)
    caches = {c.syncer_type: c for c in status.caches}
    assert caches["felix"].snapshot_size == 1 and caches["felix"].connected_clients == 5
    assert caches["bgp"].snapshot_size == 0 and caches["bgp"].connected_clients == 1
    assert status.datastore_watches == 1
    assert views[-1].state == {}  # the bgp client never sees Felix's keys
    for s in syncers:
        await s.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await wait_for(lambda: _no_clients(typha.address))


async def _no_clients(address: str) -> bool:
    return len((await typha_status(address)).clients) == 0


async def test_bgp_stream_carries_bgp_keys(typha: TyphaProcess, datastore: Datastore) -> None:
    node_key = BGP_PREFIXES[0] + "node-a"
    await datastore.put(node_key, b'{"spec": {}}')
    await datastore.put(wep("w"), body("w", 1))
    await typha_has(typha.address, "felix", 2)  # Felix reads Nodes too (VXLAN VTEPs)
    await typha_has(typha.address, "bgp", 1)
    syncer = TyphaSyncer(typha.address, "bgp-1", "bgp", tracing=False)
    updates = syncer.updates()
    first = await asyncio.wait_for(updates.__anext__(), 10)
    assert [u.key for u in first if isinstance(u, Update)] == [node_key]
    await syncer.close()


@pytest.mark.parametrize("syncer_type", ["nonsense"])
async def test_unknown_syncer_type_refused(typha: TyphaProcess, syncer_type: str) -> None:
    hello = typha_pb2.ClientHello(node_name="n", syncer_type=syncer_type)
    async with raw_stream(typha.address, hello) as call:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
