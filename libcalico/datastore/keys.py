"""Calico's etcd key layout, built and parsed in one place.

  /calico/resources/v3/<group>/<plural>/[<namespace>/]<name>
  /calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26          (the CIDR's '/' becomes '-')
  /calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26
  /calico/ipam/v2/handle/<handle-id>
  /calico/ipam/v2/config

Every name placed in a key is checked for '/', which would let a caller-supplied name reach
another key (a key injection); the ValueError names the offending field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

RESOURCE_PREFIX = "/calico/resources/v3/"
IPAM_PREFIX = "/calico/ipam/v2/"
IPAM_CONFIG_KEY = IPAM_PREFIX + "config"
IPAM_HANDLE_PREFIX = IPAM_PREFIX + "handle/"
IPAM_HOST_PREFIX = IPAM_PREFIX + "host/"

GROUP_CORE = "core"  # Kubernetes core kinds: namespaces, pods, nodes, serviceaccounts, ...
GROUP_CALICO = "projectcalico.org"
GROUP_NETWORKING = "networking.k8s.io"
GROUP_DISCOVERY = "discovery.k8s.io"  # EndpointSlices


def check_segment(field: str, value: str) -> str:
    """A single key segment: non-empty, no '/'. Returns it for chaining."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: must be a non-empty string")
    if "/" in value:
        raise ValueError(f"{field}: {value!r} must not contain '/'")
    return value


@dataclass(frozen=True, slots=True)
class ResourceKey:
    group: str
    plural: str
    name: str
    namespace: str | None = None


def resource_prefix(group: str, plural: str, namespace: str | None = None) -> str:
    """The prefix listing every resource of a kind (in one namespace when given)."""
    prefix = f"{RESOURCE_PREFIX}{check_segment('group', group)}/{check_segment('plural', plural)}/"
    if namespace is not None:
        prefix += check_segment("namespace", namespace) + "/"
    return prefix


def resource_key(group: str, plural: str, name: str, namespace: str | None = None) -> str:
    return resource_prefix(group, plural, namespace) + check_segment("name", name)


def parse_resource_key(key: str) -> ResourceKey:
    """Inverse of resource_key; ValueError for anything else."""
    if not key.startswith(RESOURCE_PREFIX):
        raise ValueError(f"key: {key!r} is not under {RESOURCE_PREFIX}")
    parts = key[len(RESOURCE_PREFIX) :].split("/")
    if len(parts) == 3:
        group, plural, name = parts
        namespace = None
    elif len(parts) == 4:
        group, plural, namespace, name = parts
    else:
        raise ValueError(f"key: {key!r} is not a resource key")
    if not all(parts):
        raise ValueError(f"key: {key!r} has an empty segment")
    return ResourceKey(group=group, plural=plural, name=name, namespace=namespace)


# ---- IPAM ----


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"cidr: {cidr!r} is not a network address: {exc}") from None


def _cidr_segment(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return f"{network.network_address}-{network.prefixlen}"


def ipam_block_prefix(version: int) -> str:
    return f"{IPAM_PREFIX}assignment/{_family(version)}/block/"


def ipam_block_key(cidr: str) -> str:
    network = _network(cidr)
    return ipam_block_prefix(network.version) + _cidr_segment(network)


def ipam_affinity_prefix(node: str | None = None, version: int | None = None) -> str:
    """All affinities; or one node's; or one node's of one IP version."""
    if node is None:
        return IPAM_HOST_PREFIX
    prefix = IPAM_HOST_PREFIX + check_segment("node", node) + "/"
    if version is not None:
        prefix += f"{_family(version)}/block/"
    return prefix


def ipam_affinity_key(node: str, cidr: str) -> str:
    network = _network(cidr)
    return ipam_affinity_prefix(node, network.version) + _cidr_segment(network)


def ipam_handle_key(handle_id: str) -> str:
    return IPAM_HANDLE_PREFIX + check_segment("handle", handle_id)


def cidr_from_key_segment(segment: str) -> str:
    """'10.0.0.0-26' -> '10.0.0.0/26' (the last segment of block and affinity keys)."""
    address, sep, length = segment.rpartition("-")
    if not sep:
        raise ValueError(f"key: {segment!r} is not a '<address>-<prefixlen>' segment")
    return str(_network(f"{address}/{length}"))


@dataclass(frozen=True, slots=True)
class AffinityKey:
    node: str
    cidr: str


def parse_ipam_block_key(key: str) -> str:
    """The block CIDR of a block key."""
    for version in (4, 6):
        prefix = ipam_block_prefix(version)
        if key.startswith(prefix):
            return cidr_from_key_segment(key[len(prefix) :])
    raise ValueError(f"key: {key!r} is not an IPAM block key")


def parse_ipam_affinity_key(key: str) -> AffinityKey:
    if not key.startswith(IPAM_HOST_PREFIX):
        raise ValueError(f"key: {key!r} is not an IPAM affinity key")
    parts = key[len(IPAM_HOST_PREFIX) :].split("/")
    if len(parts) != 4 or parts[1] not in ("ipv4", "ipv6") or parts[2] != "block" or not parts[0]:
        raise ValueError(f"key: {key!r} is not an IPAM affinity key")
    return AffinityKey(node=parts[0], cidr=cidr_from_key_segment(parts[3]))


def parse_ipam_handle_key(key: str) -> str:
    if not key.startswith(IPAM_HANDLE_PREFIX) or "/" in key[len(IPAM_HANDLE_PREFIX) :]:
        raise ValueError(f"key: {key!r} is not an IPAM handle key")
    return check_segment("handle", key[len(IPAM_HANDLE_PREFIX) :])


def _family(version: int) -> str:
    if version not in (4, 6):
        raise ValueError(f"version: {version!r} must be 4 or 6")
    return f"ipv{version}"
