"""Datastore objects for the BGP tests, as syncer updates, and a view built from them."""

from __future__ import annotations

from typing import Any

from libcalico.syncer.api import InSync, SyncerUpdate, Update
from services.bgp.intent import BGPIntent, PeerIntent
from services.bgp.synthetic import resource_update
from services.bgp.view import ClusterView


def node(
    name: str, address: str | None, labels: dict[str, str] | None = None, **bgp: Any
) -> Update:
    spec: dict[str, Any] = {}
    if address is not None or bgp:
        spec["bgp"] = {**({"ipv4Address": address} if address else {}), **bgp}
    meta = {"labels": labels} if labels else {}
    return resource_update("nodes", "Node", name, spec, **meta)


def pool(name: str, cidr: str, **spec: Any) -> Update:
    return resource_update("ippools", "IPPool", name, {"cidr": cidr, **spec})


def config(name: str, **spec: Any) -> Update:
    return resource_update("bgpconfigurations", "BGPConfiguration", name, spec)


def peer(name: str, **spec: Any) -> Update:
    return resource_update("bgppeers", "BGPPeer", name, spec)


def bgp_filter(name: str, **spec: Any) -> Update:
    return resource_update("bgpfilters", "BGPFilter", name, spec)


def cluster(*updates: SyncerUpdate | list[Update]) -> ClusterView:
    view = ClusterView()
    flat: list[SyncerUpdate] = []
    for u in updates:
        flat.extend(u if isinstance(u, list) else [u])
    view.apply([*flat, InSync()])
    assert view.in_sync
    return view


THREE_NODES = [
    node("n1", "10.66.0.11/24"),
    node("n2", "10.66.0.12/24"),
    node("n3", "10.66.0.13/24"),
]


def peers_by_protocol(intent: BGPIntent) -> dict[str, PeerIntent]:
    return {p.protocol: p for p in intent.peers}
