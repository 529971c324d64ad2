"""The VXLAN manager's pure parts: the view of nodes, pools and blocks it keeps from the
syncer, the intent it computes from them, and the VTEP MAC (no kernel, no datastore)."""

from __future__ import annotations

import json
from typing import Any

from libcalico.datastore.keys import GROUP_CALICO, ipam_block_prefix, resource_prefix
from libcalico.syncer import FELIX_PREFIXES
from libcalico.syncer.api import Delete, InSync, Update
from services.felix.vxlan.intent import DEVICE, RouteIntent, compute, vtep_pools
from services.felix.vxlan.tunnel_addr import handle_of, vtep_mac
from services.felix.vxlan.view import VxlanView

NODES = resource_prefix(GROUP_CALICO, "nodes")
POOLS = resource_prefix(GROUP_CALICO, "ippools")
BLOCKS = ipam_block_prefix(4)


def _node(name: str, address: str, vtep: str | None, prefix: int = 24) -> Update:
    spec: dict[str, Any] = {"bgp": {"ipv4Address": f"{address}/{prefix}"}}
    if vtep:
        spec |= {"ipv4VXLANTunnelAddr": vtep, "vxlanTunnelMACAddr": vtep_mac(name).upper()}
    body = {"metadata": {"name": name}, "spec": spec}
    return Update(NODES + name, json.dumps(body).encode(), 1)


def _pool(
    name: str,
    cidr: str,
    vxlan: str = "Always",
    disabled: bool = False,
    uses: list[str] | None = None,
) -> Update:
    spec: dict[str, Any] = {"cidr": cidr, "vxlanMode": vxlan, "disabled": disabled}
    if uses is not None:
        spec["allowedUses"] = uses
    return Update(POOLS + name, json.dumps({"metadata": {"name": name}, "spec": spec}).encode(), 1)


def _block(cidr: str, node: str | None) -> Update:
    body = {"cidr": cidr, "affinity": f"host:{node}" if node else None}
    return Update(BLOCKS + cidr.replace("/", "-"), json.dumps(body).encode(), 1)


def _vx(vtep: str) -> RouteIntent:
    return RouteIntent(vtep, DEVICE)


def _cluster() -> VxlanView:
    view = VxlanView()
    view.apply(
        [
            _pool("p", "10.65.0.0/16"),
            _node("node-1", "10.66.0.11", "10.65.1.0"),
            _node("node-2", "10.66.0.12", "10.65.2.0"),
            _node("node-3", "10.66.0.13", None),  # its VTEP is not published yet
            _block("10.65.1.0/26", "node-1"),
            _block("10.65.2.0/26", "node-2"),
            _block("10.65.2.64/26", "node-2"),
            _block("10.65.3.0/26", "node-3"),
            _block("10.65.4.0/26", None),  # no affinity: routed nowhere
            InSync(),
        ]
    )
    return view


def test_felix_syncer_carries_the_overlay_inputs() -> None:
    assert {NODES, POOLS, BLOCKS} <= set(FELIX_PREFIXES)


def test_routes_neighbours_and_fdb_for_remote_blocks_with_a_vtep() -> None:
    intent = compute(_cluster(), "node-1")
    assert intent.device is not None
    assert (intent.device.local, intent.device.vtep_ip) == ("10.66.0.11", "10.65.1.0")
    assert intent.device.vtep_mac == vtep_mac("node-1")
    # Own block: local; node-3: no VTEP yet; the unaffine block: nobody's.
    assert intent.routes == {"10.65.2.0/26": _vx("10.65.2.0"), "10.65.2.64/26": _vx("10.65.2.0")}
    assert intent.neighbours == {"10.65.2.0": vtep_mac("node-2")}
    assert intent.fdb == {vtep_mac("node-2"): "10.66.0.12"}


def test_nothing_without_a_vxlan_pool() -> None:
    view = _cluster()
    view.apply([_pool("p", "10.65.0.0/16", vxlan="Never")])
    intent = compute(view, "node-1")
    assert intent.device is None and not intent.routes
    view.apply([_pool("p", "10.65.0.0/16", disabled=True)])
    assert compute(view, "node-1").device is None


def test_blocks_outside_vxlan_pools_are_not_tunnelled() -> None:
    view = _cluster()
    view.apply([_pool("p", "10.65.2.0/25"), _pool("plain", "10.65.0.0/16", vxlan="Never")])
    assert set(compute(view, "node-1").routes) == {"10.65.2.0/26", "10.65.2.64/26"}
    view.apply([Delete(POOLS + "p")])
    assert compute(view, "node-1").routes == {}


def test_a_deleted_node_takes_its_routes_neighbour_and_fdb_entry() -> None:
    view = _cluster()
    assert view.apply([Delete(NODES + "node-2")])
    intent = compute(view, "node-1")
    assert intent.device is not None
    assert intent.routes == {} and intent.neighbours == {} and intent.fdb == {}


def test_no_device_before_this_nodes_vtep_is_published() -> None:
    assert compute(_cluster(), "node-3").device is None


def test_an_unparsable_value_counts_as_absent() -> None:
    view = _cluster()
    assert view.apply([Update(BLOCKS + "10.65.2.0-26", b'{"cidr": "bogus"}', 2)])
    assert compute(view, "node-1").routes == {"10.65.2.64/26": _vx("10.65.2.0")}
    assert view.apply([Update(NODES + "node-2", b"{not json", 2)])
    assert "node-2" not in view.nodes
    assert compute(view, "node-1").routes == {}


def test_unrelated_keys_change_nothing() -> None:
    view = _cluster()
    other = resource_prefix(GROUP_CALICO, "networkpolicies") + "default/x"
    assert not view.apply([Update(other, b"{}", 3)])


def test_vtep_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = vtep_mac("node-1")
    assert mac == vtep_mac("node-1") != vtep_mac("node-2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01
    assert handle_of("node-1") == "vxlan-tunnel-addr-node-1"


def _cross_subnet() -> VxlanView:
    """node-1 and node-2 share 10.66.0.0/24; node-4 is in another subnet."""
    view = _cluster()
    view.apply(
        [
            _pool("p", "10.65.0.0/16", vxlan="CrossSubnet"),
            _node("node-4", "10.66.1.14", "10.65.5.0"),
            _block("10.65.5.0/26", "node-4"),
        ]
    )
    return view


def test_cross_subnet_routes_same_subnet_directly_and_tunnels_the_rest() -> None:
    intent = compute(_cross_subnet(), "node-1")
    assert intent.device is not None and intent.local == "10.66.0.11"
    assert intent.routes == {
        # Same subnet: plain routes via the node's address on the uplink, no encapsulation;
        # node-3 needs no VTEP for that.
        "10.65.2.0/26": RouteIntent("10.66.0.12", None),
        "10.65.2.64/26": RouteIntent("10.66.0.12", None),
        "10.65.3.0/26": RouteIntent("10.66.0.13", None),
        # Another subnet: VXLAN, with the neighbour and FDB entry only for that node.
        "10.65.5.0/26": _vx("10.65.5.0"),
    }
    assert intent.neighbours == {"10.65.5.0": vtep_mac("node-4")}
    assert intent.fdb == {vtep_mac("node-4"): "10.66.1.14"}


def test_cross_subnet_uses_this_nodes_prefix_to_decide() -> None:
    view = _cross_subnet()
    # With a /16 on node-1, node-4 (10.66.1.14) is in the same subnet too.
    view.apply([_node("node-1", "10.66.0.11", "10.65.1.0", prefix=16)])
    intent = compute(view, "node-1")
    assert intent.routes["10.65.5.0/26"] == RouteIntent("10.66.1.14", None)
    assert intent.neighbours == {} and intent.fdb == {}


def test_cross_subnet_direct_routes_need_no_local_vtep() -> None:
    view = _cross_subnet()
    view.apply([_node("node-1", "10.66.0.11", None)])
    intent = compute(view, "node-1")
    assert intent.device is None
    # Nothing can be tunnelled without this node's VTEP; direct routes need none.
    assert set(intent.routes) == {"10.65.2.0/26", "10.65.2.64/26", "10.65.3.0/26"}


def test_always_pools_tunnel_even_within_the_subnet() -> None:
    view = _cross_subnet()
    view.apply([_pool("always", "10.65.2.0/24")])  # more specific than the CrossSubnet pool
    intent = compute(view, "node-1")
    assert intent.routes["10.65.2.0/26"] == _vx("10.65.2.0")
    assert intent.routes["10.65.3.0/26"] == RouteIntent("10.66.0.13", None)


def test_the_vtep_comes_only_from_pools_allowing_tunnel() -> None:
    view = _cluster()
    assert vtep_pools(view) == (("10.65.0.0/16",), "")  # no allowedUses: Workload + Tunnel
    view.apply(
        [
            _pool("p", "10.65.0.0/16", uses=["Workload"]),
            _pool("t", "10.67.0.0/24", vxlan="CrossSubnet", uses=["Tunnel"]),
            _pool("never", "10.68.0.0/24", vxlan="Never", uses=["Tunnel"]),  # not VXLAN
        ]
    )
    assert vtep_pools(view) == (("10.67.0.0/24",), "")
    view.apply([Delete(POOLS + "t")])
    pools, problem = vtep_pools(view)
    assert pools == () and "allowedUses" in problem and "Tunnel" in problem
    view.apply([Delete(POOLS + "p")])
    assert vtep_pools(view) == ((), "")  # no VXLAN pool at all: nothing to explain
