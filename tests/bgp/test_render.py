"""render_config(): deterministic text, and every variant is a configuration real BIRD accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from services.bgp.intent import BGPIntent, build_intent
from services.bgp.render import RenderOptions, config_sha256, render_config
from services.bgp.synthetic import block_updates, synthetic_view
from services.bgp.view import ClusterView
from tests.bgp.objects import THREE_NODES, bgp_filter, cluster, config, node, peer, pool

OPTIONS = RenderOptions(bird_dir="/var/run/calico/bird")


def rich_view() -> ClusterView:
    """Every feature at once: RR with clients, eBGP ToR with filters, communities, services."""
    return cluster(
        node("n1", "10.66.0.11/24", {"rr": "true"}, routeReflectorClusterID="244.0.0.1"),
        node("n2", "10.66.0.12/24"),
        node("n3", "10.66.0.13/24", asNumber=65003),
        pool("default", "10.200.0.0/16"),
        pool("quiet", "10.201.0.0/16", disableBGPExport=True),
        block_updates("10.200.0.0/26", "n1", {1: "n1"}),
        block_updates("10.201.0.0/26", "n1"),
        block_updates("10.200.1.0/26", "n2", {1: "n2", 9: "n1"}),
        config(
            "default",
            listenPort=1790,
            logSeverityScreen="Debug",
            ignoredInterfaces=["docker*", "kube-ipvs0"],
            serviceClusterIPs=[{"cidr": "10.96.0.0/12"}],
            communities=[{"name": "std", "value": "65000:100"}],
            prefixAdvertisements=[{"cidr": "10.200.0.0/16", "communities": ["std", "1:2:3"]}],
            nodeMeshMaxRestartTime="90s",
        ),
        bgp_filter(
            "edge",
            importV4=[
                {"action": "Reject", "cidr": "0.0.0.0/0", "matchOperator": "Equal"},
                {"action": "Accept", "cidr": "10.50.0.0/16", "matchOperator": "In",
                 "prefixLength": {"min": 8, "max": 24}},
                {"action": "Reject", "cidr": "10.60.0.0/16", "matchOperator": "NotIn"},
                {"action": "Accept", "cidr": "10.70.0.0/16", "matchOperator": "NotEqual",
                 "source": "RemotePeers", "interface": "eth*"},
                {"action": "Reject"},
            ],
            exportV4=[{"action": "Reject", "cidr": "10.200.1.9/32", "matchOperator": "Equal"}],
        ),
        peer("clients", nodeSelector="rr == 'true'", peerSelector="!has(rr)"),
        peer("tor", peerIP="10.66.0.1:1179", asNumber=65000, filters=["edge"],
             keepOriginalNextHop=True, maxRestartTime="300s"),
    )  # fmt: skip


def variants() -> dict[str, BGPIntent]:
    rich = rich_view()
    return {
        "mesh": build_intent(cluster(*THREE_NODES), "n1"),
        "rr": build_intent(rich, "n1"),
        "rr-client": build_intent(rich, "n2"),
        "ebgp-node": build_intent(rich, "n3"),
        "no-address": build_intent(cluster(node("n1", None, asNumber=65001)), "n1"),
        "empty": build_intent(cluster(), "ghost"),
        "large": build_intent(synthetic_view(50, 500), "node-0"),
        "vxlan": build_intent(vxlan_view(), "n1"),
        "bind-node-ip": build_intent(
            cluster(*THREE_NODES, config("default", bindMode="NodeIP")), "n1"
        ),
    }


def vxlan_view() -> ClusterView:
    """A VXLAN pool, an IPIP CrossSubnet pool and a plain one, each with an own block."""
    return cluster(
        *THREE_NODES,
        pool("plain", "10.200.0.0/16"),
        pool("vx", "10.210.0.0/16", vxlanMode="Always"),
        pool("tun", "10.212.0.0/16", ipipMode="CrossSubnet"),
        block_updates("10.200.0.0/26", "n1"),
        block_updates("10.210.0.0/26", "n1"),
        block_updates("10.212.0.0/26", "n1"),
    )


@pytest.fixture(scope="module")
def bird() -> str:
    path = shutil.which("bird")
    if path is None:
        print("SKIP: bird (BIRD 2) is not installed")
        pytest.skip("bird (BIRD 2) is not installed")
    return path


def test_rendering_is_deterministic() -> None:
    for name, intent in variants().items():
        a = render_config(intent, OPTIONS)
        b = render_config(build_intent(rich_view(), "n1") if name == "rr" else intent, OPTIONS)
        assert a == b, name
    assert config_sha256("x") == config_sha256("x") != config_sha256("y")


@pytest.mark.parametrize("connect_retry", [None, 1.0])
def test_bird_accepts_every_variant(bird: str, tmp_path: Path, connect_retry: float | None) -> None:
    options = RenderOptions(bird_dir=str(tmp_path), connect_retry=connect_retry)
    for name, intent in variants().items():
        path = tmp_path / f"{name}.conf"
        path.write_text(render_config(intent, options))
        proc = subprocess.run([bird, "-p", "-c", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr}\n{path.read_text()}"


def test_bird_rejects_broken_extra_config(bird: str, tmp_path: Path) -> None:
    options = RenderOptions(bird_dir=str(tmp_path), extra_config="this is not bird config;\n")
    path = tmp_path / "bad.conf"
    text = render_config(variants()["mesh"], options)
    assert text.endswith("this is not bird config;\n")
    path.write_text(text)
    proc = subprocess.run([bird, "-p", "-c", str(path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "syntax error" in proc.stderr


def test_rendered_parts_follow_the_intent() -> None:
    text = render_config(build_intent(rich_view(), "n1"), RenderOptions("/d", connect_retry=2))
    assert "router id 10.66.0.11;" in text
    assert "debug protocols all;" in text
    assert 'interface -"cali*", -"docker*", -"kube-ipvs0", "*";' in text
    # Own blocks: the advertised one and the disableBGPExport one in separate statics; the
    # borrowed /32 and the service prefix only in calico_adverts.
    blocks = text.split("protocol static calico_blocks {")[1].split("}")[0]
    assert "route 10.200.0.0/26 blackhole;" in blocks and "10.201.0.0" not in blocks
    local = text.split("protocol static calico_blocks_local {")[1].split("}")[0]
    assert "route 10.201.0.0/26 blackhole;" in local
    adverts = text.split("protocol static calico_adverts {")[1].split("}")[0]
    assert (
        "route 10.200.1.9/32 blackhole;" in adverts and "route 10.96.0.0/12 blackhole;" in adverts
    )
    kernel = text.split("filter calico_kernel_export {")[1].split("}")[0]
    assert "calico_adverts" not in kernel and "RTS_BGP" in kernel
    assert "10.200.0.0/26{26,31}, 10.201.0.0/26{26,31}" in text  # import rejects own blocks
    assert "net ~ [ 10.200.0.0/16+ ]" in text  # reflection limited to advertised pools
    assert "bgp_community.add((65000,100)); bgp_large_community.add((1,2,3));" in text
    # BGPFilter rules in order, each operator as documented.
    edge = text.split("function 'calico_bgpfilter_edge_importV4'() {")[1].split("}\n")[0]
    lines = [line.strip() for line in edge.strip().splitlines()]
    assert lines == [
        "if (net = 0.0.0.0/0) then reject;",
        "if (net ~ [ 10.50.0.0/16{16,24} ]) then accept;",
        "if (!(net ~ 10.60.0.0/16)) then reject;",
        'if (net != 10.70.0.0/16) && (source = RTS_BGP) && (ifname ~ "eth*") then accept;',
        "reject;",
    ]
    # The RR's client session and the eBGP ToR session.
    client = text.split("protocol bgp Node_10_66_0_12 {")[1].split("\n}\n")[0]
    assert "rr client;" in client and "rr cluster id 244.0.0.1;" in client
    assert "calico_export_reflect();" in peer_filter(text, client, "export")
    assert "next hop self" not in client
    assert "local 10.66.0.11 port 1790 as 64512;" in client
    assert "neighbor 10.66.0.12 port 1790 as 64512;" in client
    assert "connect retry time 2;" in client and "error wait time 2,2;" in client
    tor = text.split("protocol bgp Global_10_66_0_1_port_1179 {")[1].split("\n}\n")[0]
    assert "neighbor 10.66.0.1 port 1179 as 65000;" in tor
    assert "graceful restart time 300;" in tor and "next hop keep;" in tor
    assert "'calico_bgpfilter_edge_importV4'();" in peer_filter(text, tor, "import")
    assert (
        "calico_export_own(); calico_communities(); 'calico_bgpfilter_edge_exportV4'();"
        in peer_filter(text, tor, "export")
    )
    # Peers with the same chain share one named filter (BIRD compiles each filter once).
    assert text.count("\nfilter calico_import_") == len(
        {peer_filter(text, block, "import") for block in text.split("protocol bgp ")[1:]}
    )


def peer_filter(text: str, protocol: str, direction: str) -> str:
    """The body of the named filter a protocol block uses for `direction`."""
    name = protocol.split(f"    {direction} filter ")[1].split(";")[0]
    return text.split(f"filter {name} {{")[1].split("\n}\n")[0]


def test_no_address_renders_no_sessions() -> None:
    text = render_config(variants()["no-address"], OPTIONS)
    assert "router id 0.0.0.1;" in text and "protocol bgp" not in text
    assert "# note: node n1 has no spec.bgp.ipv4Address" in text


def test_kernel_filter_leaves_encapsulated_pools_to_felix() -> None:
    text = render_config(variants()["vxlan"], OPTIONS)
    kernel = text.split("filter calico_kernel_export {")[1].split("\n}\n")[0]
    lines = [ln.strip() for ln in kernel.strip().splitlines() if not ln.strip().startswith("#")]
    # Own blackholes first (also those inside the VXLAN pool), then learned routes within the
    # encapsulated pools rejected, then every other learned route accepted.
    assert lines == [
        'if proto = "calico_blocks" || proto = "calico_blocks_local" then accept;',
        "if source = RTS_BGP && net ~ [ 10.210.0.0/16+, 10.212.0.0/16+ ] then reject;",
        "if source = RTS_BGP then accept;",
        "reject;",
    ]
    blocks = text.split("protocol static calico_blocks {")[1].split("}")[0]
    assert "route 10.210.0.0/26 blackhole;" in blocks and "route 10.212.0.0/26 blackhole;" in blocks
    # No encapsulated pool: no rejection line at all.
    plain = render_config(variants()["mesh"], OPTIONS)
    assert "net ~" not in plain.split("filter calico_kernel_export {")[1].split("\n}\n")[0]


def test_kernel_routes_are_learned_except_within_pools() -> None:
    """BIRD learns the kernel's other routes (a next hop on another subnet resolves through
    the default route) but none within a pool or an orphaned block, and passes none on."""
    view = cluster(
        *THREE_NODES,
        pool("plain", "10.200.0.0/16"),
        pool("vx", "10.210.0.0/16", vxlanMode="Always"),
        pool("off", "10.220.0.0/16", disabled=True),
        block_updates("10.200.0.0/26", "n1"),
        block_updates("10.230.0.0/26", "n2"),  # its pool was deleted
    )
    intent = build_intent(view, "n1")
    assert intent.calico_prefixes == (
        "10.200.0.0/16",
        "10.210.0.0/16",
        "10.220.0.0/16",
        "10.230.0.0/26",
    )
    text = render_config(intent, OPTIONS)
    kernel = text.split("protocol kernel calico_kernel {")[1].split("\n}\n")[0]
    assert "\n  learn;  #" in kernel  # not `learn all`: never the kernel's own routes
    assert "import filter calico_kernel_import; export filter calico_kernel_export;" in kernel
    assert "persist" not in kernel  # BIRD removes its own routes when it stops cleanly
    imported = text.split("filter calico_kernel_import {")[1].split("\n}\n")[0]
    assert [ln.strip() for ln in imported.strip().splitlines()] == [
        "if net ~ [ 10.200.0.0/16+, 10.210.0.0/16+, 10.220.0.0/16+, 10.230.0.0/26+ ] then reject;",
        "accept;",
    ]
    # No pool at all: everything the kernel holds (but its own routes) is learned.
    empty = render_config(build_intent(cluster(*THREE_NODES), "n1"), OPTIONS)
    assert "filter calico_kernel_import {\n  accept;\n}" in empty


def test_no_filter_passes_a_route_learned_from_the_kernel() -> None:
    """Kernel-learned routes have proto calico_kernel and source RTS_INHERIT: the kernel export
    filter and every peer export gate accept only our statics' protocols or source RTS_BGP."""
    for name, intent in variants().items():
        text = render_config(intent, OPTIONS)
        gates = [
            text.split(f"{head} {{")[1].split("\n}\n")[0]
            for head in (
                "filter calico_kernel_export",
                "function calico_export_own()",
                "function calico_export_reflect()",
            )
        ]
        for gate in gates:
            accepts = [ln for ln in gate.splitlines() if "accept" in ln or "!(" in ln]
            assert accepts, (name, gate)
            for line in accepts:
                assert "calico_kernel" not in line and "RTS_INHERIT" not in line, (name, line)
                # Each accepting condition names one of our statics or requires a BGP source.
                assert 'proto = "calico_blocks' in line or "source = RTS_BGP" in line, line
        # Peer chains start with a gate; nothing comes before it.
        for block in text.split("protocol bgp ")[1:]:
            chain = peer_filter(text, block, "export").split()
            assert chain[0] in ("calico_export_own();", "calico_export_reflect();"), chain


def test_bind_mode_node_ip_binds_every_session_to_the_node_address() -> None:
    bound = render_config(variants()["bind-node-ip"], OPTIONS)
    protocols = bound.count("protocol bgp ")
    assert protocols == 2 and bound.count("  strict bind yes;") == protocols, bound
    assert "strict bind" not in render_config(variants()["mesh"], OPTIONS)
