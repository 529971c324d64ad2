"""IP pools as IPAM sees them, read from IPPool resources."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from libcalico.ipam.keys import Network

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
DEFAULT_ALLOWED_USES = ("Workload", "Tunnel")
USE_WORKLOAD = "Workload"


@dataclass(frozen=True)
class Pool:
    name: str
    cidr: Network
    block_size: int
    disabled: bool = False
    node_selector: str = "all()"
    allowed_uses: tuple[str, ...] = DEFAULT_ALLOWED_USES
    nat_outgoing: bool = False
    # Stored for the dataplane and BGP; IPAM does not act on them.
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def version(self) -> int:
        return self.cidr.version

    @property
    def block_count(self) -> int:
        return 1 << (self.block_size - self.cidr.prefixlen)

    def block_at(self, index: int) -> Network:
        """The index-th block of the pool."""
        size = 1 << (self.cidr.max_prefixlen - self.block_size)
        base = self.cidr.network_address + index * size
        return ipaddress.ip_network(f"{base}/{self.block_size}")

    def blocks_from(self, start: int) -> Iterator[Network]:
        """Every block of the pool, beginning at `start` and wrapping around."""
        count = self.block_count
        for i in range(count):
            yield self.block_at((start + i) % count)

    def block_of(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network:
        return ipaddress.ip_network(f"{ip}/{self.block_size}", strict=False)


class PoolError(ValueError):
    """An IPPool resource IPAM cannot use; the message names the pool and field."""


def pool_from_resource(obj: dict[str, Any]) -> Pool:
    name = str(obj.get("metadata", {}).get("name", ""))
    spec = obj.get("spec") or {}
    try:
        cidr = ipaddress.ip_network(str(spec.get("cidr", "")))
    except ValueError as exc:
        raise PoolError(f"IPPool {name!r}: spec.cidr: {exc}") from None
    block_size = int(spec.get("blockSize") or DEFAULT_BLOCK_SIZE[cidr.version])
    low, high = BLOCK_SIZE_RANGE[cidr.version]
    if not low <= block_size <= high or block_size < cidr.prefixlen:
        raise PoolError(
            f"IPPool {name!r}: spec.blockSize {block_size} must be within {low}-{high} "
            f"and not larger than the pool /{cidr.prefixlen}"
        )
    uses = spec.get("allowedUses") or list(DEFAULT_ALLOWED_USES)
    return Pool(
        name=name,
        cidr=cidr,
        block_size=block_size,
        disabled=bool(spec.get("disabled", False)),
        node_selector=str(spec.get("nodeSelector") or "all()"),
        allowed_uses=tuple(str(u) for u in uses),
        nat_outgoing=bool(spec.get("natOutgoing", False)),
        ipip_mode=str(spec.get("ipipMode") or "Never"),
        vxlan_mode=str(spec.get("vxlanMode") or "Never"),
    )
