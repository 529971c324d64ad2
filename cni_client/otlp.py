"""OTLP/gRPC trace export of single spans, by hand: the plugin must not import OpenTelemetry
(or protobuf) to report its own span. Field numbers are those of opentelemetry-proto
(collector/trace/v1/trace_service.proto, trace/v1/trace.proto, common/v1/common.proto,
resource/v1/resource.proto); tests/cni/test_cni_otlp.py decodes the bytes with the generated
classes. Loaded only when an OTLP endpoint is configured.
"""

from __future__ import annotations

from _struct import pack

from cni_client import grpc_lite
from cni_client.wire import _len_field, _str, _varint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# Span.SpanKind and Status.StatusCode.
KIND_INTERNAL = 1
KIND_SERVER = 2
KIND_CLIENT = 3
STATUS_OK = 1
STATUS_ERROR = 2


def _any_value(value: str | int | bool) -> bytes:
    # AnyValue oneof: string_value 1, bool_value 2, int_value 3. bool before int (a subclass).
    if isinstance(value, bool):
        return _varint((2 << 3) | 0) + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return _varint((3 << 3) | 0) + _varint(value)
    return _len_field(1, value.encode())


def _attributes(field: int, attributes: Mapping[str, str | int | bool]) -> bytes:
    """repeated KeyValue {key 1, value 2}."""
    return b"".join(
        _len_field(field, _str(1, key) + _len_field(2, _any_value(value)))
        for key, value in attributes.items()
    )


def _fixed64(field: int, value: int) -> bytes:
    return _varint((field << 3) | 1) + pack("<Q", value)


class Span:
    """One finished span."""

    __slots__ = (
        "attributes",
        "end_ns",
        "kind",
        "name",
        "parent_span_id",
        "span_id",
        "start_ns",
        "status_code",
        "status_message",
        "trace_id",
    )

    def __init__(self, name: str, trace_id: str, span_id: str, parent_span_id: str = "") -> None:
        self.name = name
        self.trace_id = trace_id  # 32 hex digits
        self.span_id = span_id  # 16 hex digits
        self.parent_span_id = parent_span_id  # "" for a root span
        self.kind = KIND_CLIENT
        self.start_ns = 0
        self.end_ns = 0
        self.attributes: dict[str, str | int | bool] = {}
        self.status_code = 0  # unset
        self.status_message = ""

    def encode(self) -> bytes:
        """opentelemetry.proto.trace.v1.Span."""
        status = _str(2, self.status_message) + (
            _varint(3 << 3) + _varint(self.status_code) if self.status_code else b""
        )
        return (
            _len_field(1, bytes.fromhex(self.trace_id))
            + _len_field(2, bytes.fromhex(self.span_id))
            + (_len_field(4, bytes.fromhex(self.parent_span_id)) if self.parent_span_id else b"")
            + _str(5, self.name)
            + _varint(6 << 3)
            + _varint(self.kind)
            + _fixed64(7, self.start_ns)
            + _fixed64(8, self.end_ns)
            + _attributes(9, self.attributes)
            + (_len_field(15, status) if status else b"")
        )


def export_request(
    resource: Mapping[str, str | int | bool],
    scope: str,
    spans: Iterable[Span],
) -> bytes:
    """ExportTraceServiceRequest{resource_spans 1: ResourceSpans{resource 1: Resource{attributes
    1}, scope_spans 2: ScopeSpans{scope 1: InstrumentationScope{name 1}, spans 2}}}."""
    scope_spans = _len_field(1, _str(1, scope)) + b"".join(_len_field(2, s.encode()) for s in spans)
    resource_spans = _len_field(1, _attributes(1, resource)) + _len_field(2, scope_spans)
    return _len_field(1, resource_spans)


def export(
    endpoint: str, request: bytes, headers: Iterable[tuple[str, str]], timeout_s: float
) -> None:
    """One Export call; GrpcError when the collector cannot be reached or refuses."""
    grpc_lite.unary_call(endpoint, EXPORT, request, headers, timeout_s)
