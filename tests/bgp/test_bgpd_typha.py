"""calico-bgpd fed by Typha (TYPHA_ADDR) instead of the datastore: same routes, same status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.bgp.synthetic import block_updates, resource_update
from tests.bgp.bgplab import BGPLab, missing_requirements

pytestmark = pytest.mark.netns


@pytest.fixture
def lab() -> Iterator[BGPLab]:
    reason = missing_requirements()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    with BGPLab(2) as lab:
        yield lab


def test_bgpd_through_typha(lab: BGPLab) -> None:
    updates = [resource_update("ippools", "IPPool", "default", {"cidr": "10.200.0.0/16"})]
    for i in range(2):
        spec = {"bgp": {"ipv4Address": f"{lab.address(i)}/24"}}
        updates.append(resource_update("nodes", "Node", lab.node(i), spec))
        updates += block_updates(f"10.200.{i}.0/26", lab.node(i))
    lab.write(updates)
    typha = lab.start_typha()
    for i in range(2):
        lab.start_bgpd(i, {"TYPHA_ADDR": str(typha)})
    lab.wait_established(0, "Mesh_10_77_0_12")
    assert lab.wait_route(0, "10.200.1.0/26")["gateway"] == lab.address(1)
    # A change flows through Typha too.
    lab.write(block_updates("10.200.9.0/26", lab.node(1)))
    assert lab.wait_route(0, "10.200.9.0/26")["gateway"] == lab.address(1)
