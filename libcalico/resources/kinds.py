"""The registry of resource kinds: what users type, what objects say, where they are stored.

A kind is known by its `kind` and `apiVersion` inside an object, and by many names on the
command line (calicoctl's aliases, case-insensitive, optionally qualified by API group:
`networkpolicy.networking.k8s.io`). Unqualified `networkpolicy` means Calico's, as in
calicoctl; the Kubernetes one is reached with its group or kubectl's short name `netpol`.

To add a kind, append a KindInfo to `_KINDS` (and a spec validator in `validation`); the
registry refuses an alias claimed twice so a new kind cannot silently shadow another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.keys import GROUP_CALICO, GROUP_CORE, GROUP_DISCOVERY, GROUP_NETWORKING

CALICO_VERSION = "v3"
KUBERNETES_VERSION = "v1"


class UnknownKindError(ValueError):
    """A resource type or (apiVersion, kind) pair that names no known kind.

    `field` is the object field at fault ("apiVersion" or "kind") when it came from an object.
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str  # as in objects: "IPPool"
    group: str  # "projectcalico.org", "core", "networking.k8s.io" or "discovery.k8s.io"
    version: str  # "v3" / "v1"
    plural: str  # lowercase, as in keys: "ippools"
    namespaced: bool
    # Unqualified names users may type (lowercase). Kinds whose singular/plural would collide
    # with another kind's leave them out; those remain reachable group-qualified.
    aliases: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return self.version if self.group == GROUP_CORE else f"{self.group}/{self.version}"

    @property
    def is_calico(self) -> bool:
        return self.group == GROUP_CALICO

    def describe(self, name: str, namespace: str | None = None) -> str:
        """How messages name one object: `IPPool(default)`, `NetworkPolicy(x/deny-all)`."""
        return f"{self.kind}({namespace}/{name})" if namespace else f"{self.kind}({name})"

    def qualified_names(self) -> Iterable[str]:
        for name in {self.kind.lower(), self.plural, *self.aliases}:
            yield f"{name}.{self.group}"


def _calico(kind: str, plural: str, namespaced: bool, *short: str) -> KindInfo:
    aliases = (kind.lower(), plural, *short)
    return KindInfo(kind, GROUP_CALICO, CALICO_VERSION, plural, namespaced, aliases)


_KINDS: tuple[KindInfo, ...] = (
    # Calico (projectcalico.org/v3); short names as calicoctl registers them.
    _calico("IPPool", "ippools", False, "ipp", "ipps", "pool", "pools"),
    _calico("IPAMConfiguration", "ipamconfigurations", False, "ipamconfig", "ipamconfigs"),
    _calico("Node", "nodes", False, "no", "nos"),
    _calico("WorkloadEndpoint", "workloadendpoints", True, "wep", "weps"),
    _calico("HostEndpoint", "hostendpoints", False, "hep", "heps"),
    _calico("NetworkPolicy", "networkpolicies", True, "policy", "policies", "np", "pol", "pols"),
    _calico("GlobalNetworkPolicy", "globalnetworkpolicies", False, "gnp", "gnps"),
    _calico("NetworkSet", "networksets", True, "netset", "netsets"),
    _calico("GlobalNetworkSet", "globalnetworksets", False, "gns"),
    _calico("Profile", "profiles", False, "pro", "pros"),
    _calico("FelixConfiguration", "felixconfigurations", False, "felixconfig", "felixconfigs"),
    _calico("BGPConfiguration", "bgpconfigurations", False, "bgpconfig", "bgpconfigs"),
    _calico("BGPPeer", "bgppeers", False, "bgpp", "bgpps", "bp", "bps"),
    _calico("BGPFilter", "bgpfilters", False),
    _calico("ClusterInformation", "clusterinformations", False, "clusterinfo", "clusterinfos"),
    _calico(
        "KubeControllersConfiguration",
        "kubecontrollersconfigurations",
        False,
        "kubecontrollersconfig",
        "kubecontrollersconfigs",
    ),
    # Kubernetes kinds the project reads (core/v1 and networking.k8s.io/v1).
    KindInfo(
        "Namespace",
        GROUP_CORE,
        KUBERNETES_VERSION,
        "namespaces",
        False,
        ("namespace", "namespaces", "ns"),
    ),
    KindInfo("Pod", GROUP_CORE, KUBERNETES_VERSION, "pods", True, ("pod", "pods", "po")),
    KindInfo(
        "ServiceAccount",
        GROUP_CORE,
        KUBERNETES_VERSION,
        "serviceaccounts",
        True,
        ("serviceaccount", "serviceaccounts", "sa"),
    ),
    # Only kubectl's short name unqualified: plain "networkpolicy" is Calico's.
    KindInfo(
        "NetworkPolicy",
        GROUP_NETWORKING,
        KUBERNETES_VERSION,
        "networkpolicies",
        True,
        ("netpol", "netpols"),
    ),
    # Services and their EndpointSlices: what Felix load-balances (kube-proxy's inputs).
    KindInfo(
        "Service", GROUP_CORE, KUBERNETES_VERSION, "services", True, ("service", "services", "svc")
    ),
    KindInfo(
        "EndpointSlice",
        GROUP_DISCOVERY,
        KUBERNETES_VERSION,
        "endpointslices",
        True,
        ("endpointslice", "endpointslices"),
    ),
)


def _build_index(kinds: Iterable[KindInfo]) -> dict[str, KindInfo]:
    index: dict[str, KindInfo] = {}
    for info in kinds:
        for name in (*info.aliases, *info.qualified_names()):
            other = index.get(name)
            if other is not None and other != info:
                raise RuntimeError(
                    f"resource name {name!r} claimed by {other.kind} and {info.kind}"
                )
            index[name] = info
    return index


_BY_NAME = _build_index(_KINDS)
_BY_TYPE = {(info.api_version, info.kind): info for info in _KINDS}


def all_kinds() -> tuple[KindInfo, ...]:
    return _KINDS


def lookup_kind(name: str) -> KindInfo:
    """Resolve a user-typed resource type (case-insensitive) to its kind."""
    info = _BY_NAME.get(name.strip().lower()) if isinstance(name, str) else None
    if info is None:
        raise UnknownKindError(f"unknown resource type {name!r}")
    return info


def resolve_kind(kind: KindInfo | str) -> KindInfo:
    return kind if isinstance(kind, KindInfo) else lookup_kind(kind)


def kind_of(obj: Mapping[str, Any]) -> KindInfo:
    """The kind of an object, from its apiVersion and kind (both exact, as Kubernetes)."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise UnknownKindError("required (a string naming the resource kind)", "kind")
    if not isinstance(api_version, str) or not api_version:
        raise UnknownKindError(
            f"required for kind {kind!r} (e.g. projectcalico.org/v3)", "apiVersion"
        )
    info = _BY_TYPE.get((api_version, kind))
    if info is not None:
        return info
    expected = sorted(i.api_version for i in _KINDS if i.kind == kind)
    if expected:
        raise UnknownKindError(
            f"{api_version!r} does not serve kind {kind!r}; expected {' or '.join(expected)}",
            "apiVersion",
        )
    raise UnknownKindError(f"unknown resource kind {kind!r} (apiVersion {api_version!r})", "kind")
