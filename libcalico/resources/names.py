"""Names Calico gives a Kubernetes pod's endpoint: the host veth and the WorkloadEndpoint.

Felix names what it plumbs with these; the Kubernetes datastore derives a pod's
WorkloadEndpoint with the same names (and parses the WorkloadEndpoint name back into node,
pod and interface), so both live here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

HOST_VETH_PREFIX = "cali"
# 4 + 11 = 15 characters: the longest name a Linux interface may have (IFNAMSIZ - 1).
HOST_VETH_HASH_CHARS = 11
ORCHESTRATOR_K8S = "k8s"


def host_veth_name(namespace: str, pod: str) -> str:
    """`cali` + the first 11 hex characters of SHA-1("<namespace>.<pod>"), as Calico."""
    digest = hashlib.sha1(f"{namespace}.{pod}".encode(), usedforsecurity=False).hexdigest()
    return HOST_VETH_PREFIX + digest[:HOST_VETH_HASH_CHARS]


def _escape(segment: str) -> str:
    # Doubling dashes keeps the joined name unambiguous: single dashes separate the parts.
    return segment.replace("-", "--")


def workload_endpoint_name(node: str, pod: str, interface: str) -> str:
    """`<node>-k8s-<pod>-<interface>`, dashes inside each part doubled, as Calico."""
    return f"{_escape(node)}-{ORCHESTRATOR_K8S}-{_escape(pod)}-{_escape(interface)}"


@dataclass(frozen=True, slots=True)
class WorkloadEndpointName:
    node: str
    pod: str
    interface: str


def parse_workload_endpoint_name(name: str) -> WorkloadEndpointName | None:
    """The parts of a name made by workload_endpoint_name; None for any other name."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(name):
        if name[i] != "-":
            current.append(name[i])
            i += 1
        elif name.startswith("--", i):
            current.append("-")
            i += 2
        else:
            parts.append("".join(current))
            current = []
            i += 1
    parts.append("".join(current))
    if len(parts) != 4 or parts[1] != ORCHESTRATOR_K8S or not all(parts):
        return None
    node, _, pod, interface = parts
    if workload_endpoint_name(node, pod, interface) != name:
        return None  # e.g. a part that began or ended with a dash: not one of ours
    return WorkloadEndpointName(node, pod, interface)
