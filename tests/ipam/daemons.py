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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc

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
