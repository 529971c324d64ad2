"""Spans on both sides of an RPC, W3C propagation, and log lines that carry the trace."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from calico.common.v1 import service_info_pb2, service_info_pb2_grpc
from libcalico.logs import setup_logging
from libcalico.runtime import ServiceRuntime, open_channel
from libcalico.runtime.traceparent import new_traceparent

GET_INFO = "calico.common.v1.ServiceInfo/GetInfo"


def spans_named(exporter: InMemorySpanExporter, name: str) -> dict[SpanKind, ReadableSpan]:
    found = {s.kind: s for s in exporter.get_finished_spans() if s.name == name}
    assert len(found) == len([s for s in exporter.get_finished_spans() if s.name == name])
    return found


async def test_one_request_gives_client_and_server_span_in_one_trace(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    rt = ServiceRuntime("calico-demo", tracer_provider=tracer_provider)
    async with rt, open_channel(rt.tcp_address or "", tracer_provider=tracer_provider) as ch:
        stub = service_info_pb2_grpc.ServiceInfoStub(ch)
        await stub.GetInfo(service_info_pb2.GetInfoRequest(), timeout=5)
    spans = spans_named(span_exporter, GET_INFO)
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert client.context is not None and server.context is not None
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.parent.is_remote
    for span in (client, server):
        assert span.attributes is not None
        assert span.attributes["rpc.service"] == "calico.common.v1.ServiceInfo"
        assert span.attributes["rpc.method"] == "GetInfo"
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]


async def test_light_traceparent_header_is_joined_by_the_server(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    parent = new_traceparent()
    rt = ServiceRuntime("calico-demo", tracer_provider=tracer_provider)
    # A bare channel, no interceptors: what the CNI plugin does with only traceparent.py.
    async with rt, grpc.aio.insecure_channel(rt.tcp_address or "") as channel:
        stub = service_info_pb2_grpc.ServiceInfoStub(channel)
        await stub.GetInfo(service_info_pb2.GetInfoRequest(), metadata=parent.metadata(), timeout=5)
    server = spans_named(span_exporter, GET_INFO)[SpanKind.SERVER]
    assert server.context is not None and server.parent is not None
    assert f"{server.context.trace_id:032x}" == parent.trace_id
    assert f"{server.parent.span_id:016x}" == parent.span_id


async def test_failed_call_marks_both_spans_as_errors(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    rt = ServiceRuntime("calico-demo", tracer_provider=tracer_provider)
    async with rt, open_channel(rt.tcp_address or "", tracer_provider=tracer_provider) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    spans = spans_named(span_exporter, "grpc.health.v1.Health/Check")
    for kind in (SpanKind.CLIENT, SpanKind.SERVER):
        span = spans[kind]
        assert span.status.status_code == StatusCode.ERROR, kind
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


async def test_server_log_lines_carry_the_callers_trace_id(
    tracer_provider: TracerProvider,
) -> None:
    stream = io.StringIO()
    root_level = logging.getLogger().level
    handler = setup_logging("INFO", "calico-demo", stream=stream)
    parent = new_traceparent()

    class LoggingInfo(service_info_pb2_grpc.ServiceInfoServicer):
        async def GetInfo(
            self,
            request: service_info_pb2.GetInfoRequest,
            context: grpc.aio.ServicerContext[
                service_info_pb2.GetInfoRequest, service_info_pb2.Info
            ],
        ) -> service_info_pb2.Info:
            logging.getLogger("calico.test").info("answering", extra={"who": "me"})
            return service_info_pb2.Info(service_name="logging")

    rt = ServiceRuntime("calico-demo", tracer_provider=tracer_provider, service_info=False)
    rt.add(
        LoggingInfo(),
        service_info_pb2_grpc.add_ServiceInfoServicer_to_server,
        "calico.common.v1.ServiceInfo",
    )
    try:
        async with rt, grpc.aio.insecure_channel(rt.tcp_address or "") as channel:
            stub = service_info_pb2_grpc.ServiceInfoStub(channel)
            info = await stub.GetInfo(
                service_info_pb2.GetInfoRequest(), metadata=parent.metadata(), timeout=5
            )
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
    assert info.service_name == "logging"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    answering = next(line for line in lines if line["message"] == "answering")
    assert answering["trace_id"] == parent.trace_id
    assert len(answering["span_id"]) == 16 and answering["span_id"] != parent.span_id
    assert answering["who"] == "me"
    assert answering["logger"] == "calico.test"
    assert answering["level"] == "INFO"
    assert answering["service"] == "calico-demo"


async def test_streaming_calls_are_traced_on_both_sides(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    # ServerReflectionInfo is stream-stream, served by an async-generator handler.
    name = "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    client_ended = asyncio.Event()

    class ClientEnd(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            if span.name == name and span.kind == SpanKind.CLIENT:
                client_ended.set()

    tracer_provider.add_span_processor(ClientEnd())
    rt = ServiceRuntime("calico-demo", tracer_provider=tracer_provider)
    async with rt, open_channel(rt.tcp_address or "", tracer_provider=tracer_provider) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        call = stub.ServerReflectionInfo(iter([request]), timeout=5)
        replies = [reply async for reply in call]
        assert len(replies) == 1
        # The client span ends from the call's done callback, a loop turn or two later.
        await asyncio.wait_for(client_ended.wait(), 5)
    spans = spans_named(span_exporter, name)
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert client.context is not None and server.context is not None
    assert server.context.trace_id == client.context.trace_id
    assert client.status.status_code != StatusCode.ERROR
    assert server.status.status_code != StatusCode.ERROR
