"""Calico `Node` <-> the Kubernetes Node (`/calico/resources/v3/projectcalico.org/nodes/<name>`).

With the Kubernetes datastore every Kubernetes Node is a Calico Node: its labels are the
Node's labels, and the fields Calico owns are the Node's `projectcalico.org/...` annotations
(the names Calico uses, `NODE_ANNOTATIONS`). Read, a Node also gets what Calico derives:
`spec.orchRefs` (the Kubernetes node), `spec.addresses` (the BGP addresses, then the Node's
InternalIP/ExternalIP) and `status.podCIDRs`; a write ignores those three, and refuses any
other field this mapping cannot store, naming it.

Writes (the kubelet, or the lab, owns the Node itself):
- create: the Kubernetes Node must exist (else an error naming it); since it does, the Calico
  Node exists too: KeyExistsError, as for any existing key (apply and replace update it);
- update/put: a PUT of the Node with its resourceVersion (compare-and-swap): Calico's
  annotations set from the spec; labels replaced by the document's when it has any; the
  Node's other annotations replaced by the document's when it has any (a document without
  labels or annotations leaves them as they are);
- delete: removes Calico's annotations (a PUT with the resourceVersion); the Node stays.
Revision = the Node's resourceVersion. Lists and watches read `/api/v1/nodes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.api import (
    DatastoreError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionConflictError,
    WatchEvent,
)
from libcalico.datastore.keys import GROUP_CALICO, resource_prefix
from libcalico.datastore.kube_client import KubeClient
from libcalico.datastore.kube_core import ApiObjects
from libcalico.datastore.kube_kinds import (
    NODES,
    KeyName,
    KindHandler,
    RepeatFilter,
    api_metadata,
    compact_json,
    decode_json_object,
    name_in_key,
)

V3_API_VERSION = "projectcalico.org/v3"
ORCHESTRATOR_K8S = "k8s"


@dataclass(frozen=True, slots=True)
class NodeAnnotation:
    """One Calico Node field kept as a Kubernetes Node annotation."""

    path: tuple[str, ...]  # inside spec: ("bgp", "ipv4Address")
    annotation: str
    number: bool = False  # an integer in the spec (the annotation is always a string)

    @property
    def field(self) -> str:
        return "spec." + ".".join(self.path)


# Calico's annotation names (libcalico-go's Kubernetes node conversion).
NODE_ANNOTATIONS: tuple[NodeAnnotation, ...] = (
    NodeAnnotation(("bgp", "ipv4Address"), "projectcalico.org/IPv4Address"),
    NodeAnnotation(("bgp", "ipv6Address"), "projectcalico.org/IPv6Address"),
    NodeAnnotation(("bgp", "asNumber"), "projectcalico.org/ASNumber", number=True),
    NodeAnnotation(("bgp", "routeReflectorClusterID"), "projectcalico.org/RouteReflectorClusterID"),
    NodeAnnotation(("bgp", "ipv4IPIPTunnelAddr"), "projectcalico.org/IPv4IPIPTunnelAddr"),
    NodeAnnotation(("ipv4VXLANTunnelAddr",), "projectcalico.org/IPv4VXLANTunnelAddr"),
    NodeAnnotation(("vxlanTunnelMACAddr",), "projectcalico.org/VXLANTunnelMACAddr"),
    NodeAnnotation(("ipv6VXLANTunnelAddr",), "projectcalico.org/IPv6VXLANTunnelAddr"),
    NodeAnnotation(("vxlanTunnelMACAddrV6",), "projectcalico.org/VXLANTunnelMACAddrV6"),
    NodeAnnotation(
        ("wireguard", "interfaceIPv4Address"), "projectcalico.org/IPv4WireguardInterfaceAddr"
    ),
    NodeAnnotation(
        ("wireguard", "interfaceIPv6Address"), "projectcalico.org/IPv6WireguardInterfaceAddr"
    ),
)
_CALICO_ANNOTATIONS = frozenset(a.annotation for a in NODE_ANNOTATIONS)
# Derived on read, ignored on write.
DERIVED_SPEC_FIELDS = ("orchRefs", "addresses")
# Calico's annotations and the labels are written through the Node's status subresource, which
# takes metadata too: calico-node then needs `update nodes/status`, never `update nodes` (which
# could change the Node's spec: taints, unschedulable, podCIDR). See k8s/README.md, RBAC.
NODE_WRITES = "status"
_NESTED = {a.path[0] for a in NODE_ANNOTATIONS if len(a.path) == 2}
_TOP_LEVEL = {a.path[0] for a in NODE_ANNOTATIONS if len(a.path) == 1}
_NESTED_FIELDS = {(a.path[0], a.path[1]) for a in NODE_ANNOTATIONS if len(a.path) == 2}


def _spec_value(annotation: NodeAnnotation, text: str) -> Any:
    if annotation.number and text.isdigit():
        return int(text)
    return text


def calico_node(node: dict[str, Any]) -> dict[str, Any]:
    """The projectcalico.org/v3 Node document of a Kubernetes Node."""
    metadata = api_metadata(node)
    name = str(metadata.get("name"))
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    spec: dict[str, Any] = {}
    for annotation in NODE_ANNOTATIONS:
        text = annotations.get(annotation.annotation)
        if not text:
            continue
        target = spec
        for part in annotation.path[:-1]:
            target = target.setdefault(part, {})
        target[annotation.path[-1]] = _spec_value(annotation, text)
    spec["orchRefs"] = [{"nodeName": name, "orchestrator": ORCHESTRATOR_K8S}]
    addresses = [
        {"address": spec["bgp"][field], "type": "CalicoNodeIP"}
        for field in ("ipv4Address", "ipv6Address")
        if spec.get("bgp", {}).get(field)
    ]
    for address in (node.get("status") or {}).get("addresses") or ():
        if address.get("type") in ("InternalIP", "ExternalIP") and address.get("address"):
            addresses.append({"address": str(address["address"]), "type": address["type"]})
    if addresses:
        spec["addresses"] = addresses
    out_meta: dict[str, Any] = {"name": name}
    if metadata.get("labels"):
        out_meta["labels"] = dict(metadata["labels"])
    others = {k: v for k, v in annotations.items() if k not in _CALICO_ANNOTATIONS}
    if others:
        out_meta["annotations"] = others
    for field in ("uid", "creationTimestamp"):
        if metadata.get(field):
            out_meta[field] = metadata[field]
    doc: dict[str, Any] = {
        "apiVersion": V3_API_VERSION,
        "kind": "Node",
        "metadata": out_meta,
        "spec": spec,
    }
    pod_cidrs = (node.get("spec") or {}).get("podCIDRs")
    if pod_cidrs:
        doc["status"] = {"podCIDRs": list(pod_cidrs)}
    return doc


def calico_node_value(node: dict[str, Any]) -> bytes:
    return compact_json(calico_node(node))


def _annotation_text(key: str, annotation: NodeAnnotation, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatastoreError(f"{key}: {annotation.field} {value!r} is not a string")
    if annotation.number and isinstance(value, str) and not value.isdigit():
        raise DatastoreError(f"{key}: {annotation.field} {value!r} is not a number")
    return str(value)


def calico_annotations(key: str, doc: dict[str, Any]) -> dict[str, str]:
    """Calico's annotations for a Node document; DatastoreError naming a field that has none."""
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise DatastoreError(f"{key}: spec is not an object")
    for field, given in spec.items():
        if field in DERIVED_SPEC_FIELDS or field in _TOP_LEVEL:
            continue
        if field in _NESTED:
            if given is not None and not isinstance(given, dict):
                raise DatastoreError(f"{key}: spec.{field} is not an object")
            for inner in given or {}:
                if (field, inner) not in _NESTED_FIELDS:
                    raise _unmapped(key, f"spec.{field}.{inner}")
            continue
        raise _unmapped(key, f"spec.{field}")
    out: dict[str, str] = {}
    for annotation in NODE_ANNOTATIONS:
        value: Any = spec
        for part in annotation.path:
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, ""):
            out[annotation.annotation] = _annotation_text(key, annotation, value)
    return out


def _unmapped(key: str, field: str) -> DatastoreError:
    mapped = ", ".join(a.field for a in NODE_ANNOTATIONS)
    return DatastoreError(
        f"{key}: {field} cannot be stored with the kubernetes datastore: a Calico Node is the "
        f"Kubernetes Node, and only these fields are kept (as its annotations): {mapped}"
    )


def merged_node(key: str, node: dict[str, Any], value: bytes) -> dict[str, Any]:
    """The Kubernetes Node carrying the Calico Node document `value` (see the module note)."""
    doc = decode_json_object(key, value)
    if doc.get("apiVersion", V3_API_VERSION) != V3_API_VERSION:
        raise DatastoreError(f"{key}: apiVersion {doc.get('apiVersion')!r} is not {V3_API_VERSION}")
    if doc.get("kind", "Node") != "Node":
        raise DatastoreError(f"{key}: kind {doc.get('kind')!r} does not match the key (Node)")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DatastoreError(f"{key}: metadata is not an object")
    node_meta = dict(api_metadata(node))
    if metadata.get("name", node_meta.get("name")) != node_meta.get("name"):
        raise DatastoreError(f"{key}: metadata.name {metadata.get('name')!r} differs from the key")
    calico = calico_annotations(key, doc)
    current: dict[str, str] = dict(node_meta.get("annotations") or {})
    if metadata.get("annotations"):
        given = dict(metadata["annotations"])
        for name in given:
            if name in _CALICO_ANNOTATIONS:
                raise DatastoreError(
                    f"{key}: metadata.annotations[{name!r}] is Calico's own: set it through the "
                    "Node's spec"
                )
        others = given
    else:
        others = {k: v for k, v in current.items() if k not in _CALICO_ANNOTATIONS}
    node_meta["annotations"] = {**others, **calico}
    if "labels" in metadata:
        node_meta["labels"] = dict(metadata.get("labels") or {})
    return {**node, "metadata": node_meta}


def without_calico(node: dict[str, Any]) -> dict[str, Any]:
    """The Node with Calico's annotations removed."""
    node_meta = dict(api_metadata(node))
    annotations = node_meta.get("annotations") or {}
    node_meta["annotations"] = {
        k: v for k, v in annotations.items() if k not in _CALICO_ANNOTATIONS
    }
    return {**node, "metadata": node_meta}


class CalicoNodes(KindHandler):
    """`.../projectcalico.org/nodes/<name>` served from the Kubernetes Nodes."""

    def __init__(self, client: KubeClient) -> None:
        self.prefix = resource_prefix(GROUP_CALICO, "nodes")
        self._nodes = ApiObjects(client, NODES)
        self._client = client

    def _where(self, key: str) -> KeyName:
        return name_in_key(key, self.prefix, namespaced=False)

    def _kv(self, key: str, node: dict[str, Any]) -> KeyValue:
        revision = self._nodes.revision(node)
        return KeyValue(key, calico_node_value(node), revision, revision)

    async def _read(self, key: str) -> tuple[KeyName, dict[str, Any]]:
        where = self._where(key)
        node = await self._nodes.read(where)
        if node is None:
            raise KeyNotFoundError(key)
        return where, node

    async def get(self, key: str) -> KeyValue:
        return self._kv(key, (await self._read(key))[1])

    async def list(self, prefix: str) -> ListResult:
        nodes, revision = await self._nodes.list(None)
        kvs = [
            self._kv(key, node)
            for node in nodes
            if (key := self.prefix + str(api_metadata(node).get("name"))).startswith(prefix)
        ]
        kvs.sort(key=lambda kv: kv.key)
        return ListResult(kvs, revision)

    async def create(self, key: str, value: bytes) -> KeyValue:
        where = self._where(key)
        if await self._nodes.read(where) is None:
            raise DatastoreError(
                f"create {key}: there is no Kubernetes Node {where.name!r}; with the kubernetes "
                "datastore a Calico Node is the Kubernetes Node, made by its kubelet (or the lab)"
            )
        raise KeyExistsError(key)

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        where, node = await self._read(key)
        current = self._nodes.revision(node)
        if current != revision:
            raise RevisionConflictError(key, revision, current)
        body = merged_node(key, node, value)
        return self._kv(key, await self._nodes.replace(key, where, body, revision, NODE_WRITES))

    async def put(self, key: str, value: bytes) -> KeyValue:
        while True:
            where = self._where(key)
            node = await self._nodes.read(where)
            if node is None:
                return await self.create(key, value)  # raises, naming the missing Node
            try:
                return await self.update(key, value, self._nodes.revision(node))
            except RevisionConflictError:
                continue

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        while True:
            where, node = await self._read(key)
            current = self._nodes.revision(node)
            if revision is not None and current != revision:
                raise RevisionConflictError(key, revision, current)
            try:
                await self._nodes.replace(key, where, without_calico(node), current, NODE_WRITES)
            except RevisionConflictError:
                if revision is not None:
                    raise
                continue
            return self._kv(key, node)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        repeats = RepeatFilter()
        async for event in self._client.watch(NODES.collection_path(), start_revision - 1):
            if event.type == "BOOKMARK":
                continue
            key = self.prefix + str(api_metadata(event.object).get("name"))
            if not key.startswith(prefix):
                continue
            value = calico_node_value(event.object)
            if event.type == "DELETED":
                repeats.deleted(key)
                yield WatchEvent(EventType.DELETE, key, value, event.resource_version)
            elif repeats.put_is_new(key, value):
                yield WatchEvent(EventType.PUT, key, value, event.resource_version)
