"""Structured logs: one JSON object per line on stderr.

Every line carries time, level, logger, message and the service name; when an OpenTelemetry
span is active it also carries trace_id and span_id, so a log line can be found from a trace
(and back). This module never imports OpenTelemetry itself: a light process (the CNI plugin)
that never loaded it pays nothing, and a process that did gets the ids.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

DEFAULT_LEVEL = "INFO"
LEVEL_ENV = "LOG_LEVEL"

# LogRecord attributes that are not "extra" fields given by the caller.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) as lowercase hex of the active span, if OpenTelemetry is loaded."""
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is None:
        return None
    ctx = otel_trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


class JsonFormatter(logging.Formatter):
    """Formats a record as a single-line JSON object."""

    def __init__(self, service_name: str | None = None) -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service_name:
            entry["service"] = self.service_name
        ids = current_trace_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        # Fields passed with `extra={...}` are kept as structured data.
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class JsonLinesHandler(logging.StreamHandler[TextIO]):
    """The handler setup_logging installs (a type of its own so a second call can replace it)."""


def level_from_env(default: str = DEFAULT_LEVEL) -> str:
    return os.environ.get(LEVEL_ENV, "").strip().upper() or default


def setup_logging(
    level: str | int | None = None,
    service_name: str | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route the root logger to JSON lines on stderr (idempotent: replaces our earlier handler).

    `level` defaults to LOG_LEVEL from the environment, else INFO.
    """
    resolved: str | int = level if level is not None else level_from_env()
    if isinstance(resolved, str):
        resolved = resolved.upper()
        if resolved == "WARN":
            resolved = "WARNING"
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, JsonLinesHandler)]:
        root.removeHandler(old)
    handler = JsonLinesHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service_name))
    root.addHandler(handler)
    try:
        root.setLevel(resolved)
    except ValueError:
        root.setLevel(DEFAULT_LEVEL)
        logging.getLogger(__name__).warning("unknown log level %r; using INFO", resolved)
    return handler
