"""Three nodes with a route reflector (node-0) and an external eBGP router (a plain BIRD in the
lan namespace at 10.77.0.1, AS 65000), configured as the lab's `--bgp rr --tor bird` does."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from libcalico.syncer.api import Update
from services.bgp.synthetic import block_updates, resource_update
from tests.bgp.bgplab import CALICOCTL, BGPLab, missing_requirements, wait_for

pytestmark = pytest.mark.netns

POOL = "10.200.0.0/16"
BLOCKS = ["10.200.0.0/26", "10.200.1.0/26", "10.200.2.0/26"]
TOR_PREFIX = "10.99.0.0/24"
TOR_AS = 65000

ROUTER_CONFIG = """
router id 10.77.0.1;
protocol device {}
protocol direct { ipv4; interface "br0"; }
protocol static announced { ipv4; route 10.99.0.0/24 blackhole; }
template bgp node {
  local 10.77.0.1 as 65000;
  connect delay time 1; connect retry time 1; error wait time 1,1;
  ipv4 { import all; export where proto = "announced"; };
}
protocol bgp node0 from node { neighbor 10.77.0.11 as 64512; }
protocol bgp node1 from node { neighbor 10.77.0.12 as 64512; }
protocol bgp node2 from node { neighbor 10.77.0.13 as 64512; }
"""


def pool(**spec: object) -> Update:
    return resource_update("ippools", "IPPool", "default", {"cidr": POOL, "blockSize": 26, **spec})


def tor_peer(filters: list[str]) -> Update:
    spec = {"peerIP": "10.77.0.1", "asNumber": TOR_AS, "filters": filters}
    return resource_update("bgppeers", "BGPPeer", "tor", spec)


@pytest.fixture(scope="module")
def lab() -> Iterator[BGPLab]:
    reason = missing_requirements()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    with BGPLab(3) as lab:
        lab.add_lan_address("10.77.0.1/24")
        updates: list[Update] = [pool()]
        for i in range(3):
            spec: dict[str, object] = {"ipv4Address": f"{lab.address(i)}/24"}
            labels = {}
            if i == 0:
                spec["routeReflectorClusterID"] = "244.0.0.1"
                labels = {"route-reflector": "true"}
            updates.append(
                resource_update("nodes", "Node", lab.node(i), {"bgp": spec}, labels=labels)
            )
            updates += block_updates(BLOCKS[i], lab.node(i), {1: lab.node(i)})
        updates += [
            resource_update(
                "bgpconfigurations", "BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False}
            ),
            resource_update(
                "bgppeers",
                "BGPPeer",
                "peer-with-route-reflectors",
                {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
            ),
            resource_update(
                "bgpfilters",
                "BGPFilter",
                "no-tor-prefix",
                {"importV4": [{"action": "Reject", "cidr": TOR_PREFIX, "matchOperator": "Equal"}]},
            ),
            tor_peer([]),
        ]
        lab.write(updates)
        lab.start_router(ROUTER_CONFIG)
        for i in range(3):
            lab.start_bgpd(i)
        for i in range(3):
            lab.wait_serving(i)
        try:
            yield lab
        except BaseException:
            for i in range(3):
                print(lab.log_tail(i, 30))
            raise


def router_routes(lab: BGPLab) -> dict[str, set[str]]:
    """The router's BGP-learned prefixes -> their next hops, per session."""
    ctl = lab.router_ctl
    assert ctl is not None
    found: dict[str, set[str]] = {}
    for name in ("node0", "node1", "node2"):
        text = subprocess.run(
            ["birdc", "-s", str(ctl), "show", "route", "protocol", name, "all"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        prefix = None
        for line in text.splitlines():
            fields = line.split()
            if fields and "/" in fields[0] and fields[0][0].isdigit():
                prefix = fields[0]
            elif prefix and line.strip().startswith("BGP.next_hop:"):
                found.setdefault(prefix, set()).add(fields[1])
    return found


def test_route_reflector_sessions_and_reflected_routes(lab: BGPLab) -> None:
    for client in (1, 2):
        peer = lab.wait_established(client, "Node_10_77_0_11")
        assert peer.type == "route reflector"
    rr = {p.protocol: p for p in lab.status(0).peers}
    assert rr["Node_10_77_0_12"].type == rr["Node_10_77_0_13"].type == "route reflector client"
    lab.wait_established(0, "Node_10_77_0_12")
    lab.wait_established(0, "Node_10_77_0_13")
    # node-1 learns node-2's block through the reflector, with node-2 as the next hop.
    assert lab.wait_route(1, BLOCKS[2])["gateway"] == lab.address(2)
    assert lab.wait_route(2, BLOCKS[1])["gateway"] == lab.address(1)
    assert lab.wait_route(1, BLOCKS[0])["gateway"] == lab.address(0)


def test_tor_gets_each_block_from_its_node_and_its_prefix_reaches_every_kernel(
    lab: BGPLab,
) -> None:
    for i in range(3):
        lab.wait_established(i, "Global_10_77_0_1")
    expected = {BLOCKS[i]: {lab.address(i)} for i in range(3)}
    wait_for(lambda: router_routes(lab) == expected, 15, f"router routes == {expected}")
    for i in range(3):
        assert lab.wait_route(i, TOR_PREFIX)["gateway"] == "10.77.0.1"
    status = json.loads(
        subprocess.run(
            [CALICOCTL, "node", "status", "-o", "json", "--socket", str(lab.socket(1))],
            capture_output=True,
            text=True,
        ).stdout
    )
    types = sorted(p["type"] for p in status["peers"])
    assert types == ["global", "route reflector"]


def test_filter_and_disable_bgp_export_withdraw(lab: BGPLab) -> None:
    lab.write([tor_peer(["no-tor-prefix"])])
    for i in range(3):
        lab.wait_no_route(i, TOR_PREFIX)
    lab.write([pool(disableBGPExport=True)])
    wait_for(lambda: router_routes(lab) == {}, 15, "blocks withdrawn from the router")
    lab.wait_no_route(1, BLOCKS[2])
    # Own blocks stay blackholed in the kernel even when not advertised.
    assert lab.wait_route(1, BLOCKS[1])["type"] == "blackhole"
    assert lab.status(1).advertised == []
    lab.write([pool(), tor_peer([])])
    wait_for(lambda: len(router_routes(lab)) == 3, 15, "blocks advertised again")


def test_borrowed_address_is_a_host_route_from_the_borrower(lab: BGPLab) -> None:
    # node-1 holds address .9 of node-2's block.
    lab.write(block_updates(BLOCKS[2], lab.node(2), {1: lab.node(2), 9: lab.node(1)}))
    borrowed = "10.200.2.9"
    started = time.monotonic()
    for i in (0, 2):
        assert lab.wait_route(i, borrowed)["gateway"] == lab.address(1)
    print(f"borrowed /32 everywhere in {(time.monotonic() - started) * 1000:.0f} ms")
    # Never a kernel route on the borrower itself (Felix owns its pod routes).
    assert lab.route_to(1, borrowed) is None
    wait_for(lambda: router_routes(lab).get(f"{borrowed}/32") == {lab.address(1)}, 15, "router /32")
    assert f"{borrowed}/32" in lab.status(1).advertised
