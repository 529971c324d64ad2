"""The VXLAN manager's pure parts: the view of nodes, pools and blocks it keeps from the
syncer, the intent it computes from them, and the VTEP MAC (no kernel, no datastore)."""

from __future__ import annotations

import json
from typing import Any

from libcalico.datastore.keys import GROUP_CALICO, ipam_block_prefix, resource_prefix
from libcalico.syncer import FELIX_PREFIXES
from libcalico.syncer.api import Delete, InSync, Update
from services.felix.vxlan.intent import (
    DEVICE,
    IPIP_DEVICE,
    IpipDeviceIntent,
    RouteIntent,
    compute,
    tunnel_pools,
    vtep_pools,
)
from services.felix.vxlan.tunnel_addr import IPIP, VXLAN, vtep_mac
from services.felix.vxlan.view import VxlanView

NODES = resource_prefix(GROUP_CALICO, "nodes")
POOLS = resource_prefix(GROUP_CALICO, "ippools")
BLOCKS = ipam_block_prefix(4)
CONFIGS = resource_prefix(GROUP_CALICO, "felixconfigurations")
WEPS = resource_prefix(GROUP_CALICO, "workloadendpoints")


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


def _wep(name: str, node: str, *nets: str) -> Update:
    body = {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"node": node, "ipNetworks": list(nets)},
    }
    return Update(f"{WEPS}ns/{name}", json.dumps(body).encode(), 1)


def test_a_borrowed_address_gets_a_host_route_to_the_node_its_pod_runs_on() -> None:
    view = _cluster()
    view.apply(
        [
            # node-2's pod took an address from node-1's block, and node-3's one from node-2's.
            _wep("borrower", "node-2", "10.65.1.7/32", "fd00::7/128"),
            _wep("other", "node-3", "10.65.2.9/32"),
            # An address in its own node's block, and one in no block: no extra route.
            _wep("plain", "node-2", "10.65.2.70/32"),
            _wep("stray", "node-2", "10.65.9.9/32"),
            _wep("mine", "node-1", "10.65.2.8/32"),  # a local pod: its veth route covers it
        ]
    )
    intent = compute(view, "node-1")
    assert intent.routes["10.65.1.7/32"] == _vx("10.65.2.0")
    assert "10.65.2.9/32" not in intent.routes  # node-3 publishes no VTEP yet
    assert not {"10.65.2.70/32", "10.65.9.9/32", "10.65.2.8/32"} & set(intent.routes)
    # On node-3 the pod borrowed from node-2's block is local; node-2's borrower is routed.
    view.apply([_node("node-3", "10.66.0.13", "10.65.3.0")])
    on_3 = compute(view, "node-3")
    assert on_3.routes["10.65.1.7/32"] == _vx("10.65.2.0")
    assert "10.65.2.9/32" not in on_3.routes
    # CrossSubnet: a borrower on the same subnet is reached directly, like its node's blocks.
    view.apply([_pool("p", "10.65.0.0/16", vxlan="CrossSubnet")])
    assert compute(view, "node-1").routes["10.65.1.7/32"] == RouteIntent("10.66.0.12", None)
    # The pod goes: so does its route.
    view.apply([Delete(f"{WEPS}ns/borrower", 2)])
    assert "10.65.1.7/32" not in compute(view, "node-1").routes


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
    assert VXLAN.handle("node-1") == "vxlan-tunnel-addr-node-1"
    assert IPIP.handle("node-1") == "ipip-tunnel-addr-node-1"
    assert IPIP.fields("node-1", "10.65.1.1") == {"ipv4IPIPTunnelAddr": "10.65.1.1"}
    assert VXLAN.fields("node-1", None) == {}


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


def _ipip_cluster(mode: str = "Always") -> VxlanView:
    """An IPIP pool; node-1, node-2 share 10.66.0.0/24, node-4 is elsewhere. Node-3 has no
    tunnel address: IPIP routes go via node addresses, so it still gets routes."""
    view = VxlanView()
    body = {"metadata": {"name": "ip"}, "spec": {"cidr": "10.70.0.0/16", "ipipMode": mode}}
    nodes = [("node-1", "10.66.0.11"), ("node-2", "10.66.0.12"), ("node-3", "10.66.0.13")]
    nodes += [("node-4", "10.66.1.14")]
    updates: list[Update | InSync] = [
        Update(POOLS + "ip", json.dumps(body).encode(), 1),
        InSync(),
    ]
    for i, (name, address) in enumerate(nodes, start=1):
        spec: dict[str, Any] = {"bgp": {"ipv4Address": f"{address}/24"}}
        if name != "node-3":
            spec["ipv4IPIPTunnelAddr"] = f"10.70.{i}.0"
        node = {"metadata": {"name": name}, "spec": spec}
        updates.append(Update(NODES + name, json.dumps(node).encode(), 1))
        updates.append(_block(f"10.70.{i}.0/26", name))
    view.apply(updates)
    return view


def test_ipip_device_and_onlink_routes_via_node_addresses() -> None:
    intent = compute(_ipip_cluster(), "node-1", detected_mtu=1500)
    assert intent.device is None  # no VXLAN pool
    assert intent.ipip == IpipDeviceIntent("10.70.1.0", 1480)  # detected - 20
    assert intent.routes == {
        "10.70.2.0/26": RouteIntent("10.66.0.12", IPIP_DEVICE),
        "10.70.3.0/26": RouteIntent("10.66.0.13", IPIP_DEVICE),
        "10.70.4.0/26": RouteIntent("10.66.1.14", IPIP_DEVICE),
    }
    assert intent.neighbours == {} and intent.fdb == {}
    assert intent.pod_mtu == 1480


def test_ipip_cross_subnet_routes_same_subnet_directly() -> None:
    intent = compute(_ipip_cluster("CrossSubnet"), "node-1")
    assert intent.routes == {
        "10.70.2.0/26": RouteIntent("10.66.0.12", None),
        "10.70.3.0/26": RouteIntent("10.66.0.13", None),
        "10.70.4.0/26": RouteIntent("10.66.1.14", IPIP_DEVICE),
    }


def test_ipip_mtu_from_felix_configuration_and_the_smallest_encapsulation_wins() -> None:
    view = _ipip_cluster()
    config = {"metadata": {"name": "default"}, "spec": {"ipipMTU": 1400}}
    view.apply([Update(CONFIGS + "default", json.dumps(config).encode(), 1)])
    intent = compute(view, "node-1", detected_mtu=1500)
    assert intent.ipip is not None and intent.ipip.mtu == 1400 and intent.pod_mtu == 1400
    view.apply([_pool("vx", "10.65.0.0/16")])  # VXLAN too: 1450 > 1400
    assert compute(view, "node-1", detected_mtu=1500).pod_mtu == 1400
    config["spec"] = {}
    view.apply([Update(CONFIGS + "default", json.dumps(config).encode(), 2)])
    assert compute(view, "node-1", detected_mtu=1500).pod_mtu == 1450  # VXLAN's 50 > IPIP's 20


def test_without_ipip_in_the_kernel_ipip_pools_get_nothing() -> None:
    intent = compute(_ipip_cluster(), "node-1", detected_mtu=1500, ipip_supported=False)
    assert intent.ipip is None and intent.routes == {} and intent.pod_mtu == 1500


def test_ipip_pools_give_no_tunnel_address_without_tunnel_use() -> None:
    view = _ipip_cluster()
    assert tunnel_pools(view.ipip_pools(), "IPIP") == (("10.70.0.0/16",), "")
    body = {
        "metadata": {"name": "ip"},
        "spec": {"cidr": "10.70.0.0/16", "ipipMode": "Always", "allowedUses": ["Workload"]},
    }
    view.apply([Update(POOLS + "ip", json.dumps(body).encode(), 2)])
    pools, problem = tunnel_pools(view.ipip_pools(), "IPIP")
    assert pools == () and "no IPIP pool allows Tunnel" in problem
