"""Small helpers shared by the datastore backends."""

from __future__ import annotations

from collections.abc import Sequence

from libcalico.datastore.api import TxnOp, TxnOpType


def check_key(key: str) -> None:
    """Reject keys no backend can store; a programming error, hence ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"datastore key must be a non-empty string, got {key!r}")


def prefix_range_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix`.

    None means "no upper bound" (the empty prefix, or one made only of the highest code point).
    Keys are compared as UTF-8 bytes by etcd and as code points by SQLite's BINARY collation;
    both orders agree for valid UTF-8, so one helper serves both backends.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            # Skip the surrogate block: those code points cannot be encoded as UTF-8.
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None


def check_txn_ops(ops: Sequence[TxnOp]) -> None:
    """Validate a txn before sending it; etcd rejects a key twice in one txn, so do we."""
    seen: set[str] = set()
    for op in ops:
        check_key(op.key)
        if op.key in seen:
            raise ValueError(f"txn: key {op.key!r} appears more than once")
        seen.add(op.key)
        if op.type is TxnOpType.UPDATE and op.revision is None:
            raise ValueError(f"txn: UPDATE of {op.key!r} needs a revision")
