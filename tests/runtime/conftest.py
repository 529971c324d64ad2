"""Fixtures for the runtime tests: an in-memory span recorder, short socket directories."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    # A provider of the test's own, passed explicitly: the global one is left alone.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short paths: pytest's tmp_path can exceed the 107-byte limit of a Unix socket path.
    with tempfile.TemporaryDirectory(prefix="calico-rt-") as d:
        yield Path(d)
