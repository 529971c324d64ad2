"""A tiny OTLP/gRPC trace receiver for the compose cluster (an OpenTelemetry Collector image
cannot be pulled here): it accepts TraceService/Export on :4317 and appends one JSON line per
span to OTLP_SPANS_FILE (default /data/spans.jsonl), which tests/compose reads to check that a
pod's ADD is one trace across the plugin, calico-ipamd and calico-felix. Not a collector: no
batching, no other signals. Serves grpc.health.v1 on the same port; SIGTERM stops it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

SPANS_FILE = os.environ.get("OTLP_SPANS_FILE", "/data/spans.jsonl")
LISTEN = os.environ.get("OTLP_LISTEN", "0.0.0.0:4317")


def _service_name(resource: Any) -> str:
    for attr in resource.attributes:
        if attr.key == "service.name":
            return str(attr.value.string_value)
    return ""


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        lines = []
        for rs in request.resource_spans:
            service = _service_name(rs.resource)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(
                        json.dumps(
                            {
                                "service": service,
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "kind": span.kind,
                            }
                        )
                    )
        if lines:
            with self._lock, open(self._path, "a") as f:
                f.write("\n".join(lines) + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # opentelemetry-proto ships its grpc stubs without type annotations.
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        Receiver(SPANS_FILE), server
    )
    checker = health.HealthServicer()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(LISTEN)
    server.start()
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    print(f"otlp-receiver: listening on {LISTEN}, spans to {SPANS_FILE}", flush=True)
    stopped.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
