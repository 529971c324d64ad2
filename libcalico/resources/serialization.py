"""Canonical JSON for stored resources: sorted keys, no whitespace, UTF-8.

Canonical bytes make equal objects store identically, so a no-op apply is recognisable and
watchers can compare values byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def to_json_bytes(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def from_json_bytes(data: bytes) -> dict[str, Any]:
    """Decode a stored resource; ValueError if it is not a JSON object."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"stored resource is not a JSON object but a {type(value).__name__}")
    return value
