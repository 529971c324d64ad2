"""Run calico-ipamd daemons as real subprocesses on real Unix sockets, for tests/benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from libcalico.datastore import Datastore
from libcalico.ipam.store import IpamStore
from tests.ipam.helpers import put_pool

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


@dataclass
class Daemon:
    node: str
    socket: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix:{self.socket}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def spawn_daemon(
    node: str, workdir: Path, env: Mapping[str, str], extra_args: Sequence[str] = ()
) -> Daemon:
    sock = str(workdir / f"{node}.sock")
    log_path = workdir / f"{node}.log"
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "services.ipam.main"),
                *("--socket", sock, "--nodename", node, *extra_args),
            ],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Daemon(node, sock, proc, log_path)


async def wait_ready(daemon: Daemon) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"calico-ipamd {daemon.node} exited:\n{daemon.log()}")
        async with daemon.channel() as channel:
            stub = ipam_pb2_grpc.IpamStub(channel)
            try:
                await stub.GetAllocations(
                    ipam_pb2.GetAllocationsRequest(handle_id="readiness-probe"), timeout=2
                )
                return
            except grpc.aio.AioRpcError:
                pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"calico-ipamd {daemon.node} not ready:\n{daemon.log()}")


def stop_daemon(daemon: Daemon, sig: int = signal.SIGTERM) -> None:
    if daemon.process.poll() is None:
        daemon.process.send_signal(sig)
        try:
            daemon.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait(timeout=10)


@contextlib.asynccontextmanager
async def running_daemons(
    nodes: list[str],
    env: Mapping[str, str],
    extra_args: Callable[[str], Sequence[str]] = lambda node: (),
) -> AsyncIterator[list[Daemon]]:
    """Start one daemon per node name (sockets in a fresh temp dir); stop and clean up after.

    `extra_args(node)`: more command-line arguments for that node's daemon."""
    workdir = Path(tempfile.mkdtemp(prefix="cpt-ipam-"))
    daemons: list[Daemon] = []
    try:
        daemons = [spawn_daemon(node, workdir, env, extra_args(node)) for node in nodes]
        await asyncio.gather(*(wait_ready(d) for d in daemons))
        yield daemons
    finally:
        for daemon in daemons:
            stop_daemon(daemon)
        shutil.rmtree(workdir, ignore_errors=True)


async def assign(
    stub: ipam_pb2_grpc.IpamAsyncStub, handle: str, v4: int = 1, v6: int = 0
) -> list[str]:
    reply = await stub.AutoAssign(
        ipam_pb2.AutoAssignRequest(num_ipv4=v4, num_ipv6=v6, handle_id=handle), timeout=30
    )
    return list(reply.ipv4) + list(reply.ipv6)


SHARED_POOL_NODES = ["node-0", "node-1", "node-2", "node-3"]


async def race_for_a_shared_pool(
    datastore: Datastore, env: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Four daemons (SHARED_POOL_NODES), 8 clients each, take exactly the 512 addresses of a
    pool of 32 blocks of 16, unevenly spread (200/160/96/56): once every block is claimed,
    nodes must borrow from the others' partly used blocks (56 is not a multiple of 16), and
    every request must still succeed. Checks no address went out twice and every allocation
    reads back with its handle and node, affine or recorded as borrowed; the (handle, ip)
    pairs handed out."""
    await put_pool(datastore, "shared", "10.2.0.0/23", block_size=28)
    per_node = dict(zip(SHARED_POOL_NODES, (200, 160, 96, 56), strict=True))
    concurrency = 8
    async with running_daemons(SHARED_POOL_NODES, env) as daemons:

        async def client(daemon: Daemon, worker: int) -> list[tuple[str, str]]:
            out = []
            async with daemon.channel() as channel:
                stub = ipam_pb2_grpc.IpamStub(channel)
                for i in range(per_node[daemon.node] // concurrency):
                    handle = f"{daemon.node}.w{worker}.{i}"
                    (ip,) = await assign(stub, handle)
                    out.append((handle, ip.split("/")[0]))
            return out

        results = await asyncio.gather(*(client(d, w) for d in daemons for w in range(concurrency)))
    handed_out = [pair for chunk in results for pair in chunk]
    assert len(handed_out) == 512
    assert len({ip for _, ip in handed_out}) == 512

    # Read every allocation back from the datastore.
    store = IpamStore(datastore, cache=False)
    blocks = [b.value for b in await store.list_blocks(4)]
    stored = {str(a.ip): (a, b) for b in blocks for a in b.all_allocations()}
    assert len(stored) == sum(b.in_use for b in blocks) == 512
    borrowed = 0
    for handle, ip in handed_out:
        alloc, block = stored[ip]
        assert alloc.handle_id == handle
        node = handle.split(".")[0]
        assert alloc.attributes["node"] == node
        if block.affine_node != node:
            borrowed += 1  # recorded as borrowed: the block belongs to another node
    assert sum(Counter(b.affine_node for b in blocks).values()) == 32
    assert 0 < borrowed < 512
    return handed_out


async def kill_a_daemon_mid_allocation(
    datastore: Datastore, env: Mapping[str, str], kill_delay: float = 0.0
) -> tuple[list[tuple[str, str]], str]:
    """Daemons for node-a (8 clients) and node-b (4) allocate from one pool of /26 blocks;
    node-a's is killed with SIGKILL once it has answered 60 times, `kill_delay` after a reply
    (on a datastore whose txn is ordered writes, the moment it writes its next batch), and a
    new daemon for node-a carries on where it stopped. Then that daemon hands out one more
    address, for a pod deleted without its CNI DEL. The (handle, ip) pairs answered, checked
    unique, and that leaked address."""
    await put_pool(datastore, "pool", "10.3.0.0/22", block_size=26)
    acknowledged: list[tuple[str, str]] = []
    enough_on_a = asyncio.Event()

    async def hammer(daemon: Daemon, prefix: str, count: int) -> None:
        async with daemon.channel() as channel:
            stub = ipam_pb2_grpc.IpamStub(channel)
            for i in range(count):
                handle = f"k8s-pod-network.{prefix}{i}"
                try:
                    (ip,) = await assign(stub, handle)
                except grpc.aio.AioRpcError:
                    return  # the daemon died under us
                acknowledged.append((handle, ip.split("/")[0]))
                if sum(1 for h, _ in acknowledged if h.startswith("k8s-pod-network.a")) >= 60:
                    enough_on_a.set()

    async with running_daemons(["node-a", "node-b"], env) as (a, b):
        tasks = [asyncio.create_task(hammer(a, f"a{w}x", 200)) for w in range(8)]
        tasks += [asyncio.create_task(hammer(b, f"b{w}x", 40)) for w in range(4)]
        await asyncio.wait_for(enough_on_a.wait(), timeout=60)
        await asyncio.sleep(kill_delay)
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(timeout=10)
        await asyncio.gather(*tasks)
        again = spawn_daemon("node-a", Path(a.socket).parent, env)
        try:
            await wait_ready(again)
            await hammer(again, "after", 20)
            async with again.channel() as channel:
                (gone,) = await assign(ipam_pb2_grpc.IpamStub(channel), "k8s-pod-network.gone")
        finally:
            stop_daemon(again)
    ips = [ip for _, ip in acknowledged]
    assert len(ips) == len(set(ips))
    leaked_ip = gone.split("/")[0]
    assert leaked_ip not in ips
    return acknowledged, leaked_ip
