"""One copying controller (etcd mode): a Kubernetes kind -> its keys in the Calico datastore.

Driven by the kind's informer: each changed object is compared with what the datastore holds
for it and written only when the copy differs (create, update at the revision read, delete at
the revision read). A full pass lists the datastore prefix and reconciles every key on
either side: at start, after every relist of the informer (a 410 resync), and every
reconciler period (it repairs copies edited or removed behind the controller's back). The
datastore prefix belongs to this controller: a key with no Kubernetes object is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import trace

from libcalico.datastore import (
    Datastore,
    DatastoreError,
    KeyExistsError,
    KeyNotFoundError,
    RevisionConflictError,
)
from libcalico.datastore.keys import parse_resource_key
from libcalico.resources.validation import ValidationError
from services.controllers.copies import CopiedKind
from services.controllers.informer import Informer, ObjectKey

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

CONFLICT_ATTEMPTS = 5
RETRY_SECONDS = 1.0
CONFLICTS = (KeyExistsError, KeyNotFoundError, RevisionConflictError)


class CopyController:
    def __init__(
        self,
        kind: CopiedKind,
        informer: Informer,
        datastore: Datastore,
        reconciler_seconds: float,
    ) -> None:
        self.kind = kind
        self.informer = informer
        self.datastore = datastore
        self.reconciler_seconds = reconciler_seconds
        # What the datastore holds under the prefix, as far as this controller knows:
        # key -> (value, mod_revision). Refreshed by every full pass and every conflict.
        self._stored: dict[str, tuple[bytes, int]] = {}
        # Objects that failed validation, by key, with the resourceVersion reported (once each).
        self._invalid: dict[str, str] = {}
        self.writes = 0
        self.passes = 0

    async def run(self) -> None:
        queue = self.informer.subscribe()
        await self.informer.synced.wait()
        relists = -1
        next_pass = 0.0
        while True:
            try:
                if relists != self.informer.relists or time.monotonic() >= next_pass:
                    relists = self.informer.relists
                    queue.take()
                    await self.full_pass()
                    next_pass = time.monotonic() + self.reconciler_seconds
                    continue
                await queue.wait(max(0.0, next_pass - time.monotonic()))
                for okey in sorted(queue.take()):
                    await self.sync(okey)
            except DatastoreError as exc:
                log.warning("%s copy: %s; full pass again shortly", self.kind.kind, exc)
                next_pass = 0.0
                await asyncio.sleep(RETRY_SECONDS)

    async def full_pass(self) -> None:
        with tracer.start_as_current_span(
            "copy.full-pass", attributes={"calico.kind": self.kind.kind}
        ):
            await self._full_pass()

    async def _full_pass(self) -> None:
        listed = await self.datastore.list(self.kind.prefix)
        self._stored = {kv.key: (kv.value, kv.mod_revision) for kv in listed.items}
        keys = set(self.informer.objects)
        for key in list(self._stored):
            try:
                parsed = parse_resource_key(key)
            except ValueError:
                continue
            keys.add((parsed.namespace or "", parsed.name))
        for okey in sorted(keys):
            await self.sync(okey)
        self.passes += 1

    def _desired(self, okey: ObjectKey, key: str) -> bytes | ValidationError | None:
        obj = self.informer.get(okey)
        if obj is None:
            return None
        try:
            return self.kind.document(obj)
        except ValidationError as exc:
            version = str((obj.get("metadata") or {}).get("resourceVersion"))
            if self._invalid.get(key) != version:
                self._invalid[key] = version
                namespace, name = okey
                where = f"{namespace}/{name}" if namespace else name
                log.error(
                    "%s %s is not copied: %s",
                    self.kind.kind,
                    where,
                    exc,
                    extra={"kind": self.kind.kind, "object": where, "field": exc.path},
                )
            return exc

    async def sync(self, okey: ObjectKey) -> None:
        """Make the datastore's copy of one object match the informer's."""
        key = self.kind.key(okey)
        desired = self._desired(okey, key)
        if isinstance(desired, ValidationError):
            return  # leave whatever copy there is; the error was logged
        self._invalid.pop(key, None)
        for _ in range(CONFLICT_ATTEMPTS):
            stored = self._stored.get(key)
            try:
                if desired is None:
                    if stored is not None:
                        await self.datastore.delete(key, stored[1])
                        self._stored.pop(key, None)
                        self.writes += 1
                    return
                if stored is not None and stored[0] == desired:
                    return
                if stored is None:
                    kv = await self.datastore.create(key, desired)
                else:
                    kv = await self.datastore.update(key, desired, stored[1])
                self._stored[key] = (desired, kv.mod_revision)
                self.writes += 1
                return
            except CONFLICTS:
                await self._reread(key)
        log.warning("%s: gave up after %d conflicting writes", key, CONFLICT_ATTEMPTS)

    async def _reread(self, key: str) -> None:
        try:
            kv = await self.datastore.get(key)
        except KeyNotFoundError:
            self._stored.pop(key, None)
            return
        self._stored[key] = (kv.value, kv.mod_revision)
