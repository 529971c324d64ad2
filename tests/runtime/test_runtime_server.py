"""ServiceRuntime in-process: listeners, health, reflection, ServiceInfo, graceful stop."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from calico.common.v1 import service_info_pb2, service_info_pb2_grpc
from libcalico.runtime import AddressError, ServiceRuntime, open_channel
from libcalico.runtime.addresses import channel_target, unix_path_of

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INFO = "calico.common.v1.ServiceInfo"


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def test_health_on_tcp_and_unix_socket(sock_dir: Path) -> None:
    path = sock_dir / "run" / "demo.sock"  # parent created by the runtime
    async with ServiceRuntime("calico-demo", unix_socket=path) as rt:
        assert rt.tcp_port is not None and rt.tcp_port > 0
        assert rt.tcp_address == f"127.0.0.1:{rt.tcp_port}"
        assert rt.unix_address == f"unix://{path}"
        targets = [rt.tcp_address, rt.unix_address, f"unix:{path}", str(path)]
        for target in targets:
            async with open_channel(target) as channel:
                assert await health_status(channel) == SERVING, target
                assert await health_status(channel, INFO) == SERVING, target


async def test_unknown_service_health_is_not_found() -> None:
    async with ServiceRuntime("calico-demo") as rt, open_channel(rt.tcp_address or "") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_status(ch, "no.such.Service")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_socket_file_mode_is_0660_or_stricter(sock_dir: Path) -> None:
    path = sock_dir / "demo.sock"
    async with ServiceRuntime("calico-demo", tcp=None, unix_socket=path):
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) & ~0o660 == 0, oct(stat.S_IMODE(mode))
    assert not path.exists()


async def test_reflection_lists_every_service(sock_dir: Path) -> None:
    path = sock_dir / "demo.sock"
    async with (
        ServiceRuntime("calico-demo", tcp=None, unix_socket=path) as rt,
        open_channel(str(path)) as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
    listed = {s.name for s in replies[0].list_services_response.service}
    assert listed == set(rt.service_names)
    assert {INFO, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed


async def test_service_info_describes_the_daemon() -> None:
    rt = ServiceRuntime("calico-demo", node_name="node-7", datastore_type="etcdv3", version="9.9.9")
    async with rt, open_channel(rt.tcp_address or "") as channel:
        stub = service_info_pb2_grpc.ServiceInfoStub(channel)
        info = await stub.GetInfo(service_info_pb2.GetInfoRequest(), timeout=5)
    assert info.service_name == "calico-demo"
    assert info.version == "9.9.9"
    assert info.node_name == "node-7"
    assert info.datastore_type == "etcdv3"
    assert info.pid == os.getpid()
    assert info.start_time.seconds > 0


async def test_set_serving_and_watch_through_the_tracing_interceptor() -> None:
    # Watch is a response-streaming handler in the `await context.write()` style.
    async with ServiceRuntime("calico-demo") as rt, open_channel(rt.tcp_address or "") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=INFO))
        first = await asyncio.wait_for(watch.read(), 5)
        assert first.status == SERVING
        await rt.set_serving(INFO, False)
        second = await asyncio.wait_for(watch.read(), 5)
        assert second.status == NOT_SERVING
        assert await health_status(ch, INFO) == NOT_SERVING
        assert await health_status(ch) == SERVING
        watch.cancel()


def slow_service(started: asyncio.Event) -> grpc.GenericRpcHandler[bytes, bytes]:
    """test.Slow/Wait: answers b"done" after 0.3 s (a stand-in for a long in-flight RPC)."""

    async def wait(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        started.set()
        await asyncio.sleep(0.3)
        return b"done"

    return grpc.method_handlers_generic_handler(
        "test.Slow", {"Wait": grpc.unary_unary_rpc_method_handler(wait)}
    )


def add_generic(handler: grpc.GenericRpcHandler[bytes, bytes], server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((handler,))


async def test_stop_lets_in_flight_calls_finish_then_runs_hooks(sock_dir: Path) -> None:
    started = asyncio.Event()
    order: list[str] = []
    path = sock_dir / "demo.sock"
    rt = ServiceRuntime("calico-demo", unix_socket=path, grace_period=5.0)
    rt.add(slow_service(started), add_generic, "test.Slow")

    async def async_hook() -> None:
        order.append("async")

    def sync_hook() -> None:
        order.append("sync")

    rt.on_shutdown(sync_hook)
    rt.on_shutdown(async_hook)
    await rt.start()
    async with open_channel(rt.tcp_address or "") as channel:
        wait = channel.unary_unary("/test.Slow/Wait", None, None)  # bytes in, bytes out
        call = wait(b"", timeout=5)
        await asyncio.wait_for(started.wait(), 5)
        await rt.stop()
        assert await call == b"done"
        assert order == ["async", "sync"]  # last registered first
        with pytest.raises(grpc.aio.AioRpcError):
            await health_status(channel)
    assert not path.exists()


async def test_serve_forever_returns_on_request_stop() -> None:
    rt = ServiceRuntime("calico-demo")
    task = asyncio.create_task(rt.serve_forever(handle_signals=False))
    await asyncio.wait_for(rt.wait_started(), 10)
    async with open_channel(rt.tcp_address or "") as channel:
        assert await health_status(channel) == SERVING
    rt.request_stop("test")
    await asyncio.wait_for(task, 10)
    assert rt.stopping


async def test_stale_socket_from_dead_process_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "demo.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed daemon leaves behind
    assert path.exists()
    async with (
        ServiceRuntime("calico-demo", tcp=None, unix_socket=path),
        open_channel(str(path)) as channel,
    ):
        assert await health_status(channel) == SERVING


async def test_socket_of_a_live_server_is_not_stolen(sock_dir: Path) -> None:
    path = sock_dir / "demo.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen()
    try:
        with pytest.raises(AddressError, match="in use"):
            await ServiceRuntime("calico-demo", tcp=None, unix_socket=path).start()
        assert path.exists()
    finally:
        live.close()


async def test_tcp_port_in_use_is_an_error() -> None:
    async with ServiceRuntime("calico-a") as first:
        second = ServiceRuntime("calico-b", tcp=first.tcp_address)
        with pytest.raises(AddressError):
            await second.start()


def test_bad_configuration_is_rejected_at_construction() -> None:
    with pytest.raises(AddressError):
        ServiceRuntime("calico-demo", tcp=None, unix_socket=None)
    with pytest.raises(AddressError):
        ServiceRuntime("calico-demo", tcp="no-port")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("unix:///run/calico/ipam.sock", "unix:/run/calico/ipam.sock"),
        ("unix:/run/calico/ipam.sock", "unix:/run/calico/ipam.sock"),
        ("/run/calico/ipam.sock", "unix:/run/calico/ipam.sock"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost:5000", "localhost:5000"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_channel_targets(target: str, expected: str) -> None:
    assert channel_target(target) == expected


def test_relative_socket_path_becomes_absolute() -> None:
    assert unix_path_of("run/x.sock") == "run/x.sock"
    assert channel_target("./x.sock") == f"unix:{Path.cwd() / 'x.sock'}"
