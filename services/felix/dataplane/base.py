"""What the policy engine needs from a dataplane driver."""

from __future__ import annotations

from typing import Protocol

from services.felix.calc.model import DataplaneState, StateDelta


class PolicyDataplane(Protocol):
    name: str

    async def start(self) -> None:
        """Make sure the kernel fails closed before the first sync (never flushes rules)."""
        ...

    async def apply(self, state: DataplaneState, delta: StateDelta) -> None:
        """Bring the changed keys of ``delta`` to their values in ``state`` (one batch)."""
        ...

    async def reconcile(self, state: DataplaneState) -> int:
        """Read the kernel, repair every difference from ``state``; returns repairs made."""
        ...

    def programmed_interfaces(self) -> frozenset[str]:
        """Interfaces whose endpoint chains and dispatch entries are in the kernel."""
        ...

    def ipset_count(self) -> int: ...

    async def close(self) -> None: ...


def make_dataplane(kind: str, netns: str | None = None) -> PolicyDataplane:
    """``nftables`` (default) or ``iptables`` / ``iptables-legacy``, inside ``netns`` if given."""
    from services.felix.dataplane.netns import netns_path

    path = netns_path(netns)
    if kind in ("", "nftables", "nft"):
        from services.felix.dataplane.nft_dataplane import NftablesDataplane

        return NftablesDataplane(path)
    if kind in ("iptables", "iptables-nft", "iptables-legacy"):
        from services.felix.dataplane.ipt_dataplane import IptablesDataplane

        dataplane: PolicyDataplane = IptablesDataplane(path, legacy=kind == "iptables-legacy")
        return dataplane
    raise ValueError(f"unknown dataplane {kind!r}: expected nftables or iptables")
