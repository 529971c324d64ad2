"""IPAM datastore keys over ipaddress networks (wrapping libcalico.datastore.keys).

/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26        a block
/calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26       a node's affinity to a block
/calico/ipam/v2/handle/<handle id>                       a handle (index: block -> count)
"""

from __future__ import annotations

import functools
import ipaddress

from libcalico.datastore import keys as dskeys

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

HANDLE_PREFIX = dskeys.IPAM_HANDLE_PREFIX
HOST_PREFIX = dskeys.IPAM_HOST_PREFIX


def block_prefix(version: int) -> str:
    return dskeys.ipam_block_prefix(version)


@functools.lru_cache(maxsize=65536)
def block_key(cidr: Network) -> str:
    # Cached: computed on every block access in the hot path, and blocks are few.
    return dskeys.ipam_block_key(str(cidr))


def cidr_from_block_key(key: str) -> Network:
    return ipaddress.ip_network(dskeys.parse_ipam_block_key(key))


def affinity_prefix(node: str, version: int | None = None) -> str:
    return dskeys.ipam_affinity_prefix(node, version)


@functools.lru_cache(maxsize=65536)
def affinity_key(node: str, cidr: Network) -> str:
    return dskeys.ipam_affinity_key(node, str(cidr))


def parse_affinity_key(key: str) -> tuple[str, Network]:
    parsed = dskeys.parse_ipam_affinity_key(key)
    return parsed.node, ipaddress.ip_network(parsed.cidr)


def handle_key(handle_id: str) -> str:
    return dskeys.ipam_handle_key(handle_id)


def handle_id_from_key(key: str) -> str:
    return dskeys.parse_ipam_handle_key(key)
