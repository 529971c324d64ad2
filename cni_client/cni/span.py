"""The plugin's own span, exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is
set, so one ADD is one trace: `cni ADD` with calico-ipamd's and calico-felix's server spans as
its children (the traceparent they receive carries this span's id).

Only calico.py's endpoint check runs when tracing is off; this module (and `time`, otlp.py) is
imported only when it is on. Export is one unary call after the command, capped by a short
timeout; a failed export is one stderr line and never changes the command's outcome.
"""

from __future__ import annotations

import posix
import sys
import time

from cni_client import otlp
from cni_client.cni.trace import new_traceparent

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from cni_client.cni.env import Invocation

SERVICE_NAME = "calico-cni-plugin"
SCOPE = "cni_client"
# The OTLP default is 10 s; a runtime waits for the plugin, so a dead collector may cost at
# most this much per command unless OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT says otherwise.
DEFAULT_TIMEOUT_MS = 1000


def endpoint(environ: Mapping[str, str]) -> str:
    """The collector to export to, "" when export is off (also for OTEL_SDK_DISABLED=true or an
    OTEL_TRACES_EXPORTER without otlp)."""
    target = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    exporters = environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().replace(" ", "").split(",")
    return target if "otlp" in exporters else ""


def _setting(environ: Mapping[str, str], name: str) -> str:
    return (
        environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}", "").strip()
        or environ.get(f"OTEL_EXPORTER_OTLP_{name}", "").strip()
    )


def headers(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """OTEL_EXPORTER_OTLP_(TRACES_)HEADERS: `key=value,...`, values percent-encoded."""
    from cni_client.grpc_lite import _percent_decode

    out = []
    for item in _setting(environ, "HEADERS").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out.append((key.strip().lower(), _percent_decode(value.strip().encode())))
    return out


def timeout_s(environ: Mapping[str, str]) -> float:
    raw = _setting(environ, "TIMEOUT")
    return (int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_TIMEOUT_MS) / 1000


class PluginSpan:
    """Collects what one invocation did; export() sends it as the span `cni <COMMAND>`."""

    __slots__ = ("command", "error", "inv", "start_ns", "traceparent")

    def __init__(self) -> None:
        self.start_ns = time.time_ns()
        self.command = ""
        self.inv: Invocation | None = None
        self.traceparent = ""
        self.error: tuple[int, str] | None = None  # CNI (code, msg)

    def build(self, environ: Mapping[str, str]) -> otlp.Span | None:
        """The finished span, None when the invocation never got a command (or was VERSION)."""
        inv = self.inv
        if inv is None or inv.command == "VERSION":
            return None
        traceparent = self.traceparent or new_traceparent(environ)
        _, trace_id, span_id, _ = traceparent.split("-")
        parent = environ.get("TRACEPARENT", "").strip().lower().split("-")
        parent_id = parent[2] if len(parent) == 4 and parent[1] == trace_id else ""
        span = otlp.Span(f"cni {inv.command}", trace_id, span_id, parent_id)
        span.start_ns = self.start_ns
        span.end_ns = time.time_ns()
        attrs: dict[str, str | int | bool] = {"cni.command": inv.command}
        if inv.container_id:
            attrs["cni.container_id"] = inv.container_id
        if inv.ifname:
            attrs["cni.ifname"] = inv.ifname
        if inv.netns:
            attrs["cni.netns"] = inv.netns
        if inv.pod_namespace:
            attrs["k8s.pod.namespace"] = inv.pod_namespace
        if inv.pod_name:
            attrs["k8s.pod.name"] = inv.pod_name
        if self.error is not None:
            attrs["cni.error.code"] = self.error[0]
            span.status_code = otlp.STATUS_ERROR
            span.status_message = self.error[1]
        span.attributes = attrs
        return span

    def export(self, target: str, environ: Mapping[str, str]) -> None:
        """Send the span; never raises (the command's result stands whatever happens here)."""
        try:
            span = self.build(environ)
            if span is None:
                return
            resource: dict[str, str | int | bool] = {
                "service.name": SERVICE_NAME,
                "process.pid": posix.getpid(),
            }
            request = otlp.export_request(resource, SCOPE, (span,))
            otlp.export(target, request, headers(environ), timeout_s(environ))
        except Exception as exc:
            sys.stderr.write(f"calico: span export to {target} failed: {exc}\n")
