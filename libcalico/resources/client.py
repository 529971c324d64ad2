"""CRUD for resources over a Datastore: validation, metadata bookkeeping, batches in one txn.

Every write goes through `apply_all`, so single-object calls and calicoctl's multi-document
files share one path: validate every document, run checks across documents (IPPool CIDRs must
not overlap), then write everything in a single datastore transaction conditioned on the
revisions just read. Nothing is written unless everything is. A conflict with a concurrent
writer is retried; a conflict with a resourceVersion the caller supplied is the caller's to
resolve and is raised.

Returned objects carry `metadata.resourceVersion` (the key's mod_revision as a string),
`metadata.uid` (set at creation, kept on replace) and `metadata.creationTimestamp` (RFC 3339
UTC, likewise). The stored value is the validated object without resourceVersion.
"""

from __future__ import annotations

import builtins
import copy
import ipaddress
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from libcalico.datastore.api import (
    Datastore,
    DatastoreError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionConflictError,
    TxnOp,
    TxnOpType,
)
from libcalico.datastore.keys import GROUP_CALICO, resource_key, resource_prefix
from libcalico.resources.kinds import KindInfo, UnknownKindError, kind_of, resolve_kind
from libcalico.resources.serialization import from_json_bytes, to_json_bytes
from libcalico.resources.validation import ValidationError, check_update, validate
from libcalico.resources.validation.fields import as_mapping, as_str

WriteMode = Literal["apply", "create", "replace"]
WRITE_MODES: tuple[WriteMode, ...] = ("apply", "create", "replace")
# Attempts of a batch that loses races with concurrent writers before giving up.
MAX_ATTEMPTS = 5


class ResourceNotFoundError(KeyNotFoundError):
    """`resource does not exist: NetworkPolicy(x/deny-all)`; `index` as in a batch."""

    def __init__(self, description: str, key: str, index: int | None = None) -> None:
        DatastoreError.__init__(self, f"resource does not exist: {description}")
        self.key = key
        self.description = description
        self.index = index


class ResourceExistsError(KeyExistsError):
    def __init__(self, description: str, key: str, index: int | None = None) -> None:
        DatastoreError.__init__(self, f"resource already exists: {description}")
        self.key = key
        self.description = description
        self.index = index


class ResourceConflictError(RevisionConflictError):
    """The object changed since the resourceVersion the caller supplied (or kept changing)."""

    def __init__(
        self,
        description: str,
        key: str,
        expected: int,
        actual: int | None,
        index: int | None = None,
    ) -> None:
        DatastoreError.__init__(
            self,
            f"update conflict: {description} is at resourceVersion {actual}, "
            f"not {expected}: get it again and reapply your change",
        )
        self.key = key
        self.expected = expected
        self.actual = actual
        self.description = description
        self.index = index


@dataclass
class _Target:
    """One document of a batch, resolved to its key."""

    index: int
    info: KindInfo
    name: str
    namespace: str | None
    key: str
    obj: dict[str, Any]  # validated (writes) or the stored object (deletes, once read)
    user_revision: int | None

    @property
    def description(self) -> str:
        return self.info.describe(self.name, self.namespace)


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_revision(value: Any, path: str, index: int | None) -> int:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isdigit():
        raise ValidationError(path, f"{value!r} is not a resourceVersion", index)
    return int(text)


def _decode(kv: KeyValue) -> dict[str, Any]:
    obj = from_json_bytes(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


class ResourceClient:
    def __init__(self, datastore: Datastore) -> None:
        self._datastore = datastore

    # ---- reads ----

    async def get(
        self, kind: KindInfo | str, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        info = resolve_kind(kind)
        namespace = self._namespace(info, namespace)
        key = resource_key(info.group, info.plural, name, namespace)
        try:
            return _decode(await self._datastore.get(key))
        except KeyNotFoundError:
            raise ResourceNotFoundError(info.describe(name, namespace), key) from None

    async def list(
        self, kind: KindInfo | str, namespace: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Every object of a kind (of one namespace, or all when None), by (namespace, name)."""
        info = resolve_kind(kind)
        prefix = resource_prefix(info.group, info.plural, namespace if info.namespaced else None)
        result = await self._datastore.list(prefix)
        objects = [_decode(kv) for kv in result.items]
        objects.sort(
            key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"].get("name", ""))
        )
        return objects

    # ---- single writes ----

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return (await self.apply_all([obj], "create"))[0]

    async def update(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Replace an existing object; compare-and-swap when it carries a resourceVersion."""
        return (await self.apply_all([obj], "replace"))[0]

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return (await self.apply_all([obj], "apply"))[0]

    async def delete(
        self,
        kind: KindInfo | str,
        name: str,
        namespace: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        info = resolve_kind(kind)
        namespace = self._namespace(info, namespace)
        metadata: dict[str, Any] = {"name": name}
        if namespace is not None:
            metadata["namespace"] = namespace
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        ref = {"apiVersion": info.api_version, "kind": info.kind, "metadata": metadata}
        return (await self.delete_all([ref]))[0]

    # ---- batches ----

    async def apply_all(
        self, objs: Sequence[Mapping[str, Any]], mode: WriteMode
    ) -> builtins.list[dict[str, Any]]:
        """Write every object or none (see the module docstring)."""
        if mode not in WRITE_MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(WRITE_MODES)}")
        targets = self._write_targets(objs, mode)
        last_error: DatastoreError | None = None
        for _attempt in range(MAX_ATTEMPTS):
            current = {t.key: await self._read(t.key) for t in targets}
            ops: builtins.list[TxnOp] = []
            stored: builtins.list[dict[str, Any]] = []
            for target in targets:
                op, value = self._plan_write(target, current[target.key], mode)
                ops.append(op)
                stored.append(value)
            await self._check_ippool_overlaps(targets, stored)
            try:
                written = await self._datastore.txn(ops)
            except (RevisionConflictError, KeyExistsError, KeyNotFoundError) as exc:
                last_error = self._raise_if_callers_conflict(targets, exc)
                continue
            results = []
            for value, kv in zip(stored, written, strict=True):
                assert kv is not None  # CREATE/UPDATE always return the written value
                value["metadata"]["resourceVersion"] = str(kv.mod_revision)
                results.append(value)
            return results
        assert last_error is not None
        raise last_error

    async def delete_all(self, refs: Sequence[Mapping[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Delete every referenced object or none; returns the deleted objects."""
        targets = [self._ref_target(i, ref) for i, ref in enumerate(refs)]
        seen: dict[str, int] = {}
        for target in targets:
            if target.key in seen:
                raise ValidationError(
                    "metadata.name",
                    f"{target.description} is also document {seen[target.key]}",
                    target.index,
                )
            seen[target.key] = target.index
        last_error: DatastoreError | None = None
        for _attempt in range(MAX_ATTEMPTS):
            ops: builtins.list[TxnOp] = []
            deleted: builtins.list[dict[str, Any]] = []
            for target in targets:
                kv = await self._read(target.key)
                if kv is None:
                    raise ResourceNotFoundError(target.description, target.key, target.index)
                self._check_callers_revision(target, kv)
                revision = target.user_revision or kv.mod_revision
                ops.append(TxnOp(TxnOpType.DELETE, target.key, revision=revision))
                deleted.append(_decode(kv))
            try:
                await self._datastore.txn(ops)
            except (RevisionConflictError, KeyNotFoundError) as exc:
                last_error = self._raise_if_callers_conflict(targets, exc)
                continue
            return deleted
        assert last_error is not None
        raise last_error

    # ---- helpers ----

    @staticmethod
    def _namespace(info: KindInfo, namespace: str | None) -> str | None:
        if not info.namespaced:
            return None  # as calicoctl: a namespace given for a global kind is ignored
        if not namespace:
            raise ValueError(f"namespace is required for namespaced kind {info.kind}")
        return namespace

    async def _read(self, key: str) -> KeyValue | None:
        try:
            return await self._datastore.get(key)
        except KeyNotFoundError:
            return None

    def _write_targets(
        self, objs: Sequence[Mapping[str, Any]], mode: WriteMode
    ) -> builtins.list[_Target]:
        targets: builtins.list[_Target] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(objs):
            try:
                obj = validate(raw)
            except ValidationError as exc:
                raise exc.with_index(index) from None
            info = kind_of(obj)
            metadata = obj["metadata"]
            revision_text = metadata.pop("resourceVersion", None)
            user_revision = None
            if revision_text and mode != "create":  # create ignores it: nothing to compare
                user_revision = _parse_revision(revision_text, "metadata.resourceVersion", index)
            name, namespace = metadata["name"], metadata.get("namespace")
            key = resource_key(info.group, info.plural, name, namespace)
            target = _Target(index, info, name, namespace, key, obj, user_revision)
            if key in seen:
                raise ValidationError(
                    "metadata.name", f"{target.description} is also document {seen[key]}", index
                )
            seen[key] = index
            targets.append(target)
        return targets

    def _ref_target(self, index: int, ref: Mapping[str, Any]) -> _Target:
        try:
            info = kind_of(as_mapping(ref, ""))
            metadata = as_mapping(ref.get("metadata"), "metadata")
            name = as_str(metadata.get("name"), "metadata.name", allow_empty=False)
            namespace = metadata.get("namespace") if info.namespaced else None
            if info.namespaced:
                namespace = as_str(namespace, "metadata.namespace", allow_empty=False)
            revision_text = metadata.get("resourceVersion")
            user_revision = (
                _parse_revision(revision_text, "metadata.resourceVersion", index)
                if revision_text
                else None
            )
        except UnknownKindError as exc:
            raise ValidationError(exc.field or "kind", exc.reason, index) from None
        except ValidationError as exc:
            raise exc.with_index(index) from None
        key = resource_key(info.group, info.plural, name, namespace)
        return _Target(index, info, name, namespace, key, {}, user_revision)

    def _check_callers_revision(self, target: _Target, kv: KeyValue) -> None:
        if target.user_revision is not None and target.user_revision != kv.mod_revision:
            raise ResourceConflictError(
                target.description,
                target.key,
                target.user_revision,
                kv.mod_revision,
                target.index,
            )

    def _plan_write(
        self, target: _Target, kv: KeyValue | None, mode: WriteMode
    ) -> tuple[TxnOp, dict[str, Any]]:
        value = copy.deepcopy(target.obj)
        metadata = value["metadata"]
        if kv is None:
            if mode == "replace":
                raise ResourceNotFoundError(target.description, target.key, target.index)
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = _now_rfc3339()
            return TxnOp(TxnOpType.CREATE, target.key, to_json_bytes(value)), value
        if mode == "create":
            raise ResourceExistsError(target.description, target.key, target.index)
        self._check_callers_revision(target, kv)
        old = from_json_bytes(kv.value)
        try:
            check_update(old, value)
        except ValidationError as exc:
            raise exc.with_index(target.index) from None
        old_metadata = old.get("metadata", {})
        for key in ("uid", "creationTimestamp"):
            if old_metadata.get(key):
                metadata[key] = old_metadata[key]
            else:
                metadata.pop(key, None)
        op = TxnOp(TxnOpType.UPDATE, target.key, to_json_bytes(value), kv.mod_revision)
        return op, value

    def _raise_if_callers_conflict(
        self, targets: Sequence[_Target], exc: DatastoreError
    ) -> DatastoreError:
        """A txn lost a race: raise if the caller pinned that key's revision, else retry."""
        key = getattr(exc, "key", None)
        for target in targets:
            if target.key == key and target.user_revision is not None:
                actual = exc.actual if isinstance(exc, RevisionConflictError) else None
                raise ResourceConflictError(
                    target.description, target.key, target.user_revision, actual, target.index
                ) from None
        return exc

    async def _check_ippool_overlaps(
        self, targets: Sequence[_Target], stored: Sequence[dict[str, Any]]
    ) -> None:
        """IPPool CIDRs may not overlap each other, in the batch or already stored."""
        batch = [
            (t.index, t.name, ipaddress.ip_network(v["spec"]["cidr"]))
            for t, v in zip(targets, stored, strict=True)
            if t.info.group == GROUP_CALICO and t.info.kind == "IPPool"
        ]
        if not batch:
            return
        names = {name for _, name, _ in batch}
        existing = await self._datastore.list(resource_prefix(GROUP_CALICO, "ippools"))
        others: builtins.list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
        for kv in existing.items:
            pool = from_json_bytes(kv.value)
            name = pool.get("metadata", {}).get("name", "")
            if name not in names:
                others.append((name, ipaddress.ip_network(pool["spec"]["cidr"])))
        for index, name, network in batch:
            for other_name, other in others:
                if network.version == other.version and network.overlaps(other):
                    raise ValidationError(
                        "spec.cidr",
                        f"IPPool({name}) CIDR {network} overlaps with IPPool({other_name}) "
                        f"CIDR {other}",
                        index,
                    )
            others.append((name, network))
