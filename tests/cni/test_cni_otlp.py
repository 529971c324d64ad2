"""The plugin's own span: hand-made OTLP bytes read by opentelemetry-proto's generated classes,
sent by grpc_lite over TCP to a real OTLP/gRPC receiver, parent of the daemons' spans."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from cni_client import grpc_lite, otlp
from cni_client.cni import span as plugin_span
from tests.cni.fake_daemons import FakeDaemons
from tests.cni.otlp_receiver import otlp_receiver
from tests.cni.plugin import CONTAINER_ID, base_env, run_plugin

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def test_export_request_decodes_with_the_generated_classes() -> None:
    span = otlp.Span("cni ADD", TRACE_ID, "00f067aa0ba902b7", PARENT_ID)
    span.start_ns, span.end_ns = 1_700_000_000_123_456_789, 1_700_000_000_223_456_789
    span.attributes = {"cni.command": "ADD", "cni.error.code": 11, "flag": True, "no": False}
    span.status_code, span.status_message = otlp.STATUS_ERROR, "try again later: ü"
    raw = otlp.export_request({"service.name": "calico-cni-plugin", "process.pid": 42}, "s", [span])

    req = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
    assert req.SerializeToString() == raw  # canonical field order, nothing unknown
    (rs,) = req.resource_spans
    resource = {a.key: a.value for a in rs.resource.attributes}
    assert resource["service.name"].string_value == "calico-cni-plugin"
    assert resource["process.pid"].int_value == 42
    (ss,) = rs.scope_spans
    assert ss.scope.name == "s"
    (got,) = ss.spans
    assert got.name == "cni ADD"
    assert got.trace_id.hex() == TRACE_ID and got.span_id.hex() == "00f067aa0ba902b7"
    assert got.parent_span_id.hex() == PARENT_ID
    assert got.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert (got.start_time_unix_nano, got.end_time_unix_nano) == (span.start_ns, span.end_ns)
    attrs = {a.key: a.value for a in got.attributes}
    assert attrs["cni.command"].string_value == "ADD"
    assert attrs["cni.error.code"].int_value == 11
    assert attrs["flag"].WhichOneof("value") == "bool_value" and attrs["flag"].bool_value
    assert attrs["no"].WhichOneof("value") == "bool_value" and not attrs["no"].bool_value
    assert got.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert got.status.message == "try again later: ü"


def test_root_span_without_status_has_neither_parent_nor_status() -> None:
    span = otlp.Span("cni DEL", TRACE_ID, "00f067aa0ba902b7")
    raw = otlp.export_request({}, "s", [span])
    got = trace_service_pb2.ExportTraceServiceRequest.FromString(raw).resource_spans[0]
    only = got.scope_spans[0].spans[0]
    assert only.parent_span_id == b"" and not only.HasField("status")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://127.0.0.1:4317", ("127.0.0.1", 4317)),
        ("http://collector.example:4317/", ("collector.example", 4317)),
        ("localhost:4317", ("localhost", 4317)),
        ("[::1]:4317", ("::1", 4317)),
        ("http://[::1]:4317", ("::1", 4317)),
        ("/var/run/calico/felix.sock", None),
        ("felix.sock", None),
        ("/tmp/a:1", None),
    ],
)
def test_tcp_targets_are_told_from_unix_paths(
    target: str, expected: tuple[str, int] | None
) -> None:
    assert grpc_lite.tcp_address(target) == expected


def test_export_settings_from_the_standard_variables() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "X-Tenant=t%201, api-key = k ,bad",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "250",
    }
    assert plugin_span.endpoint(env) == "http://a:4317"
    assert plugin_span.headers(env) == [("x-tenant", "t 1"), ("api-key", "k")]
    assert plugin_span.timeout_s(env) == 0.25
    traces = {
        **env,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "b:1",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "x",
    }
    assert plugin_span.endpoint(traces) == "b:1"
    assert plugin_span.timeout_s({}) == plugin_span.DEFAULT_TIMEOUT_MS / 1000
    assert plugin_span.endpoint({**env, "OTEL_SDK_DISABLED": "true"}) == ""
    assert plugin_span.endpoint({**env, "OTEL_TRACES_EXPORTER": "none"}) == ""
    assert plugin_span.endpoint({**env, "OTEL_TRACES_EXPORTER": "console,otlp"}) == "http://a:4317"


def _traceparents(daemons: FakeDaemons) -> set[str]:
    return {c.metadata["traceparent"] for c in daemons.state.calls}


def test_add_exports_one_span_that_parents_the_daemon_calls(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    with otlp_receiver() as (receiver, endpoint):
        env = base_env(
            "ADD",
            cni_bin,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_OTLP_HEADERS="x-tenant=calico",
            TRACEPARENT=f"00-{TRACE_ID}-{PARENT_ID}-01",
        )
        before = time.time_ns()
        run = run_plugin(cni_bin, env, conf)
        after = time.time_ns()
        assert run.rc == 0, run.stdout + run.stderr
        assert run.stderr == ""
        (got,) = receiver.spans()  # exported before the plugin exited
    assert got.service == "calico-cni-plugin"
    assert got.span.name == "cni ADD"
    assert before <= got.span.start_time_unix_nano <= got.span.end_time_unix_nano <= after
    assert got.span.trace_id.hex() == TRACE_ID
    assert got.span.parent_span_id.hex() == PARENT_ID
    assert got.attributes == {
        "cni.command": "ADD",
        "cni.container_id": CONTAINER_ID,
        "cni.ifname": "eth0",
        "cni.netns": env["CNI_NETNS"],
        "k8s.pod.namespace": "default",
        "k8s.pod.name": "pod-1",
    }
    assert got.span.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    # Every daemon call carried this span as its parent.
    assert _traceparents(daemons) == {f"00-{TRACE_ID}-{got.span.span_id.hex()}-01"}
    assert receiver.metadata[0]["x-tenant"] == "calico"


def test_failed_add_exports_an_error_span(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    daemons.state.fail["AutoAssign"] = (grpc.StatusCode.RESOURCE_EXHAUSTED, "pool full")
    with otlp_receiver() as (receiver, endpoint):
        env = base_env("ADD", cni_bin, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint)
        run = run_plugin(cni_bin, env, conf)
        assert run.rc == 1 and run.error["code"] == 101
        (got,) = receiver.spans()
    assert got.span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert "pool full" in got.span.status.message
    assert got.attributes["cni.error.code"] == 101
    assert got.span.parent_span_id == b""  # a new trace: the plugin's span is its root
    (traceparent,) = _traceparents(daemons)
    assert traceparent.split("-")[1:3] == [got.span.trace_id.hex(), got.span.span_id.hex()]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_collector_never_fails_the_command(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    env = base_env("ADD", cni_bin, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    run = run_plugin(cni_bin, env, conf)
    assert run.rc == 0, run.stdout
    assert "span export" in run.stderr and "cannot connect" in run.stderr
    assert run.json()["ips"]


def test_silent_collector_costs_at_most_the_export_timeout(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    # A listener that never answers: the export gives up after OTEL_EXPORTER_OTLP_TIMEOUT.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        env = base_env(
            "DEL",
            cni_bin,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_TIMEOUT="300",
        )
        started = time.monotonic()
        run = run_plugin(cni_bin, env, conf)
        elapsed = time.monotonic() - started
    assert run.rc == 0, run.stdout
    assert "DEADLINE_EXCEEDED" in run.stderr
    assert elapsed < 5


def test_version_and_input_errors_before_a_command_export_nothing(
    cni_bin: Path, conf: dict[str, Any]
) -> None:
    with otlp_receiver() as (receiver, endpoint):
        version = run_plugin(
            cni_bin, base_env("VERSION", cni_bin, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint), b""
        )
        assert version.rc == 0
        unknown = run_plugin(
            cni_bin, base_env("NOPE", cni_bin, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint), conf
        )
        assert unknown.rc == 1
        assert receiver.spans() == []


def test_tls_endpoints_are_refused_not_attempted() -> None:
    with pytest.raises(grpc_lite.GrpcError) as err:
        grpc_lite.unary_call("https://127.0.0.1:4317", otlp.EXPORT, b"", timeout=1)
    assert err.value.code == grpc_lite.UNAVAILABLE and "TLS" in err.value.message
