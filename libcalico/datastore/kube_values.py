"""A projectcalico.org/v3 document <-> the custom resource stored for it.

The custom resource keeps the document's name, namespace, labels, annotations, spec and status;
its apiVersion is crd.projectcalico.org/v1. Read back, the document gets apiVersion
projectcalico.org/v3 and the API object's uid and creationTimestamp (the server owns those: a
caller's own uid is not sent). resourceVersion is never part of the value: it is the key's
mod_revision, as with every backend.
"""

from __future__ import annotations

import json
from typing import Any

from libcalico.datastore.api import DatastoreError
from libcalico.datastore.kube_keys import ObjectRef
from libcalico.resources.crds import CRD_API_VERSION, V3_KIND_TO_CRD_KIND

V3_API_VERSION = "projectcalico.org/v3"
_CRD_KIND_TO_V3 = {crd: v3 for v3, crd in V3_KIND_TO_CRD_KIND.items()}
_KEPT_METADATA = ("labels", "annotations")
_SERVER_METADATA = ("uid", "creationTimestamp")


def to_custom_resource(ref: ObjectRef, value: bytes) -> dict[str, Any]:
    """The custom resource for `value`; DatastoreError naming the key and field if it cannot be."""
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatastoreError(f"{ref.key}: value is not a JSON document: {error}") from error
    if not isinstance(doc, dict):
        raise DatastoreError(f"{ref.key}: value is not a JSON object")
    v3_kind = _CRD_KIND_TO_V3.get(ref.crd.kind, ref.crd.kind)
    if doc.get("apiVersion", V3_API_VERSION) != V3_API_VERSION:
        raise DatastoreError(
            f"{ref.key}: apiVersion {doc.get('apiVersion')!r} is not {V3_API_VERSION}"
        )
    if doc.get("kind", v3_kind) != v3_kind:
        raise DatastoreError(
            f"{ref.key}: kind {doc.get('kind')!r} does not match the key ({v3_kind})"
        )
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DatastoreError(f"{ref.key}: metadata is not an object")
    if metadata.get("name", ref.name) != ref.name:
        raise DatastoreError(
            f"{ref.key}: metadata.name {metadata.get('name')!r} differs from the key"
        )
    if metadata.get("namespace", ref.namespace) != ref.namespace:
        raise DatastoreError(
            f"{ref.key}: metadata.namespace {metadata.get('namespace')!r} differs from the key"
        )
    out_meta: dict[str, Any] = {"name": ref.name}
    if ref.namespace is not None:
        out_meta["namespace"] = ref.namespace
    for field in _KEPT_METADATA:
        if metadata.get(field):
            out_meta[field] = metadata[field]
    obj: dict[str, Any] = {
        "apiVersion": CRD_API_VERSION,
        "kind": ref.crd.kind,
        "metadata": out_meta,
        "spec": doc.get("spec") or {},
    }
    if "status" in doc:
        obj["status"] = doc["status"]
    return obj


def from_custom_resource(ref: ObjectRef, obj: dict[str, Any]) -> bytes:
    """The v3 document stored as `obj` (compact JSON)."""
    metadata = obj.get("metadata") or {}
    out_meta: dict[str, Any] = {"name": ref.name}
    if ref.namespace is not None:
        out_meta["namespace"] = ref.namespace
    for field in (*_KEPT_METADATA, *_SERVER_METADATA):
        if metadata.get(field):
            out_meta[field] = metadata[field]
    doc: dict[str, Any] = {
        "apiVersion": V3_API_VERSION,
        "kind": _CRD_KIND_TO_V3.get(ref.crd.kind, ref.crd.kind),
        "metadata": out_meta,
        "spec": obj.get("spec") or {},
    }
    if "status" in obj:
        doc["status"] = obj["status"]
    return json.dumps(doc, separators=(",", ":")).encode()


def revision_of(ref: ObjectRef, obj: dict[str, Any]) -> int:
    """metadata.resourceVersion as an integer (etcd's revision behind kube-apiserver)."""
    text = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(text))
    except ValueError:
        raise DatastoreError(
            f"{ref.key}: metadata.resourceVersion {text!r} is not an integer; this backend "
            "needs kube-apiserver's etcd revisions"
        ) from None
