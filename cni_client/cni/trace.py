"""The W3C `traceparent` one plugin invocation sends with every request, so calico-ipamd's and
calico-felix's spans for one ADD join one trace. Made here without OpenTelemetry (or even `re`),
as libcalico.runtime.traceparent does for code that can afford its imports."""

from __future__ import annotations

import posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

HEADER = "traceparent"
_HEX = frozenset("0123456789abcdef")


def _random_hex(nbytes: int) -> str:
    while True:
        value = posix.urandom(nbytes).hex()
        if value.strip("0"):  # all-zero ids are invalid
            return value


def _valid(value: str) -> bool:
    parts = value.split("-")
    return (
        len(parts) == 4
        and [len(p) for p in parts] == [2, 32, 16, 2]
        and set(value.replace("-", "")) <= _HEX
        and parts[0] != "ff"
        and parts[1].strip("0") != ""
        and parts[2].strip("0") != ""
    )


def new_traceparent(environ: Mapping[str, str]) -> str:
    """A new span id in the caller's trace when the environment carries a valid TRACEPARENT
    (as a test harness or runtime may pass one), else a new sampled trace."""
    parent = environ.get("TRACEPARENT", "").strip().lower()
    if _valid(parent):
        _, trace_id, _, flags = parent.split("-")
        return f"00-{trace_id}-{_random_hex(8)}-{flags}"
    return f"00-{_random_hex(16)}-{_random_hex(8)}-01"
