"""A multi-key txn for a backend that has no transactions (the Kubernetes API): ordered writes.

The ops are applied one after another, each with its own precondition (CREATE of an absent key,
UPDATE and DELETE at the caller's revision). On the first failure the ops already applied are
reverted, newest first, each by a compare-and-swap on the revision it just wrote (a DELETE is
undone by creating the key again with the value it had), and the failing op's error is raised:
KeyExistsError, KeyNotFoundError or RevisionConflictError, as the atomic backends raise.

This is not isolation, and not atomicity under a crash: another reader can see the middle, and
a process killed half-way leaves the first ops written. Callers order their ops so that every
prefix of them is a safe state (IPAM: services/ipam/staging.py; KUBERNETES.md). A revert that
fails (the key changed again meanwhile, or the backend is down) is logged and the rest of the
revert goes on; the state left is then a prefix-like state, which the same ordering keeps safe.

An UPDATE that is not the last op is read first, so that its old value can be put back; the
read's revision must be the caller's (else RevisionConflictError, before anything is written).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from libcalico.datastore.api import (
    Datastore,
    KeyValue,
    RevisionConflictError,
    TxnOp,
    TxnOpType,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Applied:
    """One op written: what it left (None: deleted) and what was there before (None: absent)."""

    key: str
    written: KeyValue | None
    before: bytes | None


async def apply_in_order(ds: Datastore, ops: Sequence[TxnOp]) -> list[KeyValue | None]:
    """Apply `ops` in order through ds's single-key writes; see the module note."""
    applied: list[_Applied] = []
    results: list[KeyValue | None] = []
    for index, op in enumerate(ops):
        try:
            done = await _apply(ds, op, last=index == len(ops) - 1)
        except Exception:
            await revert(ds, applied)
            raise
        applied.append(done)
        results.append(done.written)
    return results


async def _apply(ds: Datastore, op: TxnOp, last: bool) -> _Applied:
    if op.type is TxnOpType.CREATE:
        return _Applied(op.key, await ds.create(op.key, op.value), None)
    if op.type is TxnOpType.UPDATE:
        assert op.revision is not None  # check_txn_ops
        before = None
        if not last:  # the last op is never reverted: no need to know what it replaces
            current = await ds.get(op.key)
            if current.mod_revision != op.revision:
                raise RevisionConflictError(op.key, op.revision, current.mod_revision)
            before = current.value
        return _Applied(op.key, await ds.update(op.key, op.value, op.revision), before)
    old = await ds.delete(op.key, op.revision)
    return _Applied(op.key, None, old.value)


async def revert(ds: Datastore, applied: Sequence[_Applied]) -> None:
    """Undo applied ops, newest first, each compare-and-swap on what it wrote."""
    for done in reversed(applied):
        try:
            if done.written is None:
                assert done.before is not None
                await ds.create(done.key, done.before)
            elif done.before is None:
                await ds.delete(done.key, done.written.mod_revision)
            else:
                await ds.update(done.key, done.before, done.written.mod_revision)
        except Exception as error:
            log.error("txn revert of %s failed, its write stays: %s", done.key, error)
