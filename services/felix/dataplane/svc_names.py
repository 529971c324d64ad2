"""Kernel names of Felix's per-service objects, shared by the nftables and iptables dataplanes.

Every name is ``cali-<kind>-<16 chars of a content hash>``: 25 characters, inside iptables'
28-character chain limit, stable across restarts (derived from the ServicePort id and, for
endpoints, the backend's address and port), so a restarted Felix finds its own chains again.
"""

from __future__ import annotations

import base64
import hashlib

from services.felix.calc.model import ServiceBackend

# The connection mark bit that asks for masquerade at postrouting (kube-proxy's 0x4000). It is
# a *conntrack* mark: Felix's endpoint chains rewrite packet marks between DNAT (prerouting)
# and SNAT (postrouting); the conntrack entry carries it across untouched.
CT_MARK_MASQ = 0x4000


def _hash(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:16]


def service_hash(service_port_id: str) -> str:
    return _hash("svc", service_port_id)


def cluster_chain(service_port_id: str) -> str:
    """Balances over every backend (cluster traffic policy)."""
    return f"cali-svc-{service_hash(service_port_id)}"


def local_chain(service_port_id: str) -> str:
    """Balances over this node's backends only (traffic policy Local)."""
    return f"cali-svl-{service_hash(service_port_id)}"


def external_chain(service_port_id: str) -> str:
    """Entry for node-port / external-IP / load-balancer traffic (masquerade, ETP)."""
    return f"cali-sxt-{service_hash(service_port_id)}"


def endpoint_hash(service_port_id: str, backend: ServiceBackend) -> str:
    return _hash("sep", service_port_id, backend.address, str(backend.port))


def endpoint_chain(service_port_id: str, backend: ServiceBackend) -> str:
    """DNAT to one backend (and hairpin masquerade, affinity recording)."""
    return f"cali-sep-{endpoint_hash(service_port_id, backend)}"


def affinity_set(service_port_id: str, backend: ServiceBackend, timeout_s: int) -> str:
    """Clients recently sent to one backend. The timeout is part of the name: a changed
    timeout is a new set (a set's timeout cannot be changed in place)."""
    digest = _hash("aff", service_port_id, backend.address, str(backend.port), str(timeout_s))
    return f"cali-aff-{digest}"
