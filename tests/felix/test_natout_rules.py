"""Outgoing NAT rendering: what nftables and iptables get for the pools' natOutgoing."""

from __future__ import annotations

import json

from libcalico.datastore.keys import GROUP_CALICO, resource_prefix
from libcalico.syncer.api import InSync, Update
from services.felix.natout.manager import NatOutgoingManager
from services.felix.natout.rules import render_iptables, render_nft
from services.felix.vxlan.view import VxlanView

POOLS = resource_prefix(GROUP_CALICO, "ippools")


def test_nft_masquerades_nat_pools_to_outside_every_pool() -> None:
    script = render_nft(["10.65.0.0/16"], ["10.65.0.0/16", "10.70.0.0/16"])
    assert script.splitlines()[:2] == ["add table ip calico-nat", "delete table ip calico-nat"]
    assert (
        "add rule ip calico-nat postrouting ip saddr { 10.65.0.0/16 } "
        "ip daddr != { 10.65.0.0/16, 10.70.0.0/16 } masquerade fully-random"
    ) in script
    assert "type nat hook postrouting priority srcnat" in script


def test_nft_without_nat_pools_only_removes_the_table() -> None:
    assert render_nft([], ["10.65.0.0/16"]).splitlines() == [
        "add table ip calico-nat",
        "delete table ip calico-nat",
    ]


def test_iptables_returns_for_pool_destinations_then_masquerades() -> None:
    batch = render_iptables(["10.65.0.0/16"], ["10.65.0.0/16", "10.70.0.0/16"]).splitlines()
    assert batch == [
        "*nat",
        ":cali-nat-outgoing - [0:0]",
        "-A cali-nat-outgoing -s 10.65.0.0/16 -d 10.65.0.0/16 -j RETURN",
        "-A cali-nat-outgoing -s 10.65.0.0/16 -d 10.70.0.0/16 -j RETURN",
        "-A cali-nat-outgoing -s 10.65.0.0/16 -j MASQUERADE --random-fully",
        "COMMIT",
    ]


def _pool(name: str, cidr: str, nat: bool, disabled: bool = False) -> Update:
    spec = {"cidr": cidr, "natOutgoing": nat, "disabled": disabled}
    return Update(POOLS + name, json.dumps({"metadata": {"name": name}, "spec": spec}).encode(), 1)


async def test_manager_masquerades_enabled_nat_pools_only() -> None:
    view = VxlanView()
    manager = NatOutgoingManager(view, "nftables", 30.0)
    view.apply(
        [
            _pool("a", "10.65.0.0/16", True),
            _pool("b", "10.70.0.0/16", False),
            _pool("c", "10.80.0.0/16", True, disabled=True),
            _pool("v6", "fd00::/48", True),
            InSync(),
        ]
    )
    assert manager.wanted() == (["10.65.0.0/16"], ["10.65.0.0/16", "10.70.0.0/16", "10.80.0.0/16"])
