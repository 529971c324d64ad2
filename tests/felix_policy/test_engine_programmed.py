"""The engine's "policy programmed" answer is about one endpoint, not just an interface name.

A pod re-created under the same name gets the same host interface (cali + hash of
namespace.pod) but a new address; Felix must not answer its ADD from the predecessor's
programmed state.
"""

from __future__ import annotations

import pytest

from services.felix.calc.inputs import cidrs
from services.felix.endpoints.naming import host_veth_name
from tests.felix_policy.cases import endpoint_obj, pod_ip
from tests.felix_policy.conftest import Driver

pytestmark = pytest.mark.netns


async def test_same_interface_new_address_is_not_programmed_until_applied(
    nft_driver: Driver,
) -> None:
    engine = nft_driver.engine
    iface = host_veth_name("x", "a")
    old = cidrs([pod_ip("x", "a") + "/32"])
    new = cidrs(["10.99.0.7/32"])
    assert engine.is_programmed(iface)
    assert engine.is_programmed(iface, old)
    assert not engine.is_programmed(iface, new)
    # Not there yet: a short wait gives up instead of reporting the old endpoint.
    assert not await engine.wait_programmed(iface, 0.05, new)

    replacement = endpoint_obj("x", "a", {"pod": "a"})
    replacement["spec"]["ipNetworks"] = list(new)
    await nft_driver.send([nft_driver.put(replacement)])
    assert await engine.wait_programmed(iface, 5.0, new)
    assert not engine.is_programmed(iface, old)
