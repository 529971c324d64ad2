"""grpc_lite against a real grpc.aio server (grpc-core's HTTP/2 and HPACK) on a Unix socket."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from cni_client import grpc_lite, hpack_lite

SERVICE = "test.Lite"
Ctx = grpc.aio.ServicerContext[Any, Any]


async def _echo(request: bytes, context: Ctx) -> bytes:
    return request


async def _big(request: bytes, context: Ctx) -> bytes:
    size = int(request.decode())
    return bytes(i % 251 for i in range(size))


async def _fail(request: bytes, context: Ctx) -> bytes:
    code_name, _, message = request.decode().partition(":")
    await context.abort(grpc.StatusCode[code_name], message)
    raise AssertionError("unreachable")


async def _metadata(request: bytes, context: Ctx) -> bytes:
    # Initial and trailing metadata of its own: grpc-core indexes and Huffman-codes them.
    await context.send_initial_metadata((("x-initial", "initial-value-" + "abc" * 10),))
    context.set_trailing_metadata((("x-trailing", "trailing-value-" + "xyz" * 10),))
    md = dict(context.invocation_metadata() or ())
    return str(md.get(request.decode(), "")).encode()


async def _fail_with_details(request: bytes, context: Ctx) -> bytes:
    # Binary ("-bin") trailers, as rich error details (grpc-status-details-bin) travel: grpc-core
    # base64-encodes them and Huffman-codes the result.
    context.set_trailing_metadata((("x-details-bin", request),))
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "sequence number changed")
    raise AssertionError("unreachable")


async def _slow(request: bytes, context: Ctx) -> bytes:
    await asyncio.sleep(5)
    return b""


def _handler() -> grpc.GenericRpcHandler[Any, Any]:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(fn)
        for name, fn in {
            "Echo": _echo,
            "Big": _big,
            "Fail": _fail,
            "Metadata": _metadata,
            "Slow": _slow,
            "FailWithDetails": _fail_with_details,
        }.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


class Server:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="grpc-lite-"))
        self.path = str(self.dir / "s.sock")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: grpc.aio.Server | None = None

    async def _start(self) -> None:
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ]
        )
        self.server.add_generic_rpc_handlers((_handler(),))
        self.server.add_insecure_port(f"unix:{self.path}")
        await self.server.start()

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(20)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    s.stop()


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def test_unary_success(server: Server) -> None:
    assert grpc_lite.unary_call(server.path, method("Echo"), b"hello") == b"hello"
    assert grpc_lite.unary_call(server.path, method("Echo"), b"") == b""


def test_metadata_reaches_server(server: Server) -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    got = grpc_lite.unary_call(
        server.path, method("Metadata"), b"traceparent", (("traceparent", tp),)
    )
    assert got.decode() == tp


def test_many_calls_on_one_connection(server: Server) -> None:
    # Streams 1, 3, 5, ...: the HPACK dynamic table carries over between responses.
    with grpc_lite.Channel(server.path) as ch:
        for i in range(20):
            assert ch.call(method("Metadata"), b"x-n", (("x-n", str(i)),)) == str(i).encode()
        assert ch._decoder.dynamic, "grpc-core should have indexed response headers"
        assert ch.call(method("Echo"), b"last") == b"last"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("INVALID_ARGUMENT", "mtu must be 68..65535"),
        ("RESOURCE_EXHAUSTED", "no free address in pool default-ipv4: 10.0.0.0/26 full"),
        ("UNAVAILABLE", "dataplane not in sync yet"),
        ("NOT_FOUND", "netns /var/run/netns/x: ünïcödé \u2013 100% gone\nsecond line"),
        ("INTERNAL", ""),
    ],
)
def test_error_status_and_message(server: Server, code: str, message: str) -> None:
    with pytest.raises(grpc_lite.GrpcError) as err:
        grpc_lite.unary_call(server.path, method("Fail"), f"{code}:{message}".encode())
    assert err.value.code == grpc.StatusCode[code].value[0]
    assert err.value.message == (message or code)


def test_huffman_coded_trailers(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[bytes] = []
    real = hpack_lite.huffman_decode

    def recording(data: bytes | memoryview) -> bytes:
        out = real(data)
        decoded.append(out)
        return out

    monkeypatch.setattr(hpack_lite, "huffman_decode", recording)
    details = bytes(range(256)) * 3
    with pytest.raises(grpc_lite.GrpcError) as err:
        grpc_lite.unary_call(server.path, method("FailWithDetails"), details)
    assert err.value.code == grpc_lite.FAILED_PRECONDITION
    assert err.value.message == "sequence number changed"
    # The binary trailer arrived Huffman-coded, and decodes to its base64 text.
    want = base64.b64encode(details).rstrip(b"=")
    assert any(d.rstrip(b"=") == want for d in decoded), decoded


@pytest.mark.parametrize("size", [70_000, 4 << 20])
def test_large_response(server: Server, size: int) -> None:
    got = grpc_lite.unary_call(server.path, method("Big"), str(size).encode())
    assert len(got) == size and got == bytes(i % 251 for i in range(size))


def test_large_request_uses_flow_control(server: Server) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: beyond the 64 KiB initial windows
    assert grpc_lite.unary_call(server.path, method("Echo"), payload) == payload


def test_unknown_method(server: Server) -> None:
    with pytest.raises(grpc_lite.GrpcError) as err:
        grpc_lite.unary_call(server.path, method("Nope"), b"")
    assert err.value.code == grpc_lite.UNIMPLEMENTED


def test_no_server(tmp_path: Path) -> None:
    with pytest.raises(grpc_lite.GrpcError) as err:
        grpc_lite.unary_call(str(tmp_path / "none.sock"), method("Echo"), b"")
    assert err.value.code == grpc_lite.UNAVAILABLE and "none.sock" in err.value.message


def test_timeout(server: Server) -> None:
    with pytest.raises(grpc_lite.GrpcError) as err:
        grpc_lite.unary_call(server.path, method("Slow"), b"", timeout=0.3)
    assert err.value.code == grpc_lite.DEADLINE_EXCEEDED


def test_peer_that_is_not_grpc(tmp_path: Path) -> None:
    # A socket that accepts and hangs up at once: UNAVAILABLE, not a hang or a crash.
    path = str(tmp_path / "closer.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(grpc_lite.GrpcError) as err:
            grpc_lite.unary_call(path, method("Echo"), b"x", timeout=5)
        assert err.value.code == grpc_lite.UNAVAILABLE
    finally:
        t.join(5)
        listener.close()
