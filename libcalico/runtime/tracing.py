"""Process-wide OpenTelemetry set-up for a Calico daemon.

Spans are exported over OTLP/gRPC only when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-only
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. Without an exporter the provider has no span
processor, and the server interceptor (grpc_tracing.py) then gives each call only a span
identity in the caller's trace, not a recorded span: trace ids still propagate across services
and log lines still carry them, at a fraction of the cost per call. The exporter reads the
standard OTEL_* variables itself (endpoint, insecure, headers, timeout); the batch processor
reads OTEL_BSP_*.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

log = logging.getLogger(__name__)

_installed: TracerProvider | None = None


def otlp_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return next((env[name] for name in ENDPOINT_ENVS if env.get(name, "").strip()), None)


def make_tracer_provider(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider that records spans, exporting them in batches to `exporter` if one is given."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "process.pid": os.getpid()})
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def setup_tracing(service_name: str) -> TracerProvider:
    """Install the global tracer provider once per process (later calls return the first one)."""
    global _installed
    if _installed is not None:
        return _installed
    exporter: SpanExporter | None = None
    endpoint = otlp_endpoint()
    if endpoint:
        # Imported only when used: the exporter pulls in a good deal.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
        log.info("exporting spans over OTLP/gRPC", extra={"otlp_endpoint": endpoint})
    provider = make_tracer_provider(service_name, exporter)
    trace.set_tracer_provider(provider)
    _installed = provider
    return provider


def shutdown_tracing() -> None:
    """Flush and stop the exporter (at process exit; spans still queued are sent now).

    The global provider cannot be replaced once set, so it stays installed, exporting nothing.
    """
    if _installed is not None:
        _installed.shutdown()
