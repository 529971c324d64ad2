"""Convergence: random creates, updates and deletes while clients come and go and Typha is
killed (SIGKILL) and restarted; every client ends with exactly the datastore's state, compared
key by key and value by value, with no duplicate update and no second InSync on the way."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, KeyNotFoundError
from libcalico.datastore.keys import GROUP_CALICO, GROUP_CORE, resource_key
from libcalico.syncer.selection import SYNCER_PREFIXES, create_syncer
from libcalico.syncer.typha import TyphaSyncer
from tests.fixtures.etcd import free_port
from tests.typha.typhakit import TyphaProcess, View, datastore_view, typha_status

WRITE_SECONDS = 8.0
KEYS = (
    [resource_key(GROUP_CALICO, "workloadendpoints", f"w{i}", "ns1") for i in range(30)]
    + [resource_key(GROUP_CALICO, "globalnetworkpolicies", f"p{i}") for i in range(10)]
    + [resource_key(GROUP_CORE, "namespaces", f"ns{i}") for i in range(5)]
    + [resource_key(GROUP_CALICO, "nodes", f"node{i}") for i in range(8)]  # bgp
    + [resource_key(GROUP_CALICO, "ippools", f"pool{i}") for i in range(3)]  # bgp
    + [f"/calico/ipam/v2/handle/h{i}" for i in range(5)]  # nobody's: must never show up
)


class Client:
    def __init__(self, name: str, address: str, syncer_type: str, direct: Datastore | None) -> None:
        self.name = name
        self.syncer_type = syncer_type
        env = {} if direct is not None else {"TYPHA_ADDR": address}
        self.syncer = create_syncer(direct or _unused(), name, syncer_type, env)
        self.view = View({}, no_repeats=direct is None)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.syncer.updates():
            self.view.apply(batch)

    async def stop(self) -> None:
        await self.syncer.close()
        self.task.cancel()
        results = await asyncio.gather(self.task, return_exceptions=True)
        for result in results:  # a stream-rule violation shows up here
            if isinstance(result, AssertionError):
                raise result


def _unused() -> DatastoreConfig:
    return DatastoreConfig()  # never connected: Typha is configured


async def writer(datastore: Datastore, rng: random.Random, stop_at: float) -> int:
    ops = 0
    while time.monotonic() < stop_at:
        key = rng.choice(KEYS)
        action = rng.random()
        try:
            if action < 0.25:
                await datastore.delete(key)
            elif action < 0.35:
                current = await datastore.get(key)
                await datastore.put(key, current.value)  # same value: a duplicate for Typha
            else:
                await datastore.put(key, json.dumps({"v": rng.randrange(5)}).encode())
        except KeyNotFoundError:
            pass
        ops += 1
        await asyncio.sleep(rng.uniform(0, 0.006))
    return ops


async def test_convergence(
    tmp_path: Path, datastore: Datastore, datastore_env: dict[str, str]
) -> None:
    rng = random.Random(20261126)
    for key in KEYS[::2]:
        await datastore.put(key, b'{"v": "initial"}')
    port = free_port()
    typha = TyphaProcess(
        tmp_path, datastore_env, listen=f"127.0.0.1:{port}", socket=tmp_path / "t.sock"
    )
    typha.start()
    addresses = [f"127.0.0.1:{port}", str(tmp_path / "t.sock")]
    clients: list[Client] = []
    retired: list[Client] = []
    try:
        # Long-lived clients live through both Typha restarts; a direct one is the reference.
        for i, kind in enumerate(["felix", "felix", "bgp", "felix", "bgp"]):
            clients.append(Client(f"long{i}", addresses[i % 2], kind, None))
        reference = Client("direct", "", "felix", datastore)
        stop_at = time.monotonic() + WRITE_SECONDS
        write_task = asyncio.create_task(writer(datastore, rng, stop_at))
        kill_times = [WRITE_SECONDS * 0.3, WRITE_SECONDS * 0.65]
        started = time.monotonic()
        churn = 0
        while time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(0.1, 0.3))
            if kill_times and time.monotonic() - started > kill_times[0]:
                kill_times.pop(0)
                typha.kill()
                await asyncio.sleep(0.3)  # writes go on while Typha is down
                await asyncio.to_thread(typha.start)
                continue
            # Client churn: drop a short-lived client, add a new one.
            if len(clients) > 5 and rng.random() < 0.5:
                victim = clients.pop(rng.randrange(5, len(clients)))
                await victim.stop()
                retired.append(victim)
            churn += 1
            kind = rng.choice(["felix", "bgp"])
            clients.append(Client(f"short{churn}", rng.choice(addresses), kind, None))
        ops = await write_task
        expected = {t: await datastore_view(datastore, p) for t, p in SYNCER_PREFIXES.items()}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            views = [c.view for c in [*clients, reference]]
            wanted = [expected[c.syncer_type] for c in [*clients, reference]]
            if all(v.in_sync and v.state == w for v, w in zip(views, wanted, strict=True)):
                break
            await asyncio.sleep(0.1)
        status = await typha_status(addresses[1])
        assert len(status.clients) == len(clients)
        assert status.datastore_watches == 1
        print(f"{ops} writes, {len(clients)} clients at the end, {churn} joined, 2 Typha kills")
        for client in [*clients, reference]:
            want = expected[client.syncer_type]
            got = client.view.state
            assert not client.task.done(), f"{client.name}: {client.task}"
            assert client.view.in_sync
            assert sorted(got) == sorted(want), f"{client.name} {client.syncer_type}: keys differ"
            for key, value in want.items():
                assert got[key] == value, f"{key}: {got[key]!r} != {value!r}"
            if isinstance(client.syncer, TyphaSyncer):
                assert {k: v for k, (v, _) in client.syncer.delivered.items()} == want
        long_lived = [c.syncer for c in clients[:5]]
        assert all(isinstance(s, TyphaSyncer) and s.connections >= 3 for s in long_lived)
        assert expected["felix"] and expected["bgp"]
    finally:
        for client in [*clients, *retired]:
            await client.stop()
        typha.stop()
