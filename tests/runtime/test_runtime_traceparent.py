"""The dependency-free W3C traceparent helper."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from libcalico.runtime.traceparent import TraceParent, new_traceparent, parse_traceparent


def test_new_traceparent_round_trips() -> None:
    tp = new_traceparent()
    header = tp.header()
    assert len(header) == 55
    assert header.startswith("00-") and header.endswith("-01")
    assert parse_traceparent(header) == tp
    assert tp.sampled
    assert not new_traceparent(sampled=False).sampled


def test_new_traceparents_differ_and_child_keeps_the_trace() -> None:
    a, b = new_traceparent(), new_traceparent()
    assert a.trace_id != b.trace_id
    child = a.child()
    assert child.trace_id == a.trace_id and child.span_id != a.span_id
    assert a.metadata() == (("traceparent", a.header()),)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 parts
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
    ],
)
def test_invalid_headers_are_rejected(header: str) -> None:
    assert parse_traceparent(header) is None


def test_known_header_parses() -> None:
    tp = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert tp == TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1)
    # A later version may append fields; the first four are still understood.
    future = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
    assert future is not None and not future.sampled


def test_importing_it_loads_neither_grpc_nor_opentelemetry() -> None:
    code = (
        "import sys, libcalico.runtime.traceparent\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'opentelemetry')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
