"""W3C Trace Context `traceparent` values, without OpenTelemetry or gRPC.

For light clients (the CNI plugin) that cannot afford to import either: they make a
traceparent, send it as gRPC metadata under the key `traceparent`, and the server's standard
W3C propagation joins that trace. Format: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

HEADER = "traceparent"
SAMPLED = 0x01

_TRACEPARENT_RE = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?$"
)
_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16


@dataclass(frozen=True)
class TraceParent:
    trace_id: str  # 32 lowercase hex digits, not all zero
    span_id: str  # 16 lowercase hex digits, not all zero: the caller's span
    flags: int = SAMPLED

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def child(self) -> TraceParent:
        """The same trace with a new span id: what to send for a next hop."""
        return TraceParent(self.trace_id, _random_hex(8, _INVALID_SPAN_ID), self.flags)

    def metadata(self) -> tuple[tuple[str, str]]:
        """gRPC metadata carrying this traceparent."""
        return ((HEADER, self.header()),)


def _random_hex(nbytes: int, invalid: str) -> str:
    while True:
        value = os.urandom(nbytes).hex()
        if value != invalid:
            return value


def new_traceparent(sampled: bool = True) -> TraceParent:
    """A new trace: random trace id and span id."""
    return TraceParent(
        trace_id=_random_hex(16, _INVALID_TRACE_ID),
        span_id=_random_hex(8, _INVALID_SPAN_ID),
        flags=SAMPLED if sampled else 0,
    )


def parse_traceparent(value: str) -> TraceParent | None:
    """Parse a traceparent header; None when it is not valid per W3C Trace Context."""
    match = _TRACEPARENT_RE.match(value.strip())
    if match is None:
        return None
    version = match["version"]
    if version == "ff" or (version == "00" and match["rest"] is not None):
        return None
    if match["trace_id"] == _INVALID_TRACE_ID or match["span_id"] == _INVALID_SPAN_ID:
        return None
    return TraceParent(match["trace_id"], match["span_id"], int(match["flags"], 16))
