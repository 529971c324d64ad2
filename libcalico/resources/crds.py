"""Calico's custom resources in the Kubernetes API: one table, and the CRD manifests made from it.

With the Kubernetes datastore Calico keeps its own kinds as custom resources of the group
`crd.projectcalico.org`, version `v1`, under the same kind and plural names as Calico's CRDs (so
`kubectl get ippools.crd.projectcalico.org` works as in a real install). Two kinds of the
project's `projectcalico.org/v3` API are not CRDs there: a Calico `Node` is the Kubernetes Node
and a `WorkloadEndpoint` is derived from the Pod. IPAM's records (blocks, affinities, handles,
config) are CRDs of their own, `IPAMConfiguration` being stored as `IPAMConfig`.

The schemas are structural but open: `spec` (and `status` where Calico has one) keep unknown
fields, because validation is libcalico's job (the same rules for every datastore), and an
object the schema cannot reject must still be skipped by consumers with a logged error.
`k8s/crds/calico-crds.yaml` is generated from this table by `scripts/gen_crds.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CRD_GROUP = "crd.projectcalico.org"
CRD_VERSION = "v1"
CRD_API_VERSION = f"{CRD_GROUP}/{CRD_VERSION}"


@dataclass(frozen=True, slots=True)
class CalicoCRD:
    kind: str  # as in the custom resource: "IPPool"
    plural: str  # "ippools"
    namespaced: bool = False
    has_status: bool = False  # Calico's CRD has a status next to spec

    @property
    def name(self) -> str:
        """The CRD object's name: `<plural>.<group>`."""
        return f"{self.plural}.{CRD_GROUP}"

    @property
    def singular(self) -> str:
        return self.kind.lower()


# Calico's names and scopes. Ordered as a reader would look for them: policy, networking, BGP,
# configuration, IPAM.
CALICO_CRDS: tuple[CalicoCRD, ...] = (
    CalicoCRD("Tier", "tiers"),
    CalicoCRD("GlobalNetworkPolicy", "globalnetworkpolicies"),
    CalicoCRD("NetworkPolicy", "networkpolicies", namespaced=True),
    CalicoCRD("GlobalNetworkSet", "globalnetworksets"),
    CalicoCRD("NetworkSet", "networksets", namespaced=True),
    CalicoCRD("HostEndpoint", "hostendpoints"),
    CalicoCRD("Profile", "profiles"),
    CalicoCRD("IPPool", "ippools"),
    CalicoCRD("IPReservation", "ipreservations"),
    CalicoCRD("BGPConfiguration", "bgpconfigurations"),
    CalicoCRD("BGPPeer", "bgppeers"),
    CalicoCRD("BGPFilter", "bgpfilters"),
    CalicoCRD("CalicoNodeStatus", "caliconodestatuses", has_status=True),
    CalicoCRD("FelixConfiguration", "felixconfigurations"),
    CalicoCRD("ClusterInformation", "clusterinformations"),
    CalicoCRD("KubeControllersConfiguration", "kubecontrollersconfigurations", has_status=True),
    CalicoCRD("IPAMConfig", "ipamconfigs"),
    CalicoCRD("IPAMBlock", "ipamblocks"),
    CalicoCRD("BlockAffinity", "blockaffinities"),
    CalicoCRD("IPAMHandle", "ipamhandles"),
)

# projectcalico.org/v3 kinds stored under another CRD kind.
V3_KIND_TO_CRD_KIND = {"IPAMConfiguration": "IPAMConfig"}
# projectcalico.org/v3 kinds that are no CRD with the Kubernetes datastore, and what backs them.
V3_KINDS_NOT_CRDS = {"Node": "the Kubernetes Node", "WorkloadEndpoint": "the Kubernetes Pod"}

_BY_KIND = {crd.kind: crd for crd in CALICO_CRDS}


def crd_for_kind(kind: str) -> CalicoCRD:
    """The CRD storing a kind, by its CRD kind or its projectcalico.org/v3 kind."""
    crd = _BY_KIND.get(V3_KIND_TO_CRD_KIND.get(kind, kind))
    if crd is None:
        backed = V3_KINDS_NOT_CRDS.get(kind)
        reason = f"is backed by {backed}" if backed else "is not a Calico custom resource"
        raise KeyError(f"kind: {kind!r} {reason}")
    return crd


def _open_object() -> dict[str, Any]:
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def crd_manifest(crd: CalicoCRD) -> dict[str, Any]:
    """The CustomResourceDefinition for one kind (apiextensions.k8s.io/v1)."""
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": _open_object(),
    }
    if crd.has_status:
        properties["status"] = _open_object()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd.name},
        "spec": {
            "group": CRD_GROUP,
            "names": {
                "kind": crd.kind,
                "listKind": f"{crd.kind}List",
                "plural": crd.plural,
                "singular": crd.singular,
            },
            "scope": "Namespaced" if crd.namespaced else "Cluster",
            "versions": [
                {
                    "name": CRD_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "properties": properties},
                    },
                }
            ],
        },
    }


def crd_manifests() -> list[dict[str, Any]]:
    return [crd_manifest(crd) for crd in CALICO_CRDS]
