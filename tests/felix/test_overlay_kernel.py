"""The overlay reconciler (services/felix/vxlan/kernel.py) against a real kernel, in a namespace
made for the test: VXLAN routes and CrossSubnet's direct routes (both protocol 80), drift
repair of both, and routes of other protocols left alone.

The reconciler works in the namespace its netlink socket was opened in; the test opens it
inside its own namespace (pushns/popns around the first call) and checks with `ip -j`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2.netns import popns, pushns

from services.felix.vxlan.intent import DEVICE, DeviceIntent, RouteIntent, VxlanIntent
from services.felix.vxlan.kernel import RTPROT_FELIX, VxlanKernel
from services.felix.vxlan.tunnel_addr import vtep_mac
from tests.felix.conftest import ip_json, run

pytestmark = pytest.mark.netns

LOCAL = "10.66.0.11"
REMOTE_MAC = vtep_mac("node-4")


@pytest.fixture
def node_ns() -> Iterator[str]:
    """A namespace with an uplink `up0` holding 10.66.0.11/24 (a veth whose peer stays in the
    namespace, so both are up with carrier) and a BIRD-like route of another protocol."""
    name = f"cpt-ovl-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p", netns=name)
        run("ip", "addr", "add", f"{LOCAL}/24", "dev", "up0", netns=name)
        for dev in ("lo", "up0", "up0p"):
            run("ip", "link", "set", dev, "up", netns=name)
        run("ip", "route", "add", "10.99.0.0/26", "via", "10.66.0.20", "proto", "bird", netns=name)
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


def _intent(direct: dict[str, str], tunnelled: dict[str, str]) -> VxlanIntent:
    routes = {c: RouteIntent(via, None) for c, via in direct.items()}
    routes |= {c: RouteIntent(via, DEVICE) for c, via in tunnelled.items()}
    return VxlanIntent(
        local=LOCAL,
        device=DeviceIntent(LOCAL, "10.65.1.0", vtep_mac("node-1")),
        routes=routes,
        neighbours={"10.65.5.0": REMOTE_MAC} if tunnelled else {},
        fdb={REMOTE_MAC: "10.66.1.14"} if tunnelled else {},
    )


def _routes(ns: str, proto: str) -> dict[str, tuple[str, str, list[str]]]:
    found: list[dict[str, Any]] = ip_json(ns, "route", "show", "proto", proto)
    return {r["dst"]: (r.get("gateway", ""), r["dev"], r.get("flags", [])) for r in found}


async def _open_in(kernel: VxlanKernel, ns: str) -> None:
    """Open the kernel's netlink socket inside `ns` (an empty intent changes nothing there)."""
    pushns(ns)
    try:
        assert await kernel.reconcile(VxlanIntent()) == 0
    finally:
        popns()


async def test_direct_and_vxlan_routes_are_reconciled_and_repaired(node_ns: str) -> None:
    kernel = VxlanKernel()
    try:
        await _open_in(kernel, node_ns)
        want = _intent({"10.65.2.0/26": "10.66.0.12"}, {"10.65.5.0/26": "10.65.5.0"})
        assert await kernel.reconcile(want) > 0
        assert _routes(node_ns, str(RTPROT_FELIX)) == {
            "10.65.2.0/26": ("10.66.0.12", "up0", []),
            "10.65.5.0/26": ("10.65.5.0", DEVICE, ["onlink"]),
        }
        assert await kernel.reconcile(want) == 0  # nothing differs: nothing is rewritten

        # Drift: both kinds of route deleted by hand come back, counted as repairs.
        run("ip", "route", "del", "10.65.2.0/26", netns=node_ns)
        run("ip", "route", "del", "10.65.5.0/26", netns=node_ns)
        assert await kernel.reconcile(want) == 2
        assert set(_routes(node_ns, str(RTPROT_FELIX))) == {"10.65.2.0/26", "10.65.5.0/26"}

        # A block whose node moved into this subnet: its route leaves the tunnel for the uplink.
        moved = _intent({"10.65.2.0/26": "10.66.0.12", "10.65.5.0/26": "10.66.0.14"}, {})
        assert await kernel.reconcile(moved) > 0
        assert _routes(node_ns, str(RTPROT_FELIX))["10.65.5.0/26"] == ("10.66.0.14", "up0", [])
        assert ip_json(node_ns, "neigh", "show", "dev", DEVICE, "nud", "permanent") == []

        # No routes wanted: ours go, the other protocol's route stays.
        assert await kernel.reconcile(_intent({}, {})) == 2
        assert _routes(node_ns, str(RTPROT_FELIX)) == {}
        assert _routes(node_ns, "bird") == {"10.99.0.0/26": ("10.66.0.20", "up0", [])}
    finally:
        await kernel.close()


async def test_direct_routes_without_a_device(node_ns: str) -> None:
    """CrossSubnet within the subnet needs no VTEP: direct routes alone, no vxlan.calico."""
    kernel = VxlanKernel()
    try:
        await _open_in(kernel, node_ns)
        intent = VxlanIntent(local=LOCAL, routes={"10.65.2.0/26": RouteIntent("10.66.0.12", None)})
        assert await kernel.reconcile(intent) == 1
        assert _routes(node_ns, str(RTPROT_FELIX)) == {"10.65.2.0/26": ("10.66.0.12", "up0", [])}
        assert ip_json(node_ns, "link", "show", "type", "vxlan") == []
    finally:
        await kernel.close()
