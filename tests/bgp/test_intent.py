"""build_intent(): Calico's BGP semantics from datastore objects, without BIRD or a datastore."""

from __future__ import annotations

import json

from libcalico.datastore.keys import ipam_affinity_key
from libcalico.syncer.api import Delete, Update
from services.bgp.intent import (
    NEXT_HOP_AUTO,
    NEXT_HOP_KEEP,
    NEXT_HOP_SELF,
    TYPE_GLOBAL,
    TYPE_MESH,
    TYPE_NODE,
    TYPE_RR,
    TYPE_RR_CLIENT,
    build_intent,
)
from services.bgp.synthetic import block_updates
from tests.bgp.objects import (
    THREE_NODES,
    bgp_filter,
    cluster,
    config,
    node,
    peer,
    peers_by_protocol,
    pool,
)


def test_full_mesh_by_default_with_calico_names_and_defaults() -> None:
    intent = build_intent(cluster(*THREE_NODES), "n1")
    assert intent.router_id == "10.66.0.11"
    assert intent.as_number == 64512
    assert intent.listen_port == 179
    peers = peers_by_protocol(intent)
    assert sorted(peers) == ["Mesh_10_66_0_12", "Mesh_10_66_0_13"]
    mesh = peers["Mesh_10_66_0_12"]
    assert (mesh.address, mesh.port, mesh.as_number, mesh.type) == (
        "10.66.0.12",
        179,
        64512,
        TYPE_MESH,
    )
    assert mesh.node == "n2" and not mesh.ebgp and mesh.next_hop == NEXT_HOP_SELF
    assert not mesh.rr_client and not mesh.reflect


def test_mesh_off_and_nodes_without_address_are_not_peers() -> None:
    view = cluster(
        *THREE_NODES,
        node("n4", None, asNumber=65001),
        config("default", nodeToNodeMeshEnabled=False),
    )
    assert build_intent(view, "n1").peers == ()
    view = cluster(*THREE_NODES, node("n4", None, asNumber=65001))
    assert "Mesh_10_66_0_14" not in peers_by_protocol(build_intent(view, "n1"))


def test_as_numbers_node_then_configuration_then_default() -> None:
    view = cluster(
        node("n1", "10.66.0.11/24", asNumber=65010),
        node("n2", "10.66.0.12/24"),
        config("default", asNumber=65100),
    )
    me = build_intent(view, "n1")
    assert me.as_number == 65010
    assert peers_by_protocol(me)["Mesh_10_66_0_12"].as_number == 65100
    assert build_intent(view, "n2").as_number == 65100
    assert peers_by_protocol(build_intent(view, "n2"))["Mesh_10_66_0_11"].ebgp


def test_per_node_configuration_overrides_default() -> None:
    view = cluster(
        *THREE_NODES,
        config("default", logSeverityScreen="Info", listenPort=179),
        config(
            "node.n1",
            logSeverityScreen="Debug",
            listenPort=1790,
            ignoredInterfaces=["docker*", 'bad"x'],
        ),
    )
    n1 = build_intent(view, "n1")
    assert n1.debug and n1.listen_port == 1790
    assert n1.ignored_interfaces == ("docker*",)
    assert any("bad" in note for note in n1.notes)
    n2 = build_intent(view, "n2")
    assert not n2.debug and n2.listen_port == 179
    # n2 reaches n1 on n1's own listen port.
    assert peers_by_protocol(n2)["Mesh_10_66_0_11"].port == 1790


def test_global_node_and_node_selector_peers() -> None:
    view = cluster(
        node("n1", "10.66.0.11/24", {"rack": "a"}),
        node("n2", "10.66.0.12/24", {"rack": "b"}),
        config("default", nodeToNodeMeshEnabled=False),
        peer("tor", peerIP="10.66.0.1", asNumber=65000),
        peer("tor-port", peerIP="10.66.0.2:1790", asNumber=65000),
        peer("only-n1", node="n1", peerIP="10.66.0.3", asNumber=64512),
        peer("rack-b", nodeSelector="rack == 'b'", peerIP="10.66.0.4", asNumber=65004),
    )
    n1 = peers_by_protocol(build_intent(view, "n1"))
    assert sorted(n1) == ["Global_10_66_0_1", "Global_10_66_0_2_port_1790", "Node_10_66_0_3"]
    tor = n1["Global_10_66_0_1"]
    assert (tor.type, tor.as_number, tor.ebgp, tor.node) == (TYPE_GLOBAL, 65000, True, None)
    assert n1["Global_10_66_0_2_port_1790"].port == 1790
    only = n1["Node_10_66_0_3"]
    assert only.type == TYPE_NODE and not only.ebgp
    n2 = peers_by_protocol(build_intent(view, "n2"))
    assert sorted(n2) == ["Global_10_66_0_1", "Global_10_66_0_2_port_1790", "Node_10_66_0_4"]


def test_peer_selector_picks_matching_nodes_never_self() -> None:
    view = cluster(
        node("n1", "10.66.0.11/24", {"edge": "true"}),
        node("n2", "10.66.0.12/24", {"edge": "true"}, asNumber=65002),
        node("n3", "10.66.0.13/24"),
        config("default", nodeToNodeMeshEnabled=False),
        peer("edges", nodeSelector="all()", peerSelector="edge == 'true'"),
    )
    n1 = peers_by_protocol(build_intent(view, "n1"))
    # n2 forward (selected edge); n3 by the reverse peering (n3 peers with n1 forward).
    assert sorted(n1) == ["Node_10_66_0_12", "Node_10_66_0_13"]
    assert n1["Node_10_66_0_12"].as_number == 65002 and n1["Node_10_66_0_12"].ebgp
    n3 = peers_by_protocol(build_intent(view, "n3"))
    assert sorted(n3) == ["Node_10_66_0_11", "Node_10_66_0_12"]


def test_route_reflector_as_the_lab_configures_it() -> None:
    view = cluster(
        node(
            "n1", "10.66.0.11/24", {"route-reflector": "true"}, routeReflectorClusterID="244.0.0.1"
        ),
        node("n2", "10.66.0.12/24"),
        node("n3", "10.66.0.13/24"),
        pool("default", "10.200.0.0/16"),
        config("default", nodeToNodeMeshEnabled=False),
        peer(
            "peer-with-route-reflectors",
            nodeSelector="all()",
            peerSelector="route-reflector == 'true'",
        ),
    )
    rr = build_intent(view, "n1")
    assert rr.rr_cluster_id == "244.0.0.1"
    assert rr.reflect_pools == ("10.200.0.0/16",)
    # Each client applies the BGPPeer forward: a session to the route reflector.
    clients = peers_by_protocol(build_intent(view, "n2"))
    assert sorted(clients) == ["Node_10_66_0_11"]
    to_rr = clients["Node_10_66_0_11"]
    assert to_rr.type == TYPE_RR and not to_rr.rr_client and not to_rr.reflect
    assert to_rr.next_hop == NEXT_HOP_SELF
    # The reflector is selected by the peerSelector: the reverse peering (Calico's
    # reversePeering Auto) gives it a session with every node the BGPPeer applies to.
    rr_peers = peers_by_protocol(rr)
    assert sorted(rr_peers) == ["Node_10_66_0_12", "Node_10_66_0_13"]
    for client in rr_peers.values():
        assert client.type == TYPE_RR_CLIENT and client.rr_client and client.reflect
        assert client.next_hop == NEXT_HOP_AUTO  # reflected routes keep their next hop


def test_reverse_peering_manual_is_one_sided() -> None:
    view = cluster(
        node("n1", "10.66.0.11/24", {"edge": "true"}),
        node("n2", "10.66.0.12/24"),
        config("default", nodeToNodeMeshEnabled=False),
        peer("edges", node="n2", peerSelector="edge == 'true'", reversePeering="Manual"),
    )
    assert sorted(peers_by_protocol(build_intent(view, "n2"))) == ["Node_10_66_0_11"]
    assert build_intent(view, "n1").peers == ()


def test_route_reflector_makes_clients_of_nodes_it_peers() -> None:
    view = cluster(
        node(
            "n1", "10.66.0.11/24", {"route-reflector": "true"}, routeReflectorClusterID="244.0.0.1"
        ),
        node("n2", "10.66.0.12/24"),
        node(
            "n3", "10.66.0.13/24", {"route-reflector": "true"}, routeReflectorClusterID="244.0.0.1"
        ),
        node(
            "n4", "10.66.0.14/24", {"route-reflector": "true"}, routeReflectorClusterID="244.0.0.2"
        ),
        pool("default", "10.200.0.0/16"),
        pool("quiet", "10.201.0.0/16", disableBGPExport=True),
        peer("rr-mesh", nodeSelector="route-reflector == 'true'", peerSelector="all()"),
    )
    rr = build_intent(view, "n1")
    peers = peers_by_protocol(rr)
    # Mesh enabled, but a route reflector takes no part in it (Calico).
    assert sorted(peers) == ["Node_10_66_0_12", "Node_10_66_0_13", "Node_10_66_0_14"]
    client = peers["Node_10_66_0_12"]
    assert client.type == TYPE_RR_CLIENT and client.rr_client and client.reflect
    assert client.next_hop == NEXT_HOP_AUTO  # reflected routes keep their next hop
    same_cluster = peers["Node_10_66_0_13"]
    assert not same_cluster.rr_client and same_cluster.reflect and same_cluster.type == TYPE_NODE
    other_cluster = peers["Node_10_66_0_14"]
    assert other_cluster.rr_client  # another cluster id: a client of ours
    assert rr.reflect_pools == ("10.200.0.0/16",)
    # A plain node meshes with other plain nodes only (none here), and peers with the route
    # reflectors through the reverse side of the BGPPeer.
    n2 = peers_by_protocol(build_intent(view, "n2"))
    assert sorted(n2) == ["Node_10_66_0_11", "Node_10_66_0_13", "Node_10_66_0_14"]
    assert all(p.type == TYPE_RR and not p.rr_client for p in n2.values())


def test_peer_options_next_hop_restart_time_and_filters() -> None:
    view = cluster(
        *THREE_NODES,
        bgp_filter(
            "no-default",
            importV4=[{"action": "Reject", "cidr": "0.0.0.0/0", "matchOperator": "Equal"}],
        ),
        bgp_filter("unused", exportV4=[{"action": "Reject"}]),
        peer("tor", peerIP="10.66.0.1", asNumber=65000, keepOriginalNextHop=True,
             maxRestartTime="2m", filters=["no-default", "missing"]),
        config("default", nodeMeshMaxRestartTime="90s"),
    )  # fmt: skip
    intent = build_intent(view, "n1")
    peers = peers_by_protocol(intent)
    tor = peers["Global_10_66_0_1"]
    assert tor.next_hop == NEXT_HOP_KEEP and tor.restart_time == 120
    assert tor.filters == ("no-default",)
    assert peers["Mesh_10_66_0_12"].restart_time == 90
    assert [f.name for f in intent.filters] == ["no-default"]  # only referenced filters
    rule = intent.filters[0].import_v4[0]
    assert (rule.action, rule.cidr, rule.operator) == ("Reject", "0.0.0.0/0", "Equal")
    assert any("missing" in note for note in intent.notes)


def test_duplicate_peers_first_definition_wins_node_specific_before_global() -> None:
    view = cluster(
        *THREE_NODES,
        peer("a-global", peerIP="10.66.0.12", asNumber=64512),
        peer("b-node", node="n1", peerIP="10.66.0.13", asNumber=64512),
    )
    peers = peers_by_protocol(build_intent(view, "n1"))
    # The mesh defines 10.66.0.12 and .13 first; nothing is rendered twice.
    assert sorted(peers) == ["Mesh_10_66_0_12", "Mesh_10_66_0_13"]


def test_own_blocks_need_affinity_and_confirmed_state() -> None:
    confirmed = block_updates("10.200.0.0/26", "n1")
    pending = block_updates("10.200.0.64/26", "n1")
    pending[1] = Update(pending[1].key, json.dumps({"state": "pending"}).encode(), 1)
    no_affinity = block_updates("10.200.0.128/26", "n1")[:1]
    other = block_updates("10.200.1.0/26", "n2")
    view = cluster(
        *THREE_NODES, pool("default", "10.200.0.0/16"), confirmed, pending, no_affinity, other
    )
    intent = build_intent(view, "n1")
    assert intent.blocks == ("10.200.0.0/26",)
    assert intent.advertised == ("10.200.0.0/26",)
    view.apply([Delete(ipam_affinity_key("n1", "10.200.0.0/26"))])
    assert build_intent(view, "n1").blocks == ()


def test_borrowed_addresses_are_host_routes_of_the_borrower() -> None:
    view = cluster(
        *THREE_NODES,
        pool("default", "10.200.0.0/16"),
        block_updates("10.200.1.0/26", "n2", {1: "n2", 5: "n1", 6: "n1", 7: "n3"}),
    )
    n1 = build_intent(view, "n1")
    assert n1.borrowed == ("10.200.1.5/32", "10.200.1.6/32")
    assert n1.blocks == ()
    assert build_intent(view, "n3").borrowed == ("10.200.1.7/32",)
    n2 = build_intent(view, "n2")
    assert n2.blocks == ("10.200.1.0/26",) and n2.borrowed == ()


def test_disabled_and_unexported_pools_are_never_advertised() -> None:
    view = cluster(
        *THREE_NODES,
        pool("on", "10.200.0.0/16"),
        pool("off", "10.201.0.0/16", disabled=True),
        pool("quiet", "10.202.0.0/16", disableBGPExport=True),
        block_updates("10.200.0.0/26", "n1"),
        block_updates("10.201.0.0/26", "n1"),
        block_updates("10.202.0.0/26", "n1"),
        block_updates("10.201.1.0/26", "n2", {3: "n1"}),
        block_updates("10.202.1.0/26", "n2", {3: "n1"}),
        block_updates("10.200.1.0/26", "n2", {3: "n1"}),
    )
    intent = build_intent(view, "n1")
    assert intent.blocks == ("10.200.0.0/26",)
    assert intent.unadvertised_blocks == ("10.201.0.0/26", "10.202.0.0/26")
    assert intent.own_blocks == ("10.200.0.0/26", "10.201.0.0/26", "10.202.0.0/26")
    assert intent.borrowed == ("10.200.1.3/32",)
    assert intent.advertised == ("10.200.0.0/26", "10.200.1.3/32")
    assert intent.reflect_pools == ("10.200.0.0/16",)


def test_encapsulated_pools_are_advertised_but_left_to_felix_in_the_kernel() -> None:
    view = cluster(
        *THREE_NODES,
        pool("plain", "10.200.0.0/16"),
        pool("vx", "10.210.0.0/16", vxlanMode="Always"),
        pool("vx-cross", "10.211.0.0/16", vxlanMode="CrossSubnet"),
        pool("ipip", "10.212.0.0/16", ipipMode="Always"),
        pool("vx-never", "10.213.0.0/16", vxlanMode="Never", ipipMode="Never"),
        pool("vx-v6", "fd00:10::/48", vxlanMode="Always"),
        block_updates("10.210.0.0/26", "n1"),
        block_updates("10.210.1.0/26", "n2", {5: "n1"}),
    )
    assert view.pools["vx"].vxlan_mode == "Always" and view.pools["ipip"].ipip_mode == "Always"
    assert view.pools["plain"].vxlan_mode == view.pools["plain"].ipip_mode == "Never"
    intent = build_intent(view, "n1")
    # Felix routes these pools; IPv6 is not rendered (IPv4 only), "Never" is BIRD's.
    assert intent.felix_routed_pools == ("10.210.0.0/16", "10.211.0.0/16", "10.212.0.0/16")
    # Still advertised and reflected like any other pool: peers and ToRs learn the blocks.
    assert intent.blocks == ("10.210.0.0/26",)
    assert intent.borrowed == ("10.210.1.5/32",)
    assert "10.210.0.0/16" in intent.reflect_pools


def test_pool_mode_change_changes_the_intent() -> None:
    before = build_intent(cluster(*THREE_NODES, pool("p", "10.210.0.0/16")), "n1")
    after = build_intent(
        cluster(*THREE_NODES, pool("p", "10.210.0.0/16", vxlanMode="CrossSubnet")), "n1"
    )
    assert before.felix_routed_pools == () and after.felix_routed_pools == ("10.210.0.0/16",)
    assert before != after


def test_service_prefixes_and_communities() -> None:
    view = cluster(
        *THREE_NODES,
        config(
            "default",
            serviceClusterIPs=[{"cidr": "10.96.0.0/12"}],
            serviceExternalIPs=[{"cidr": "192.0.2.0/24"}, {"cidr": "fd00::/64"}],
            serviceLoadBalancerIPs=[{"cidr": "198.51.100.7/32"}],
            communities=[{"name": "rack", "value": "65000:100"}],
            prefixAdvertisements=[
                {"cidr": "10.96.0.0/12", "communities": ["rack", "1:2:3"]},
                {"cidr": "fd00::/64", "communities": ["rack"]},
            ],
        ),
    )
    intent = build_intent(view, "n1")
    assert intent.service_prefixes == ("10.96.0.0/12", "192.0.2.0/24", "198.51.100.7/32")
    assert intent.advertised == intent.service_prefixes
    (community,) = intent.communities
    assert community.prefix == "10.96.0.0/12"
    assert community.standard == ((65000, 100),) and community.large == ((1, 2, 3),)


def test_node_without_bgp_address_has_no_sessions_but_keeps_blackholes() -> None:
    view = cluster(
        node("n1", None, asNumber=65001),
        node("n2", "10.66.0.12/24"),
        block_updates("10.200.0.0/26", "n1"),
    )
    intent = build_intent(view, "n1")
    assert intent.router_id is None and intent.peers == ()
    assert intent.own_blocks == ("10.200.0.0/26",)
    assert any("no spec.bgp.ipv4Address" in note for note in intent.notes)
    missing = build_intent(view, "ghost")
    assert missing.router_id is None and any("no Node resource" in n for n in missing.notes)


def test_invalid_objects_in_the_datastore_are_ignored() -> None:
    bad_peer = peer("bad", peerIP="not-an-ip", asNumber=65000)
    view = cluster(
        *THREE_NODES, bad_peer, Update("/calico/ipam/v2/assignment/ipv4/block/10.9.0.0-26", b"{", 1)
    )
    assert "bad" not in view.bgp_peers and not view.blocks
    assert sorted(peers_by_protocol(build_intent(view, "n1"))) == [
        "Mesh_10_66_0_12",
        "Mesh_10_66_0_13",
    ]


def test_intent_is_a_pure_function_of_the_view() -> None:
    updates = [
        *THREE_NODES,
        pool("default", "10.200.0.0/16"),
        *block_updates("10.200.0.0/26", "n1"),
    ]
    a = build_intent(cluster(*updates), "n1")
    b = build_intent(cluster(*reversed(updates)), "n1")
    assert a == b
