"""A provider that exports nowhere (a daemon without an OTLP endpoint): server calls still get
span identities in the caller's trace, so log lines carry trace ids, without building spans."""

from __future__ import annotations

import io
import json
import logging

import grpc
import grpc.aio
import pytest
from opentelemetry import trace

from calico.common.v1 import service_info_pb2, service_info_pb2_grpc
from libcalico.logs import setup_logging
from libcalico.runtime import ServiceRuntime
from libcalico.runtime.traceparent import TraceParent, new_traceparent
from libcalico.runtime.tracing import make_tracer_provider


class LoggingInfo(service_info_pb2_grpc.ServiceInfoServicer):
    async def GetInfo(
        self,
        request: service_info_pb2.GetInfoRequest,
        context: grpc.aio.ServicerContext[service_info_pb2.GetInfoRequest, service_info_pb2.Info],
    ) -> service_info_pb2.Info:
        span = trace.get_current_span()
        logging.getLogger("calico.test").info("answering", extra={"recording": span.is_recording()})
        return service_info_pb2.Info(service_name="logging")


async def answer_lines(parent: TraceParent | None) -> list[dict[str, object]]:
    """Log lines the server wrote while answering two calls carrying `parent`'s traceparent."""
    stream = io.StringIO()
    root_level = logging.getLogger().level
    handler = setup_logging("INFO", "calico-demo", stream=stream)
    provider = make_tracer_provider("calico-demo")  # no exporter: no span processor
    rt = ServiceRuntime("calico-demo", tracer_provider=provider, service_info=False)
    rt.add(
        LoggingInfo(),
        service_info_pb2_grpc.add_ServiceInfoServicer_to_server,
        "calico.common.v1.ServiceInfo",
    )
    metadata = parent.metadata() if parent is not None else None
    try:
        async with rt, grpc.aio.insecure_channel(rt.tcp_address or "") as channel:
            stub = service_info_pb2_grpc.ServiceInfoStub(channel)
            for _ in range(2):
                request = service_info_pb2.GetInfoRequest()
                await stub.GetInfo(request, metadata=metadata, timeout=5)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
        provider.shutdown()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["message"] == "answering"]


@pytest.mark.parametrize("sampled", [True, False])
async def test_log_lines_carry_the_callers_trace_without_recording(sampled: bool) -> None:
    parent = new_traceparent(sampled=sampled)
    first, second = await answer_lines(parent)
    for line in (first, second):
        assert line["trace_id"] == parent.trace_id
        assert isinstance(line["span_id"], str) and len(line["span_id"]) == 16
        assert line["span_id"] not in (parent.span_id, "0" * 16)
        assert line["recording"] is False
    assert first["span_id"] != second["span_id"]  # one span identity per call


async def test_a_call_without_trace_context_starts_a_trace() -> None:
    first, second = await answer_lines(None)
    for line in (first, second):
        assert isinstance(line["trace_id"], str) and len(line["trace_id"]) == 32
        assert line["trace_id"] != "0" * 32
    assert first["trace_id"] != second["trace_id"]
