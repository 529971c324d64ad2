"""Names Calico gives a pod's endpoint: the host veth and the WorkloadEndpoint.

The names themselves are libcalico's (the Kubernetes datastore derives WorkloadEndpoints with
them too); this module adds what only Felix's plumbing needs.
"""

from __future__ import annotations

from libcalico.resources.names import (
    HOST_VETH_HASH_CHARS,
    HOST_VETH_PREFIX,
    host_veth_name,
    workload_endpoint_name,
)

# Every host-side veth gets this MAC: pods only ever talk to "the host", whichever veth.
HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"


def is_host_veth_name(name: str) -> bool:
    return (
        name.startswith(HOST_VETH_PREFIX)
        and len(name) == len(HOST_VETH_PREFIX) + HOST_VETH_HASH_CHARS
    )


__all__ = ["HOST_VETH_MAC", "host_veth_name", "is_host_veth_name", "workload_endpoint_name"]
