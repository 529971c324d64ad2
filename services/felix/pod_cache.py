"""What Felix needs to know about Pods and Namespaces, kept current by a datastore watch.

Endpoints carry the pod's labels, service account and named ports, and the namespace's
labels. The cache lists `/calico/resources/v3/core/{pods,namespaces}/`, then watches the
`core` group; every change to a pod or namespace is reported to a listener (the endpoint
manager), which rewrites the endpoints it affects. Entries remember the revision they came
from, so an older answer (a direct get racing the watch) never replaces a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from libcalico.datastore import (
    Datastore,
    DatastoreError,
    EventType,
    KeyNotFoundError,
    ResyncRequiredError,
)
from libcalico.datastore import keys as dskeys
from services.felix.model import NamedPort, PodKey

log = logging.getLogger(__name__)

CORE_PREFIX = f"{dskeys.RESOURCE_PREFIX}{dskeys.GROUP_CORE}/"
PODS = "pods"
NAMESPACES = "namespaces"
RETRY_DELAY = 1.0
DEFAULT_SERVICE_ACCOUNT = "default"


@dataclass(frozen=True, slots=True)
class PodInfo:
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    ports: tuple[NamedPort, ...] = ()
    revision: int = 0


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    labels: Mapping[str, str] = field(default_factory=dict)
    revision: int = 0


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def parse_pod(raw: bytes, revision: int) -> PodInfo:
    """The parts of a Kubernetes Pod object an endpoint needs; tolerant of missing fields."""
    obj = json.loads(raw)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ports: list[NamedPort] = []
    for container in spec.get("containers") or ():
        for port in (container or {}).get("ports") or ():
            name = port.get("name") if isinstance(port, Mapping) else None
            if not name or not port.get("containerPort"):
                continue  # only named ports matter to policy
            ports.append(
                NamedPort(
                    name=str(name),
                    protocol=str(port.get("protocol") or "TCP"),
                    port=int(port["containerPort"]),
                    host_port=int(port.get("hostPort") or 0),
                    host_ip=str(port.get("hostIP") or ""),
                )
            )
    service_account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    return PodInfo(
        labels=_str_map(meta.get("labels")),
        service_account=str(service_account or DEFAULT_SERVICE_ACCOUNT),
        ports=tuple(ports),
        revision=revision,
    )


def parse_namespace(raw: bytes, revision: int) -> NamespaceInfo:
    obj = json.loads(raw)
    return NamespaceInfo(
        labels=_str_map((obj.get("metadata") or {}).get("labels")), revision=revision
    )


class PodCacheListener:
    """Told after a pod or namespace changed (created, updated or deleted)."""

    async def pod_changed(self, key: PodKey) -> None:
        """A pod's object changed."""

    async def namespace_changed(self, namespace: str) -> None:
        """A namespace's object changed."""


Callback = Callable[[], Awaitable[None]]


class PodCache:
    """Pods and namespaces by name; `start()` lists, then a task follows the watch."""

    def __init__(self, datastore: Datastore, listener: PodCacheListener | None = None) -> None:
        self._datastore = datastore
        self.listener = listener or PodCacheListener()
        self._pods: dict[PodKey, PodInfo] = {}
        self._namespaces: dict[str, NamespaceInfo] = {}
        self._task: asyncio.Task[None] | None = None
        self._revision = 0

    # ---- reads ----

    def pod(self, key: PodKey) -> PodInfo | None:
        return self._pods.get(key)

    def namespace(self, name: str) -> NamespaceInfo | None:
        return self._namespaces.get(name)

    async def fetch_pod(self, key: PodKey) -> PodInfo | None:
        """The cached pod, else a direct read (a pod written just before its CNI ADD)."""
        cached = self._pods.get(key)
        if cached is not None:
            return cached
        store_key = dskeys.resource_key(dskeys.GROUP_CORE, PODS, key.pod, key.namespace)
        try:
            kv = await self._datastore.get(store_key)
        except KeyNotFoundError:
            return None
        self._store_pod(key, kv.value, kv.mod_revision)
        return self._pods.get(key)

    async def fetch_namespace(self, name: str) -> NamespaceInfo | None:
        cached = self._namespaces.get(name)
        if cached is not None:
            return cached
        store_key = dskeys.resource_key(dskeys.GROUP_CORE, NAMESPACES, name)
        try:
            kv = await self._datastore.get(store_key)
        except KeyNotFoundError:
            return None
        self._store_namespace(name, kv.value, kv.mod_revision)
        return self._namespaces.get(name)

    # ---- updates ----

    def _store_pod(self, key: PodKey, raw: bytes, revision: int) -> bool:
        old = self._pods.get(key)
        if old is not None and old.revision >= revision:
            return False
        try:
            self._pods[key] = parse_pod(raw, revision)
        except (ValueError, TypeError, AttributeError):
            log.warning("ignoring malformed pod %s", key)
            return False
        return True

    def _store_namespace(self, name: str, raw: bytes, revision: int) -> bool:
        old = self._namespaces.get(name)
        if old is not None and old.revision >= revision:
            return False
        try:
            self._namespaces[name] = parse_namespace(raw, revision)
        except (ValueError, TypeError, AttributeError):
            log.warning("ignoring malformed namespace %s", name)
            return False
        return True

    def _apply(self, key: str, value: bytes | None, revision: int) -> Callback | None:
        """Apply one put (value) or delete (None); the listener call to make, if any."""
        try:
            rk = dskeys.parse_resource_key(key)
        except ValueError:
            return None
        if rk.plural == PODS and rk.namespace is not None:
            pod_key = PodKey(rk.namespace, rk.name)
            if value is None:
                if self._pods.pop(pod_key, None) is None:
                    return None
            elif not self._store_pod(pod_key, value, revision):
                return None
            return functools.partial(self.listener.pod_changed, pod_key)
        if rk.plural == NAMESPACES and rk.namespace is None:
            name = rk.name
            if value is None:
                if self._namespaces.pop(name, None) is None:
                    return None
            elif not self._store_namespace(name, value, revision):
                return None
            return functools.partial(self.listener.namespace_changed, name)
        return None

    async def _load(self) -> list[Callback]:
        """(Re)list everything; callbacks for what differs from before."""
        before_pods, before_ns = dict(self._pods), dict(self._namespaces)
        pods = await self._datastore.list(f"{CORE_PREFIX}{PODS}/")
        namespaces = await self._datastore.list(f"{CORE_PREFIX}{NAMESPACES}/")
        self._pods.clear()
        self._namespaces.clear()
        for kv in pods.items:
            self._apply(kv.key, kv.value, kv.mod_revision)
        for kv in namespaces.items:
            self._apply(kv.key, kv.value, kv.mod_revision)
        # Watch from the older list's revision: replaying a few events is harmless.
        self._revision = min(pods.revision, namespaces.revision)
        changed: list[Callback] = []
        for key in before_pods.keys() | self._pods.keys():
            if before_pods.get(key) != self._pods.get(key):
                changed.append(functools.partial(self.listener.pod_changed, key))
        for name in before_ns.keys() | self._namespaces.keys():
            if before_ns.get(name) != self._namespaces.get(name):
                changed.append(functools.partial(self.listener.namespace_changed, name))
        return changed

    async def start(self) -> None:
        await self._load()
        self._task = asyncio.create_task(self._follow(), name="felix-pod-cache")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _notify(self, callback: Callback) -> None:
        try:
            await callback()
        except Exception:
            log.exception("endpoint update after a pod/namespace change failed")

    async def _follow(self) -> None:
        while True:
            try:
                async for event in self._datastore.watch(CORE_PREFIX, self._revision + 1):
                    self._revision = max(self._revision, event.revision)
                    value = event.value if event.type is EventType.PUT else None
                    callback = self._apply(event.key, value, event.revision)
                    if callback is not None:
                        await self._notify(callback)
            except ResyncRequiredError:
                log.info("pod cache resyncing")
            except DatastoreError as exc:
                log.warning("pod cache watch failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_DELAY)
            while True:
                try:
                    callbacks = await self._load()
                    break
                except DatastoreError as exc:
                    log.warning("pod cache list failed, retrying: %s", exc)
                    await asyncio.sleep(RETRY_DELAY)
            for callback in callbacks:
                await self._notify(callback)
