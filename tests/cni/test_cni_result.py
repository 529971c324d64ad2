"""The ADD result builder (cni_client/cni/result.py) per cniVersion: which keys each version's
interfaces carry. The exact whole results are checked through the launcher in
test_cni_commands.py; this covers the MTU rules for every supported version."""

from __future__ import annotations

import pytest

from cni_client import wire
from cni_client.cni import result, versions


def setup_result(host_mtu: int, pod_mtu: int) -> wire.SetupResult:
    setup = wire.SetupResult()
    setup.host_interface = wire.Interface("cali1", "ee:ee:ee:ee:ee:ee", "", host_mtu)
    setup.container_interface = wire.Interface("eth0", "0a:58:0a:41:00:02", "/run/netns/p", pod_mtu)
    setup.addresses = ["10.65.0.2/32"]
    setup.routes = [("0.0.0.0/0", "169.254.1.1")]
    return setup


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_mtu_only_from_1_1_0(version: str) -> None:
    out = result.add_result(version, setup_result(1450, 1440), None)
    interfaces = out["interfaces"]
    assert isinstance(interfaces, list)
    if version == "1.1.0":
        assert [i["mtu"] for i in interfaces] == [1450, 1440]
    else:
        # Older versions' results have no such field: they stay exactly as before.
        assert [sorted(i) for i in interfaces] == [["mac", "name"], ["mac", "name", "sandbox"]]


def test_unknown_mtu_is_left_out() -> None:
    # A Felix that did not report the MTU (0): the spec's uint is omitted, not made up.
    out = result.add_result("1.1.0", setup_result(0, 0), None)
    interfaces = out["interfaces"]
    assert isinstance(interfaces, list)
    assert all("mtu" not in i for i in interfaces)
