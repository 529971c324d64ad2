"""Names Calico gives a pod's endpoint: the host veth and the WorkloadEndpoint."""

from __future__ import annotations

import hashlib

HOST_VETH_PREFIX = "cali"
# 4 + 11 = 15 characters: the longest name a Linux interface may have (IFNAMSIZ - 1).
_HASH_CHARS = 11
# Every host-side veth gets this MAC: pods only ever talk to "the host", whichever veth.
HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"


def host_veth_name(namespace: str, pod: str) -> str:
    """`cali` + the first 11 hex characters of SHA-1("<namespace>.<pod>"), as Calico."""
    digest = hashlib.sha1(f"{namespace}.{pod}".encode(), usedforsecurity=False).hexdigest()
    return HOST_VETH_PREFIX + digest[:_HASH_CHARS]


def is_host_veth_name(name: str) -> bool:
    return name.startswith(HOST_VETH_PREFIX) and len(name) == len(HOST_VETH_PREFIX) + _HASH_CHARS


def _escape(segment: str) -> str:
    # Doubling dashes keeps the joined name unambiguous: single dashes separate the parts.
    return segment.replace("-", "--")


def workload_endpoint_name(node: str, pod: str, interface: str) -> str:
    """`<node>-k8s-<pod>-<interface>`, dashes inside each part doubled, as Calico."""
    return f"{_escape(node)}-k8s-{_escape(pod)}-{_escape(interface)}"
