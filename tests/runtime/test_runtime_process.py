"""A daemon on the runtime as a real process: SIGTERM shutdown, and OTLP span export."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from calico.common.v1 import service_info_pb2, service_info_pb2_grpc
from libcalico.runtime import open_channel
from libcalico.runtime.traceparent import new_traceparent

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SERVICE = Path(__file__).with_name("demo_service.py")

StartDemo = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start_demo() -> Iterator[StartDemo]:
    """Runs tests/runtime/demo_service.py as its own process, as a console script would."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        socket_path: Path, marker: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(DEMO_SERVICE), str(socket_path)]
        if marker is not None:
            args.append(str(marker))
        proc = subprocess.Popen(
            args,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:  # a failed test must not leave a daemon behind
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], within: float = 15.0) -> None:
    """Poll without blocking the loop (an in-test server may need to answer meanwhile)."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(path.exists):
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"service exited early ({proc.returncode}): {err.decode()}")
        assert time.monotonic() < deadline, f"socket {path} did not appear in {within} s"
        await asyncio.sleep(0.02)


async def terminate(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(proc.communicate, timeout=15)
    return proc.returncode, err.decode()


async def test_sigterm_stops_the_daemon_cleanly(start_demo: StartDemo, sock_dir: Path) -> None:
    path = sock_dir / "demo.sock"
    marker = sock_dir / "cleaned"
    proc = start_demo(path, marker)
    await wait_for_socket(path, proc)
    async with open_channel(str(path)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    code, stderr = await terminate(proc)
    assert code == 0, stderr
    assert not path.exists()
    assert marker.read_text() == "cleaned up\n"
    records = [json.loads(line) for line in stderr.splitlines()]
    messages = [r["message"] for r in records]
    assert "calico-demo serving" in messages
    assert "calico-demo stopping: SIGTERM" in messages
    assert messages[-1] == "calico-demo stopped"
    assert all(r["service"] == "calico-demo" for r in records)


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The trace half of an OTLP/gRPC collector, keeping what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = asyncio.Event()

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[
            trace_service_pb2.ExportTraceServiceRequest,
            trace_service_pb2.ExportTraceServiceResponse,
        ],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, str, str]]:
        """(service.name, trace id hex, span name) of every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append((attrs["service.name"], span.trace_id.hex(), span.name))
        return found


@pytest_asyncio.fixture
async def otlp_receiver() -> AsyncIterator[tuple[TraceReceiver, str]]:
    receiver = TraceReceiver()
    server = grpc.aio.server()
    # The OTLP package's generated code is untyped; give the one function a type here.
    add_servicer: Callable[[TraceReceiver, grpc.aio.Server], None] = (
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    )
    add_servicer(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield receiver, f"http://127.0.0.1:{port}"
    await server.stop(None)


async def test_spans_reach_the_otlp_endpoint(
    start_demo: StartDemo, sock_dir: Path, otlp_receiver: tuple[TraceReceiver, str]
) -> None:
    receiver, endpoint = otlp_receiver
    path = sock_dir / "demo.sock"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    proc = start_demo(path, env=env)
    await wait_for_socket(path, proc)
    parent = new_traceparent()
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        stub = service_info_pb2_grpc.ServiceInfoStub(channel)
        info = await stub.GetInfo(
            service_info_pb2.GetInfoRequest(), metadata=parent.metadata(), timeout=5
        )
    assert info.pid == proc.pid
    # Exported by the batch processor while the daemon runs, not only at exit.
    await asyncio.wait_for(receiver.received.wait(), 10)
    code, stderr = await terminate(proc)
    assert code == 0, stderr
    assert ("calico-demo", parent.trace_id, "calico.common.v1.ServiceInfo/GetInfo") in (
        receiver.spans()
    )
