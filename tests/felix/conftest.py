"""Fixtures for Felix's endpoint tests: a node namespace running calico-felix, pod namespaces.

Everything lives in namespaces named `cpt-felix-<random>-...`; the host's own namespace is
never touched. Felix runs inside the node namespace (nsenter), so host-side veths live there.
Namespaces, processes (by PID) and temporary files are removed on teardown, also on failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from calico.felix.v1 import endpoints_pb2 as pb
from calico.felix.v1 import endpoints_pb2_grpc as pb_grpc
from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, connect
from services.felix.endpoints import netns

REPO = Path(__file__).resolve().parents[2]
FELIX = str(REPO / ".venv" / "bin" / "calico-felix")
NODE_NAME = "node-a"
NETNS_DIR = "/var/run/netns"
START_TIMEOUT = 20.0

if os.geteuid() != 0:
    pytest.skip("Felix endpoint tests need root (network namespaces)", allow_module_level=True)


def run(
    *cmd: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    return subprocess.run(full, check=check, capture_output=True, text=True, timeout=30)


def ip_json(netns: str, *args: str) -> Any:
    return json.loads(run("ip", "-j", *args, netns=netns).stdout or "[]")


def read_sysctl(netns: str, path: str) -> str:
    return run("cat", f"/proc/sys/net/{path}", netns=netns).stdout.strip()


PROBE = str(Path(__file__).with_name("netprobe.py"))


def ping(netns: str, addr: str) -> bool:
    return run(sys.executable, PROBE, "ping", addr, netns=netns, check=False).returncode == 0


def tcp_roundtrip(client: str, server: str, addr: str, port: int = 7000) -> bool:
    """A TCP connection from `client` to a one-shot echo server on `addr` in `server`."""
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server, sys.executable, PROBE, "serve", addr, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != "listening":
            return False
        res = run(sys.executable, PROBE, "connect", addr, str(port), netns=client, check=False)
        return res.returncode == 0 and res.stdout == "hello"
    finally:
        srv.kill()
        srv.wait(5)


@dataclass
class Namespaces:
    """Network namespaces made by one test, deleted at the end."""

    prefix: str = field(default_factory=lambda: f"cpt-felix-{secrets.token_hex(3)}")
    made: list[str] = field(default_factory=list)

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        run("ip", "netns", "add", name)
        self.made.append(name)
        run("ip", "link", "set", "lo", "up", netns=name)
        return name

    def path(self, name: str) -> str:
        return f"{NETNS_DIR}/{name}"

    def cleanup(self) -> None:
        for name in reversed(self.made):
            run("ip", "netns", "del", name, check=False)
        self.made.clear()


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    ns = Namespaces()
    try:
        yield ns
    finally:
        ns.cleanup()


def make_node(namespaces: Namespaces) -> str:
    """A node namespace with forwarding on and a default route (proxy ARP answers only for
    destinations routed out another interface, as on a real node)."""
    node = namespaces.add("node")
    run("ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1", netns=node)
    run("ip", "addr", "add", "192.0.2.1/24", "dev", "uplink0", netns=node)
    run("ip", "link", "set", "uplink0", "up", netns=node)
    run("ip", "link", "set", "uplink1", "up", netns=node)
    run("ip", "route", "add", "default", "via", "192.0.2.2", "dev", "uplink0", netns=node)
    run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=node)
    run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", netns=node)
    return node


@pytest.fixture
def node(namespaces: Namespaces) -> str:
    return make_node(namespaces)


class FelixProcess:
    """calico-felix running inside the node namespace, started and killed by PID."""

    def __init__(self, node: str, env: dict[str, str], workdir: Path) -> None:
        self.node = node
        self.env = env
        self.socket = workdir / "felix.sock"
        self.log_path = workdir / "felix.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "NODENAME": NODE_NAME, "PYTHONUNBUFFERED": "1"}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        self.starts += 1
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                ["nsenter", f"--net={NETNS_DIR}/{self.node}", FELIX, "--socket", str(self.socket)],
                env=env,
                stdout=log,
                stderr=log,
            )

    async def start(self) -> None:
        self.proc = self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"calico-felix exited: {self.logs()}")
            if self.socket.exists() and await self._healthy():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"calico-felix did not start: {self.logs()}")

    async def _healthy(self) -> bool:
        async with grpc.aio.insecure_channel(f"unix:{self.socket}") as channel:
            stub = pb_grpc.EndpointsStub(channel)
            try:
                await stub.ListEndpoints(pb.ListEndpointsRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
        return True

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@dataclass
class FelixHarness:
    namespaces: Namespaces
    node: str
    felix: FelixProcess
    datastore: Datastore
    channel: grpc.aio.Channel
    stub: pb_grpc.EndpointsAsyncStub
    relay: LoopbackRelay | None = None
    pods: int = 0

    def new_pod_netns(self) -> str:
        self.pods += 1
        return self.namespaces.add(f"p{self.pods}")

    def netns_path(self, name: str) -> str:
        return self.namespaces.path(name)

    async def reconnect(self) -> None:
        await self.channel.close(None)
        self.channel = grpc.aio.insecure_channel(f"unix:{self.felix.socket}")
        self.stub = pb_grpc.EndpointsStub(self.channel)


class LoopbackRelay:
    """Forwards TCP from the node namespace's loopback to a port on the host's loopback.

    Felix runs in the node namespace, where the test's etcd (on the host's 127.0.0.1) is out
    of reach. The listening socket is made inside the node namespace by a thread that steps
    in and out (a socket stays in the namespace it was made in); connections are forwarded
    from this process, which is in the host namespace.
    """

    def __init__(self, node: str, target_port: int) -> None:
        self.node = node
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _listen_in_node(self) -> socket.socket:
        home = netns.current_netns_fd()
        target = netns.open_netns(f"{NETNS_DIR}/{self.node}")
        try:
            with netns.entered(target, home):
                sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            return sock
        finally:
            os.close(target)
            os.close(home)

    async def start(self) -> None:
        sock = await asyncio.to_thread(self._listen_in_node)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def start_harness(
    namespaces: Namespaces, node: str, config: DatastoreConfig, workdir: Path
) -> FelixHarness:
    relay: LoopbackRelay | None = None
    endpoints = list(config.etcd_endpoints)
    if config.type == "etcdv3":
        port = int(endpoints[0].rsplit(":", 1)[1])
        relay = LoopbackRelay(node, port)
        await relay.start()
        endpoints = [f"http://127.0.0.1:{relay.port}"]
    env = {
        "DATASTORE_TYPE": config.type,
        "CALICO_DATASTORE_PATH": config.path,
        "ETCD_ENDPOINTS": ",".join(endpoints),
    }
    felix = FelixProcess(node, env, workdir)
    datastore = await connect(config)
    try:
        await felix.start()
    except BaseException:
        felix.kill()
        await datastore.close()
        if relay is not None:
            await relay.close()
        raise
    channel = grpc.aio.insecure_channel(f"unix:{felix.socket}")
    return FelixHarness(
        namespaces, node, felix, datastore, channel, pb_grpc.EndpointsStub(channel), relay
    )


async def stop_harness(h: FelixHarness) -> None:
    await h.channel.close(None)
    h.felix.kill(signal.SIGTERM)
    await h.datastore.close()
    if h.relay is not None:
        await h.relay.close()


@pytest_asyncio.fixture
async def felix(
    namespaces: Namespaces, node: str, embedded_config: DatastoreConfig, tmp_path: Path
) -> AsyncIterator[FelixHarness]:
    harness = await start_harness(namespaces, node, embedded_config, tmp_path)
    try:
        yield harness
    finally:
        await stop_harness(harness)
        if sys.exc_info()[0] is not None:
            print(harness.felix.logs())
