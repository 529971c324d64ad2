"""Dead and slow clients: a frozen client process is dropped by HTTP/2 keepalive; a client
that stops reading is disconnected once it lags too far, and a TyphaSyncer whose consumer
stalls is dropped, reconnects and ends with exactly the datastore's state."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from calico.typha.v1 import typha_pb2
from libcalico.config import DatastoreConfig
from libcalico.datastore import connect
from libcalico.datastore.keys import GROUP_CALICO, resource_key
from libcalico.syncer.datastore import FELIX_PREFIXES
from libcalico.syncer.typha import TyphaSyncer
from tests.typha.typhakit import TyphaProcess, View, datastore_view, raw_stream, typha_status

REPO = Path(__file__).resolve().parents[2]


def embedded_env(config: DatastoreConfig) -> dict[str, str]:
    return {"DATASTORE_TYPE": "embedded", "CALICO_DATASTORE_PATH": config.path}


async def clients_of(address: str) -> list[str]:
    return [c.node_name for c in (await typha_status(address)).clients]


async def test_frozen_client_dropped_by_keepalive(
    tmp_path: Path, embedded_config: DatastoreConfig
) -> None:
    args = ["--keepalive-seconds", "1", "--keepalive-timeout-seconds", "1"]
    with TyphaProcess(tmp_path, embedded_env(embedded_config), args=args) as typha:
        client = subprocess.Popen(  # noqa: ASYNC220 (a short, non-blocking start)
            [sys.executable, "-m", "tests.typha.sync_client", typha.address, "frozen"],
            cwd=REPO, stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            assert client.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(client.stdout.readline), 20)
            assert line.strip() == b"in-sync"
            assert await clients_of(typha.address) == ["frozen"]
            os.kill(client.pid, signal.SIGSTOP)  # its gRPC stops answering pings
            frozen_at = time.monotonic()
            while await clients_of(typha.address):
                assert time.monotonic() - frozen_at < 15, "frozen client never dropped"
                await asyncio.sleep(0.2)
            print(f"frozen client dropped after {time.monotonic() - frozen_at:.1f}s")
        finally:
            os.kill(client.pid, signal.SIGKILL)
            os.kill(client.pid, signal.SIGCONT)
            client.wait(timeout=10)


BIG = 200_000  # bytes per value: enough writes to back up a client that does not read


async def test_lagging_clients_disconnected_and_resync(
    tmp_path: Path, embedded_config: DatastoreConfig
) -> None:
    # Embedded only: this is Typha's behaviour, not the backend's.
    datastore = await connect(embedded_config)
    try:
        args = ["--max-lag-seconds", "1"]
        with TyphaProcess(tmp_path, embedded_env(embedded_config), args=args) as typha:
            hello = typha_pb2.ClientHello(node_name="stuck", syncer_type="felix")
            async with raw_stream(typha.address, hello) as stuck:
                while (await stuck.read()).WhichOneof("payload") != "in_sync":
                    pass
                # A real syncer whose consumer stalls for a while after its snapshot.
                stalled = TyphaSyncer(typha.address, "stalled", "felix", tracing=False)
                view = View({})
                resume = asyncio.Event()

                async def consume() -> None:
                    async for batch in stalled.updates():
                        view.apply(batch)
                        if view.batches == 1:
                            await resume.wait()

                task = asyncio.create_task(consume())
                while not view.in_sync:  # noqa: ASYNC110 (polling a plain attribute)
                    await asyncio.sleep(0.05)
                for i in range(80):  # ~16 MB the two clients cannot take
                    key = resource_key(GROUP_CALICO, "workloadendpoints", f"big{i}", "ns")
                    await datastore.put(key, os.urandom(BIG // 2).hex().encode())
                deadline = time.monotonic() + 20
                status = await typha_status(typha.address)
                while status.lagging_disconnects < 2:
                    assert time.monotonic() < deadline, f"not dropped: {status}"
                    await datastore.put(
                        resource_key(GROUP_CALICO, "profiles", "tick"), os.urandom(8)
                    )
                    await asyncio.sleep(0.3)
                    status = await typha_status(typha.address)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    while True:
                        await asyncio.wait_for(stuck.read(), 10)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            resume.set()
            expected = await datastore_view(datastore, FELIX_PREFIXES)
            deadline = time.monotonic() + 20
            while view.state != expected:
                assert time.monotonic() < deadline, "stalled client never converged"
                await asyncio.sleep(0.1)
            assert stalled.connections >= 2  # it was dropped and came back
            await stalled.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await datastore.close()
