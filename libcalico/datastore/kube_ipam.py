"""IPAM's keys on the kubernetes datastore: IPAMBlock, BlockAffinity, IPAMHandle, IPAMConfig.

  /calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26   IPAMBlock     10-0-0-0-26
  /calico/ipam/v2/host/<node>/ipv4/block/<cidr>       BlockAffinity <node>-<cidr name>
  /calico/ipam/v2/handle/<id>                         IPAMHandle    <id, lower-cased>
  /calico/ipam/v2/config                              IPAMConfig    default

Names are Calico's (`.` `:` `/` of a CIDR become `-`). They are made from the key and never
parsed back: the key of an object read from the API comes from its spec (`cidr`; `node` and
`cidr`; `handleID`), which therefore always carries what the name cannot say exactly (the
handle's case, the node/CIDR split of an affinity name, a long affinity name's hashed tail).

Values are IPAM's JSON documents (services/ipam/model.py); the document becomes the `spec`, so
`kubectl get ipamblocks -o yaml` reads as in a Calico cluster. The field names already are
Calico's (cidr, affinity, allocations, unallocated, attributes[].handle_id/secondary, deleted,
sequenceNumber, sequenceNumberForAllocation, strictAffinity; handleID, block, deleted); what
differs is mapped here: an affinity's spec also holds `node` and `cidr` (its key's parts), and
its `deleted` is the string "true"/"false" there (Calico's CRD types it as a string), a boolean
in the document. Unknown document fields are kept as they are.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.api import DatastoreError
from libcalico.datastore.keys import (
    IPAM_CONFIG_KEY,
    IPAM_HANDLE_PREFIX,
    IPAM_HOST_PREFIX,
    IPAM_PREFIX,
    ipam_affinity_key,
    ipam_block_key,
    ipam_handle_key,
    parse_ipam_affinity_key,
    parse_ipam_block_key,
    parse_ipam_handle_key,
)
from libcalico.resources.crds import CRD_API_VERSION, CalicoCRD, crd_for_kind

log = logging.getLogger(__name__)

BLOCK = crd_for_kind("IPAMBlock")
AFFINITY = crd_for_kind("BlockAffinity")
HANDLE = crd_for_kind("IPAMHandle")
CONFIG = crd_for_kind("IPAMConfig")
CONFIG_NAME = "default"
BLOCK_PREFIX = IPAM_PREFIX + "assignment/"
MAX_NAME = 253  # a Kubernetes object name (DNS subdomain)
_HASH_CHARS = 11
# Where each kind's keys start.
_ROOTS: tuple[tuple[str, CalicoCRD], ...] = (
    (BLOCK_PREFIX, BLOCK),
    (IPAM_HOST_PREFIX, AFFINITY),
    (IPAM_HANDLE_PREFIX, HANDLE),
    (IPAM_CONFIG_KEY, CONFIG),
)


@dataclass(frozen=True, slots=True)
class IpamRef:
    """One IPAM object: its kind, its API name and the datastore key it stands for."""

    crd: CalicoCRD
    name: str
    key: str
    namespace: None = None  # every IPAM kind is cluster-scoped

    @property
    def path(self) -> str:
        return f"/apis/{CRD_API_VERSION}/{self.crd.plural}/{self.name}"


@dataclass(frozen=True, slots=True)
class IpamScope:
    """What a list or watch of an IPAM prefix reads: every object of one kind, then filtered
    by key (the API cannot select on spec fields here: a node's affinities, one IP version's
    blocks are picked client-side)."""

    crd: CalicoCRD
    prefix: str
    namespace: None = None

    @property
    def path(self) -> str:
        return f"/apis/{CRD_API_VERSION}/{self.crd.plural}"


def is_ipam_key(key: str) -> bool:
    return key.startswith(IPAM_PREFIX)


# ---- names ----


def cidr_name(cidr: str) -> str:
    """Calico's object name for a CIDR: 10.0.0.0/26 -> 10-0-0-0-26, fd00::/122 -> fd00---122."""
    return cidr.replace(".", "-").replace(":", "-").replace("/", "-")


def affinity_name(node: str, cidr: str) -> str:
    """`<node>-<cidr name>`; past 253 characters the node part is cut and a hash of the whole
    pair appended, so two long names stay distinct."""
    tail = cidr_name(cidr)
    name = f"{node}-{tail}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(f"{node}/{cidr}".encode()).hexdigest()[:_HASH_CHARS]
    keep = MAX_NAME - len(tail) - len(digest) - 2
    # A name's dot-separated parts must start and end alphanumeric: no "x.-" at the cut.
    head = node[:keep].rstrip(".-")
    return f"{head}-{tail}-{digest}"


def handle_name(handle_id: str) -> str:
    return handle_id.lower()


# ---- keys -> objects ----


def _bad_key(key: str, error: ValueError) -> DatastoreError:
    return DatastoreError(f"{key}: not an IPAM key the kubernetes datastore maps ({error})")


def ref_for_key(key: str) -> IpamRef:
    """The object a key names; DatastoreError naming the key when it is not an IPAM key."""
    try:
        if key.startswith(BLOCK_PREFIX):
            return IpamRef(BLOCK, cidr_name(parse_ipam_block_key(key)), key)
        if key.startswith(IPAM_HOST_PREFIX):
            parsed = parse_ipam_affinity_key(key)
            return IpamRef(AFFINITY, affinity_name(parsed.node, parsed.cidr), key)
        if key.startswith(IPAM_HANDLE_PREFIX):
            return IpamRef(HANDLE, handle_name(parse_ipam_handle_key(key)), key)
    except ValueError as error:
        raise _bad_key(key, error) from None
    if key == IPAM_CONFIG_KEY:
        return IpamRef(CONFIG, CONFIG_NAME, key)
    raise _bad_key(key, ValueError("no IPAM kind has such keys"))


def scope_for_prefix(prefix: str) -> IpamScope:
    """The one kind a prefix lies in: inside a kind's keys, or the start of only one kind's."""
    for root, crd in _ROOTS:
        if prefix.startswith(root):
            return IpamScope(crd, prefix)
    kinds = [crd for root, crd in _ROOTS if root.startswith(prefix)]
    if len(kinds) == 1:
        return IpamScope(kinds[0], prefix)
    names = ", ".join(crd.kind for crd in kinds) or "none"
    raise DatastoreError(
        f"{prefix}: the kubernetes datastore lists and watches one IPAM kind at a time; this "
        f"prefix spans {names}"
    )


# ---- objects -> keys ----


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _key_from_spec(crd: CalicoCRD, obj: dict[str, Any]) -> str:
    spec = _spec(obj)
    if crd is BLOCK:
        return ipam_block_key(str(spec.get("cidr")))
    if crd is AFFINITY:
        return ipam_affinity_key(str(spec.get("node") or ""), str(spec.get("cidr")))
    if crd is HANDLE:
        handle_id = spec.get("handleID") or (obj.get("metadata") or {}).get("name")
        return ipam_handle_key(str(handle_id or ""))
    return IPAM_CONFIG_KEY


def ref_of(crd: CalicoCRD, obj: dict[str, Any]) -> IpamRef | None:
    """The key an object from the API stands for, from its spec.

    None (and one logged error naming the object) when its spec cannot give a key: such an
    object, made by hand through kubectl, has no place in Calico's key layout.
    """
    name = str((obj.get("metadata") or {}).get("name"))
    try:
        return IpamRef(crd, name, _key_from_spec(crd, obj))
    except ValueError as error:
        log.error("%s %s: skipped, its spec gives no datastore key: %s", crd.kind, name, error)
        return None


# ---- values ----


def _document(ref: IpamRef, value: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatastoreError(f"{ref.key}: value is not a JSON document: {error}") from error
    if not isinstance(doc, dict):
        raise DatastoreError(f"{ref.key}: value is not a JSON object")
    return doc


def _same(ref: IpamRef, doc: dict[str, Any], field: str, want: str) -> None:
    """A document field that repeats part of the key must agree with it."""
    got = doc.get(field)
    if got is None:
        return
    try:
        equal = ipaddress.ip_network(str(got)) == ipaddress.ip_network(want)
    except ValueError:
        equal = got == want
    if not equal:
        raise DatastoreError(f"{ref.key}: field {field!r} is {got!r}, the key says {want!r}")


def to_object(ref: IpamRef, value: bytes) -> dict[str, Any]:
    """The custom resource storing `value` at `ref`; DatastoreError naming key and field."""
    doc = _document(ref, value)
    spec = dict(doc)
    if ref.crd is BLOCK:
        cidr = parse_ipam_block_key(ref.key)
        _same(ref, doc, "cidr", cidr)
        spec["cidr"] = cidr
    elif ref.crd is AFFINITY:
        parsed = parse_ipam_affinity_key(ref.key)
        _same(ref, doc, "node", parsed.node)
        _same(ref, doc, "cidr", parsed.cidr)
        deleted = doc.get("deleted", False)
        if not isinstance(deleted, bool):
            raise DatastoreError(f"{ref.key}: field 'deleted' must be true or false")
        spec.update(node=parsed.node, cidr=parsed.cidr, deleted="true" if deleted else "false")
    elif ref.crd is HANDLE:
        handle_id = parse_ipam_handle_key(ref.key)
        _same(ref, doc, "handleID", handle_id)
        spec["handleID"] = handle_id
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": ref.crd.kind,
        "metadata": {"name": ref.name},
        "spec": spec,
    }


def value_of(ref: IpamRef, obj: dict[str, Any]) -> bytes:
    """The IPAM document stored as `obj` (compact JSON).

    DatastoreError when the object stands for another key than `ref`'s: two keys whose names
    collide (handle ids differing only in case; an affinity name that splits two ways).
    """
    spec = dict(_spec(obj))
    try:
        stored_key = _key_from_spec(ref.crd, obj)
    except ValueError as error:
        raise DatastoreError(
            f"{ref.key}: {ref.crd.kind} {ref.name} has a bad spec: {error}"
        ) from None
    if stored_key != ref.key:
        raise DatastoreError(
            f"{ref.key}: {ref.crd.kind} {ref.name} holds {stored_key}: the two keys map to one "
            "Kubernetes name"
        )
    if ref.crd is AFFINITY:
        spec.pop("node", None)
        spec.pop("cidr", None)
        deleted = spec.get("deleted", False)
        spec["deleted"] = deleted is True or str(deleted).lower() == "true"
    elif ref.crd is HANDLE:
        spec.setdefault("handleID", parse_ipam_handle_key(ref.key))
    return json.dumps(spec, separators=(",", ":")).encode()
