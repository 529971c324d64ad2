"""Rendering Calico's outgoing NAT for nftables and iptables (pure: no I/O).

Traffic from a pool with `natOutgoing: true` to a destination outside every pool is
masqueraded to the node's address; traffic to any pool (pods on this or another node, in this
or another pool, VTEPs) keeps its source. Felix owns a table (nftables) or a chain (iptables)
of its own for this, replaced as a whole on every change.
"""

from __future__ import annotations

from collections.abc import Sequence

NFT_TABLE = "calico-nat"
IPT_CHAIN = "cali-nat-outgoing"


def render_nft(masquerade: Sequence[str], pools: Sequence[str]) -> str:
    """One atomic nft script: the table is (re)created with the rule, or removed when no pool
    asks for NAT (`add` first, so `delete` never fails on an absent table)."""
    lines = [f"add table ip {NFT_TABLE}", f"delete table ip {NFT_TABLE}"]
    if masquerade:
        rule = (
            f"ip saddr {{ {', '.join(masquerade)} }} ip daddr != {{ {', '.join(pools)} }} "
            "masquerade fully-random"
        )
        lines += [
            f"add table ip {NFT_TABLE}",
            f"add chain ip {NFT_TABLE} postrouting "
            "{ type nat hook postrouting priority srcnat; policy accept; }",
            f"add rule ip {NFT_TABLE} postrouting {rule}",
        ]
    return "\n".join(lines) + "\n"


def render_iptables(masquerade: Sequence[str], pools: Sequence[str]) -> str:
    """An `iptables-restore --noflush` batch: declaring the chain flushes it, then its rules
    (RETURN for every pool destination, then MASQUERADE) are written anew."""
    lines = ["*nat", f":{IPT_CHAIN} - [0:0]"]
    for source in masquerade:
        lines += [f"-A {IPT_CHAIN} -s {source} -d {dest} -j RETURN" for dest in pools]
        lines.append(f"-A {IPT_CHAIN} -s {source} -j MASQUERADE --random-fully")
    return "\n".join([*lines, "COMMIT", ""])
