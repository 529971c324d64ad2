"""Keeping a consumer's tables from syncer updates: the one rule every view follows."""

from __future__ import annotations

from typing import Any


def put(table: dict[Any, Any], key: Any, value: Any) -> bool:
    """Store `value` under `key` (None deletes); True when the table changed.

    Views parse each update into a small frozen value and hand it here, so an update that
    changes nothing the view keeps (say an allocation in a block whose owner is all the view
    reads) reports no change and wakes no one.
    """
    if value is None:
        return table.pop(key, None) is not None
    if table.get(key) == value:
        return False
    table[key] = value
    return True
