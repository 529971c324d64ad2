"""A real OTLP/gRPC trace receiver (opentelemetry-proto's TraceService on grpcio) for the
plugin's span-export tests: it keeps every ExportTraceServiceRequest it is sent."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass
class ReceivedSpan:
    service: str
    span: trace_pb2.Span

    @property
    def attributes(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for kv in self.span.attributes:
            out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
        return out


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.received = threading.Event()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[ReceivedSpan]:
        found: list[ReceivedSpan] = []
        for request in self.requests:
            for rs in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    found.extend(ReceivedSpan(attrs.get("service.name", ""), s) for s in ss.spans)
        return found


@contextlib.contextmanager
def otlp_receiver(address: str = "127.0.0.1:0") -> Iterator[tuple[TraceReceiver, str]]:
    """(receiver, "http://host:port") while the server runs."""
    receiver = TraceReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add: Callable[[TraceReceiver, grpc.Server], None] = (
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    )
    add(receiver, server)
    port = server.add_insecure_port(address)
    server.start()
    host = address.rpartition(":")[0]
    try:
        yield receiver, f"http://{host}:{port}"
    finally:
        server.stop(None)


def span_record(received: ReceivedSpan) -> dict[str, object]:
    """One span as a JSON-able dict (ids in hex, kind by name)."""
    s = received.span
    return {
        "service": received.service,
        "name": s.name,
        "kind": trace_pb2.Span.SpanKind.Name(s.kind),
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(),
        "status": trace_pb2.Status.StatusCode.Name(s.status.code),
        "attributes": received.attributes,
    }


class _FileReceiver(TraceReceiver):
    """Appends every received span to a JSON-lines file as it arrives."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            first = len(self.spans())
            super().Export(request, context)
            with open(self.out, "a", encoding="utf-8") as f:
                for received in self.spans()[first:]:
                    f.write(json.dumps(span_record(received)) + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    """`python -m tests.cni.otlp_receiver --listen ADDR:PORT --out FILE --ready FILE`: run a
    receiver (e.g. inside a lab namespace) until SIGTERM."""
    import argparse
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready", required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add: Callable[[TraceReceiver, grpc.Server], None] = (
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    )
    add(_FileReceiver(args.out), server)
    server.add_insecure_port(args.listen)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(args.ready, "w", encoding="utf-8") as f:
        f.write("ready\n")
    stop.wait()
    server.stop(None)


if __name__ == "__main__":
    main()
