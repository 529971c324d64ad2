"""JSON log lines: fields, levels from LOG_LEVEL, trace ids inside a span."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from libcalico.logs import JsonLinesHandler, setup_logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_root_logger")
def test_one_json_object_per_line_with_the_standard_fields() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", "calico-demo", stream=stream)
    log = logging.getLogger("calico.demo")
    log.debug("first %s", "line", extra={"pod": "ns/a"})
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed")
    first, second = lines(stream)
    assert first["message"] == "first line"
    assert first["level"] == "DEBUG"
    assert first["logger"] == "calico.demo"
    assert first["service"] == "calico-demo"
    assert first["pod"] == "ns/a"
    assert str(first["time"]).endswith("+00:00")
    assert "trace_id" not in first
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in str(second["exception"])
    assert len(stream.getvalue().splitlines()) == 2  # the multi-line exception stays one line


@pytest.mark.usefixtures("restore_root_logger")
def test_level_comes_from_log_level_env(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setenv("LOG_LEVEL", "warning")
    setup_logging(service_name="calico-demo", stream=stream)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert [line["message"] for line in lines(stream)] == ["shown"]
    monkeypatch.delenv("LOG_LEVEL")
    setup_logging(service_name="calico-demo", stream=stream)  # replaces, not adds
    assert logging.getLogger().level == logging.INFO
    assert sum(isinstance(h, JsonLinesHandler) for h in logging.getLogger().handlers) == 1


@pytest.mark.usefixtures("restore_root_logger")
def test_lines_inside_a_span_carry_its_ids() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("x").info("inside")
    ctx = span.get_span_context()
    (line,) = lines(stream)
    assert line["trace_id"] == f"{ctx.trace_id:032x}"
    assert line["span_id"] == f"{ctx.span_id:016x}"
