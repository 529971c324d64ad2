"""The part of an IPAM block's stored form that services besides IPAM read.

A block's `affinity` is "host:<node>" for a block claimed by a node (Calico's form); IPAM
writes it, calico-bgpd advertises the block from that node, Felix routes it there over VXLAN.
"""

from __future__ import annotations

AFFINITY_HOST_PREFIX = "host:"


def host_affinity(node: str) -> str:
    return AFFINITY_HOST_PREFIX + node


def affine_node(affinity: object) -> str | None:
    """The node a block's `affinity` field names, or None (unclaimed, or not a host)."""
    if isinstance(affinity, str) and affinity.startswith(AFFINITY_HOST_PREFIX):
        return affinity[len(AFFINITY_HOST_PREFIX) :] or None
    return None
