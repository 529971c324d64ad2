"""Checking endpoint API requests before anything is touched; errors name the field.

Everything that ends up in an interface name, a path or a datastore key is checked here,
so a bad request is refused with INVALID_ARGUMENT and nothing is created.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from calico.felix.v1 import endpoints_pb2 as pb
from libcalico.resources.validation.fields import DNS1123_LABEL_RE, DNS1123_SUBDOMAIN_RE
from services.felix.model import EndpointID, IPAddress

# As the WorkloadEndpoint validator takes it (stricter than CNI, which also allows '_' and
# '.'): runtimes use hex IDs, and the endpoint must stay valid for calicoctl.
_CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")
CONTAINER_ID_MAX = 255
IFNAMSIZ = 16
MIN_MTU = 68
MIN_MTU_IPV6 = 1280
MAX_MTU = 65535
MAX_POLICY_TIMEOUT_MS = 10 * 60 * 1000


class InvalidRequestError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class SetupRequest:
    id: EndpointID
    netns: str
    ips: tuple[IPAddress, ...]
    mtu: int  # 0: Felix's default
    network_name: str
    policy_timeout: float | None  # seconds; None: Felix's default


def check_interface_name(name: str, field: str) -> str:
    if not name:
        raise InvalidRequestError(field, "required")
    if len(name) >= IFNAMSIZ:
        raise InvalidRequestError(field, f"{name!r} is longer than {IFNAMSIZ - 1} characters")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise InvalidRequestError(field, f"{name!r} is not a valid interface name")
    return name


def check_endpoint_id(msg: pb.EndpointID, field: str = "id") -> EndpointID:
    cid = msg.container_id
    if not cid:
        raise InvalidRequestError(f"{field}.container_id", "required")
    if len(cid) > CONTAINER_ID_MAX or not _CONTAINER_ID_RE.match(cid):
        raise InvalidRequestError(
            f"{field}.container_id",
            f"{cid!r} must be alphanumerics and inner '-' (at most {CONTAINER_ID_MAX})",
        )
    if not msg.namespace:
        raise InvalidRequestError(f"{field}.namespace", "required")
    if len(msg.namespace) > 63 or not DNS1123_LABEL_RE.match(msg.namespace):
        raise InvalidRequestError(
            f"{field}.namespace", f"{msg.namespace!r} is not a DNS-1123 label"
        )
    if not msg.pod:
        raise InvalidRequestError(f"{field}.pod", "required")
    if len(msg.pod) > 253 or not DNS1123_SUBDOMAIN_RE.match(msg.pod):
        raise InvalidRequestError(f"{field}.pod", f"{msg.pod!r} is not a DNS-1123 subdomain")
    iface = check_interface_name(msg.interface_name, f"{field}.interface_name")
    return EndpointID(cid, msg.namespace, msg.pod, iface)


def check_netns(path: str, field: str = "netns") -> str:
    if not path:
        raise InvalidRequestError(field, "required")
    if not path.startswith("/"):
        raise InvalidRequestError(field, f"{path!r} must be an absolute path")
    return path


def check_addresses(values: Sequence[str], field: str = "addresses") -> tuple[IPAddress, ...]:
    if not values:
        raise InvalidRequestError(field, "at least one address is required")
    ips: list[IPAddress] = []
    for i, text in enumerate(values):
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            raise InvalidRequestError(f"{field}[{i}]", f"{text!r} is not an IP address") from None
        ip = iface.ip
        if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.is_link_local:
            raise InvalidRequestError(f"{field}[{i}]", f"{text!r} cannot be a pod address")
        if ip in ips:
            raise InvalidRequestError(f"{field}[{i}]", f"{text!r} is given twice")
        ips.append(ip)
    return tuple(ips)


def check_setup(msg: pb.SetupEndpointRequest) -> SetupRequest:
    endpoint_id = check_endpoint_id(msg.id)
    netns = check_netns(msg.netns)
    ips = check_addresses(msg.addresses)
    mtu = msg.mtu
    if mtu:
        low = MIN_MTU_IPV6 if any(ip.version == 6 for ip in ips) else MIN_MTU
        if not low <= mtu <= MAX_MTU:
            raise InvalidRequestError("mtu", f"{mtu} is outside {low}..{MAX_MTU}")
    timeout_ms = msg.policy_timeout_ms
    if not 0 <= timeout_ms <= MAX_POLICY_TIMEOUT_MS:
        raise InvalidRequestError(
            "policy_timeout_ms", f"{timeout_ms} is outside 0..{MAX_POLICY_TIMEOUT_MS}"
        )
    return SetupRequest(
        id=endpoint_id,
        netns=netns,
        ips=ips,
        mtu=mtu,
        network_name=msg.network_name,
        policy_timeout=timeout_ms / 1000 if timeout_ms else None,
    )
