"""Parsing BIRD's output: `show protocols all` captured from BIRD 2.0.12, and the CLI protocol."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from services.bgp.bird_status import parse_show_protocols
from services.bgp.birdctl import BirdReply, _parse_line
from services.bgp.daemon import peer_from_bird

DATA = Path(__file__).parent / "data"


def load(name: str) -> str:
    return (DATA / f"show_protocols_{name}.txt").read_text()


def test_established_session() -> None:
    protocols = parse_show_protocols(load("established"))
    assert sorted(protocols) == [
        "Mesh_10_66_0_12",
        "calico_blocks",
        "device1",
        "direct1",
        "kernel1",
    ]
    mesh = protocols["Mesh_10_66_0_12"]
    assert (mesh.proto, mesh.state, mesh.since, mesh.info) == (
        "BGP",
        "up",
        "16:18:02.379",
        "Established",
    )
    assert mesh.bgp_state == "Established"
    assert mesh.neighbor_address == "10.66.0.12"
    assert (mesh.routes_imported, mesh.routes_exported) == (1, 1)
    assert mesh.last_error == ""
    kernel = protocols["kernel1"]
    assert (kernel.proto, kernel.routes_exported, kernel.bgp_state) == ("Kernel", 2, "")


def test_session_down_after_peer_died() -> None:
    mesh = parse_show_protocols(load("active"))["Mesh_10_66_0_12"]
    assert mesh.state == "start" and mesh.bgp_state == "Active"
    assert mesh.info == "Active Socket: Connection refused"
    assert mesh.last_error == "Socket: Connection refused"
    assert mesh.routes_imported == 1  # graceful restart keeps the peer's routes meanwhile


def test_disabled_protocol() -> None:
    mesh = parse_show_protocols(load("down"))["Mesh_10_66_0_12"]
    assert (mesh.state, mesh.bgp_state, mesh.info) == ("down", "Down", "")
    assert (mesh.routes_imported, mesh.routes_exported) == (0, 0)


def test_routes_line_with_filtered_counts_and_unknown_lines() -> None:
    text = (
        "Name       Proto      Table      State  Since         Info\n"
        "Global_10_0_0_1 BGP        ---        up     2024-01-02    Established\n"
        "  Something new:    ignored\n"
        "  BGP state:          Established\n"
        "  Channel ipv4\n"
        "    Routes:         5 imported, 2 filtered, 3 exported, 4 preferred\n"
    )
    peer = parse_show_protocols(text)["Global_10_0_0_1"]
    assert (peer.since, peer.routes_imported, peer.routes_exported) == ("2024-01-02", 5, 3)
    assert parse_show_protocols("") == {}


def test_cli_protocol_lines() -> None:
    assert _parse_line("0001 BIRD 2.0.12 ready.", 0) == (1, "BIRD 2.0.12 ready.", True)
    assert _parse_line("2002-Name       Proto", 0) == (2002, "Name       Proto", False)
    assert _parse_line("   BGP state:   Up", 1006) == (1006, "  BGP state:   Up", False)
    assert _parse_line("0000 ", 1006) == (0, "", True)
    reply = BirdReply(8002, ((2, "Reading configuration from x"), (8002, "x:2:1 syntax error")))
    assert not reply.ok and reply.message() == "x:2:1 syntax error"
    assert reply.text == "Reading configuration from x\nx:2:1 syntax error"
    assert BirdReply(3, ((2, "Reading"), (3, "Reconfigured"))).ok


def test_peer_from_bird_listing_alone() -> None:
    """An adopted BIRD whose config this calico-bgpd never applied: its sessions are named
    from BIRD's own listing (the description calico-bgpd rendered gives the type)."""
    mesh = parse_show_protocols(load("established"))["Mesh_10_66_0_12"]
    assert (mesh.description, mesh.neighbor_as) == ("node-to-node mesh", 64512)
    peer = peer_from_bird(mesh)
    assert (peer.protocol, peer.address, peer.port, peer.as_number, peer.type) == (
        "Mesh_10_66_0_12",
        "10.66.0.12",
        179,
        64512,
        "node-to-node mesh",
    )
    client = replace(
        mesh, name="Node_10_66_0_13_port_1790", description="route reflector client node-3"
    )
    peer = peer_from_bird(client)
    assert (peer.type, peer.node, peer.port) == ("route reflector client", "node-3", 1790)
    assert peer_from_bird(replace(mesh, description="")).type == "unknown (from BIRD)"
