"""Which API object a datastore key names, with the Kubernetes datastore.

Mapped so far: Calico's own kinds kept as custom resources (`crds.py`), under
`/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>` (IPAMConfiguration, whose
v3 plural is `ipamconfigurations`, is the `IPAMConfig` CRD). IPAM's own keys are kube_ipam.py's.
Everything else (Node, WorkloadEndpoint, Kubernetes core kinds) is refused with a DatastoreError
that names the key: those mappings come later in issue 12 (KUBERNETES.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from libcalico.datastore.api import DatastoreError
from libcalico.datastore.keys import GROUP_CALICO, RESOURCE_PREFIX
from libcalico.resources.crds import CALICO_CRDS, CRD_API_VERSION, CalicoCRD

CALICO_PREFIX = f"{RESOURCE_PREFIX}{GROUP_CALICO}/"
# IPAM's records are CRDs too, but their keys live under /calico/ipam/v2/ (kube_ipam.py).
_IPAM_KINDS = {"IPAMConfig", "IPAMBlock", "BlockAffinity", "IPAMHandle"}
# The projectcalico.org/v3 plural of a CRD kind stored under another name.
_V3_PLURAL = {"IPAMConfig": "ipamconfigurations"}
_BY_PLURAL = {crd.plural: crd for crd in CALICO_CRDS if crd.kind not in _IPAM_KINDS}
_BY_PLURAL.update({_V3_PLURAL[crd.kind]: crd for crd in CALICO_CRDS if crd.kind in _V3_PLURAL})


def not_mapped(key: str, why: str = "") -> DatastoreError:
    detail = f" ({why})" if why else ""
    return DatastoreError(
        f"{key}: not mapped to the Kubernetes API yet{detail}; the kubernetes datastore maps "
        "Calico's custom resources and the Kubernetes-owned kinds of KUBERNETES.md"
    )


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One custom resource."""

    crd: CalicoCRD
    name: str
    namespace: str | None

    @property
    def key(self) -> str:
        middle = f"{self.namespace}/" if self.namespace is not None else ""
        plural = _V3_PLURAL.get(self.crd.kind, self.crd.plural)
        return f"{CALICO_PREFIX}{plural}/{middle}{self.name}"

    @property
    def path(self) -> str:
        return f"{collection_path(self.crd, self.namespace)}/{self.name}"


@dataclass(frozen=True, slots=True)
class Scope:
    """What one list or watch reads: a kind, in one namespace or all; then filtered by prefix."""

    crd: CalicoCRD
    namespace: str | None
    prefix: str

    @property
    def path(self) -> str:
        return collection_path(self.crd, self.namespace)


def collection_path(crd: CalicoCRD, namespace: str | None) -> str:
    where = f"namespaces/{namespace}/" if namespace is not None else ""
    return f"/apis/{CRD_API_VERSION}/{where}{crd.plural}"


def _kind_and_rest(key: str) -> tuple[CalicoCRD, str]:
    if not key.startswith(CALICO_PREFIX):
        raise not_mapped(key)
    plural, sep, rest = key[len(CALICO_PREFIX) :].partition("/")
    crd = _BY_PLURAL.get(plural)
    if crd is None or not sep:
        raise not_mapped(key, f"{plural!r} is not a Calico custom resource kind")
    return crd, rest


def object_for_key(key: str) -> ObjectRef:
    crd, rest = _kind_and_rest(key)
    parts = rest.split("/")
    if crd.namespaced and len(parts) == 2 and all(parts):
        return ObjectRef(crd, name=parts[1], namespace=parts[0])
    if not crd.namespaced and len(parts) == 1 and parts[0]:
        return ObjectRef(crd, name=parts[0], namespace=None)
    shape = "<namespace>/<name>" if crd.namespaced else "<name>"
    raise DatastoreError(f"{key}: a {crd.kind} key ends in {shape}")


def scope_for_prefix(prefix: str) -> Scope:
    """The kind a prefix lies in (at least `.../<plural>/`), and its namespace when complete."""
    crd, rest = _kind_and_rest(prefix)
    namespace = None
    if crd.namespaced and "/" in rest:
        namespace = rest.split("/", 1)[0]
    return Scope(crd, namespace, prefix)


def ref_of(crd: CalicoCRD, obj: dict[str, object]) -> ObjectRef:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise DatastoreError(f"{crd.kind} from the API has no metadata")
    namespace = metadata.get("namespace") if crd.namespaced else None
    return ObjectRef(crd, str(metadata.get("name")), str(namespace) if namespace else None)
