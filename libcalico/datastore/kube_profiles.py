"""Profiles: `kns.<namespace>` from Namespaces, `ksa.<namespace>.<name>` from ServiceAccounts,
and the `profiles` custom resources for every other name
(`/calico/resources/v3/projectcalico.org/profiles/<name>`).

A namespace's profile allows all traffic in and out and applies the namespace's labels as
`pcns.<key>` (plus `pcns.projectcalico.org/name`); a service account's has no rules and
applies its labels as `pcsa.<key>` (plus `pcsa.projectcalico.org/name`): what Calico derives.
The derived profiles are read-only (their source is the Namespace or ServiceAccount: a write
fails naming it). Their revision and uid are the source object's. A list or watch of the
profiles prefix reads all three sources and merges them; a custom resource named `kns.`/`ksa.`
(only kubectl can make one) is shadowed by the derived profile.

Felix's calculation graph also watches namespaces and service accounts directly and applies
their labels as parent labels; it does not apply a profile's `labelsToApply`, so nothing is
applied twice, and the derived rules compile to what it assumes for such profiles anyway
(kns.: allow all; ksa.: no rules).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from libcalico.datastore.api import (
    DatastoreError,
    EventType,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    WatchEvent,
)
from libcalico.datastore.keys import GROUP_CALICO, resource_prefix
from libcalico.datastore.kube_client import KubeClient
from libcalico.datastore.kube_core import ApiObjects
from libcalico.datastore.kube_kinds import (
    NAMESPACES,
    SERVICE_ACCOUNTS,
    ApiKind,
    KeyName,
    KindHandler,
    api_metadata,
    compact_json,
    merge_streams,
)

NAMESPACE_PROFILE_PREFIX = "kns."
SERVICE_ACCOUNT_PROFILE_PREFIX = "ksa."
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
NAME_LABEL = "projectcalico.org/name"
V3_API_VERSION = "projectcalico.org/v3"

ListCustomResources = Callable[[str], Awaitable[ListResult]]
WatchCustomResources = Callable[[str, int], AsyncIterator[WatchEvent]]


def is_derived_profile(name: str) -> bool:
    return name.startswith((NAMESPACE_PROFILE_PREFIX, SERVICE_ACCOUNT_PROFILE_PREFIX))


def _profile(name: str, source: dict[str, Any], spec: dict[str, Any]) -> bytes:
    metadata = api_metadata(source)
    out_meta: dict[str, Any] = {"name": name}
    for field in ("uid", "creationTimestamp"):
        if metadata.get(field):
            out_meta[field] = metadata[field]
    doc = {"apiVersion": V3_API_VERSION, "kind": "Profile", "metadata": out_meta, "spec": spec}
    return compact_json(doc)


def _labels_to_apply(prefix: str, name: str, source: dict[str, Any]) -> dict[str, str]:
    labels = api_metadata(source).get("labels") or {}
    out = {f"{prefix}{k}": str(v) for k, v in sorted(labels.items())}
    out[f"{prefix}{NAME_LABEL}"] = name
    return out


def namespace_profile(namespace: dict[str, Any]) -> tuple[str, bytes]:
    """(profile name, value) of a Namespace."""
    name = str(api_metadata(namespace).get("name"))
    spec = {
        "ingress": [{"action": "Allow"}],
        "egress": [{"action": "Allow"}],
        "labelsToApply": _labels_to_apply(NAMESPACE_LABEL_PREFIX, name, namespace),
    }
    return NAMESPACE_PROFILE_PREFIX + name, _profile(
        NAMESPACE_PROFILE_PREFIX + name, namespace, spec
    )


def service_account_profile(account: dict[str, Any]) -> tuple[str, bytes]:
    """(profile name, value) of a ServiceAccount."""
    metadata = api_metadata(account)
    name = str(metadata.get("name"))
    profile = f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{metadata.get('namespace')}.{name}"
    spec = {"labelsToApply": _labels_to_apply(SERVICE_ACCOUNT_LABEL_PREFIX, name, account)}
    return profile, _profile(profile, account, spec)


def _source(profile: str) -> tuple[ApiKind, KeyName] | None:
    """Which object a derived profile name comes from (None: not a name one can have)."""
    if profile.startswith(NAMESPACE_PROFILE_PREFIX):
        namespace = profile[len(NAMESPACE_PROFILE_PREFIX) :]
        return (NAMESPACES, KeyName(namespace, None)) if namespace else None
    rest = profile[len(SERVICE_ACCOUNT_PROFILE_PREFIX) :]
    # Namespace names have no dots (DNS labels); service account names may.
    namespace, dot, name = rest.partition(".")
    if not dot or not namespace or not name:
        return None
    return SERVICE_ACCOUNTS, KeyName(name, namespace)


class Profiles(KindHandler):
    """The profiles prefix: derived names here, custom resources through the callables."""

    def __init__(
        self,
        client: KubeClient,
        list_custom_resources: ListCustomResources,
        watch_custom_resources: WatchCustomResources,
    ) -> None:
        self.prefix = resource_prefix(GROUP_CALICO, "profiles")
        self._client = client
        self._objects = {kind: ApiObjects(client, kind) for kind in (NAMESPACES, SERVICE_ACCOUNTS)}
        self._list_crs = list_custom_resources
        self._watch_crs = watch_custom_resources

    def owns(self, key: str) -> bool:
        """Single keys: the derived names only (other profiles are plain custom resources);
        lists and watches of the whole prefix come here through the datastore's dispatch."""
        return key.startswith(self.prefix) and is_derived_profile(key[len(self.prefix) :])

    def _convert(self, kind: ApiKind, obj: dict[str, Any]) -> tuple[str, bytes]:
        name, value = namespace_profile(obj) if kind == NAMESPACES else service_account_profile(obj)
        return self.prefix + name, value

    def _read_only(self, key: str) -> DatastoreError:
        source = _source(key[len(self.prefix) :])
        what = (
            f"{source[0].kind} {source[1].namespace + '/' if source[1].namespace else ''}"
            f"{source[1].name}"
            if source is not None
            else "a Namespace or ServiceAccount"
        )
        return DatastoreError(
            f"{key}: derived from {what}; with the kubernetes datastore it is read-only: "
            "change the Kubernetes object's labels instead"
        )

    async def get(self, key: str) -> KeyValue:
        source = _source(key[len(self.prefix) :])
        if source is None:
            raise KeyNotFoundError(key)
        kind, where = source
        objects = self._objects[kind]
        obj = await objects.read(where)
        if obj is None:
            raise KeyNotFoundError(key)
        derived_key, value = self._convert(kind, obj)
        if derived_key != key:
            raise KeyNotFoundError(key)
        revision = objects.revision(obj)
        return KeyValue(key, value, revision, revision)

    async def list(self, prefix: str) -> ListResult:
        items: dict[str, KeyValue] = {}
        revisions: list[int] = []
        custom = await self._list_crs(prefix)
        revisions.append(custom.revision)
        for kv in custom.items:
            if not is_derived_profile(kv.key[len(self.prefix) :]):
                items[kv.key] = kv
        for kind, objects in self._objects.items():
            found, revision = await objects.list(None)
            revisions.append(revision)
            for obj in found:
                key, value = self._convert(kind, obj)
                if key.startswith(prefix):
                    mod = objects.revision(obj)
                    items[key] = KeyValue(key, value, mod, mod)
        # Watching from the oldest list's revision replays a few events: harmless.
        return ListResult(sorted(items.values(), key=lambda kv: kv.key), min(revisions))

    async def create(self, key: str, value: bytes) -> KeyValue:
        raise self._read_only(key)

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        raise self._read_only(key)

    async def put(self, key: str, value: bytes) -> KeyValue:
        raise self._read_only(key)

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        raise self._read_only(key)

    async def _watch_kind(
        self, kind: ApiKind, prefix: str, start_revision: int
    ) -> AsyncIterator[WatchEvent]:
        async for event in self._client.watch(kind.collection_path(), start_revision - 1):
            if event.type == "BOOKMARK":
                continue
            key, value = self._convert(kind, event.object)
            if key.startswith(prefix):
                kind_of = EventType.DELETE if event.type == "DELETED" else EventType.PUT
                yield WatchEvent(kind_of, key, value, event.resource_version)

    async def _watch_custom(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        async for event in self._watch_crs(prefix, start_revision):
            if not is_derived_profile(event.key[len(self.prefix) :]):
                yield event

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        streams = [self._watch_custom(prefix, start_revision)]
        streams += [self._watch_kind(kind, prefix, start_revision) for kind in self._objects]
        return merge_streams(streams)
