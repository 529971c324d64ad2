"""SetupEndpoint against a real calico-felix in a node namespace, with real pod namespaces."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest

from calico.felix.v1 import endpoints_pb2 as pb
from libcalico.resources import validate
from services.felix.endpoints.naming import host_veth_name
from tests.felix.conftest import FelixHarness, ip_json, ping, read_sysctl, run, tcp_roundtrip
from tests.felix.helpers import (
    endpoint_id,
    eventually,
    get_wep,
    list_weps,
    put_namespace,
    put_pod,
    setup_request,
)

pytestmark = pytest.mark.netns


def addresses_of(netns: str, dev: str) -> set[str]:
    links = ip_json(netns, "addr", "show", "dev", dev)
    return {
        f"{a['local']}/{a['prefixlen']}"
        for link in links
        for a in link["addr_info"]
        if a.get("scope") != "link"
    }


def routes_of(netns: str, *args: str) -> list[dict[str, object]]:
    return list(ip_json(netns, *args, "route", "show"))


async def test_setup_plumbs_the_pod_and_writes_its_endpoint(felix: FelixHarness) -> None:
    ds = felix.datastore
    await put_namespace(ds, "shop", {"team": "web"})
    ports: list[dict[str, Any]] = [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"containerPort": 9090},  # unnamed: not an endpoint port
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
    ]
    await put_pod(ds, "shop", "front-1", {"app": "front"}, service_account="front-sa", ports=ports)
    pod = felix.new_pod_netns()
    req = setup_request(
        "front-1", felix.netns_path(pod), ["10.65.0.5/26", "fd00:65::5/122"], namespace="shop"
    )
    resp = await felix.stub.SetupEndpoint(req)

    host = host_veth_name("shop", "front-1")
    assert host.startswith("cali") and len(host) == 15
    assert resp.host_interface.name == host
    assert resp.host_interface.mac == "ee:ee:ee:ee:ee:ee"
    assert resp.container_interface.name == "eth0"
    assert resp.container_interface.sandbox == felix.netns_path(pod)
    assert list(resp.addresses) == ["10.65.0.5/32", "fd00:65::5/128"]
    assert [(r.dst, r.gateway) for r in resp.routes] == [
        ("169.254.1.1/32", ""),
        ("0.0.0.0/0", "169.254.1.1"),
        ("::/0", "fe80::ecee:eeff:feee:eeee"),
    ]
    assert resp.workload_endpoint == "node--a-k8s-front--1-eth0"

    # Host side: the veth, its MAC and MTU (from the node's default-route interface), sysctls.
    (link,) = ip_json(felix.node, "link", "show", "dev", host)
    assert link["address"] == "ee:ee:ee:ee:ee:ee"
    assert link["mtu"] == 1500
    assert "UP" in link["flags"]
    assert read_sysctl(felix.node, f"ipv4/conf/{host}/proxy_arp") == "1"
    assert read_sysctl(felix.node, f"ipv4/neigh/{host}/proxy_delay") == "0"
    assert read_sysctl(felix.node, f"ipv4/conf/{host}/forwarding") == "1"
    assert read_sysctl(felix.node, f"ipv6/conf/{host}/accept_ra") == "0"
    host_routes = {r["dst"] for r in routes_of(felix.node, "-4") if r.get("dev") == host}
    assert host_routes == {"10.65.0.5"}
    host6 = {r["dst"] for r in routes_of(felix.node, "-6") if r.get("dev") == host}
    assert "fd00:65::5" in host6

    # Pod side: addresses, the 169.254.1.1 routes, IPv6 default via the host's link-local.
    assert addresses_of(pod, "eth0") == {"10.65.0.5/32", "fd00:65::5/128"}
    assert read_sysctl(pod, "ipv6/conf/eth0/accept_dad") == "0"
    pod_routes = {(r["dst"], r.get("gateway"), r.get("scope")) for r in routes_of(pod, "-4")}
    assert ("default", "169.254.1.1", None) in pod_routes or (
        "default",
        "169.254.1.1",
        "global",
    ) in pod_routes
    assert any(r[0] == "169.254.1.1" and r[2] == "link" for r in pod_routes)
    default6 = [r for r in routes_of(pod, "-6") if r["dst"] == "default"]
    assert default6 and default6[0]["gateway"] == "fe80::ecee:eeff:feee:eeee"
    (pod_link,) = ip_json(pod, "link", "show", "dev", "eth0")
    assert pod_link["address"] == resp.container_interface.mac
    # The answer reports the MTU each end really has.
    assert (resp.host_interface.mtu, resp.container_interface.mtu) == (1500, pod_link["mtu"])

    # The WorkloadEndpoint, valid for calicoctl.
    wep = await get_wep(ds, "shop", resp.workload_endpoint)
    assert wep is not None
    validate(wep)
    assert wep["metadata"]["labels"] == {
        "app": "front",
        "pcns.team": "web",
        "pcns.projectcalico.org/name": "shop",
        "projectcalico.org/namespace": "shop",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "front-sa",
    }
    spec = wep["spec"]
    assert spec["orchestrator"] == "k8s"
    assert spec["node"] == "node-a"
    assert spec["pod"] == "front-1"
    assert spec["endpoint"] == "eth0"
    assert spec["containerID"] == req.id.container_id
    assert spec["interfaceName"] == host
    assert spec["mac"] == resp.container_interface.mac
    assert spec["ipNetworks"] == ["10.65.0.5/32", "fd00:65::5/128"]
    assert spec["profiles"] == ["kns.shop", "ksa.shop.front-sa"]
    assert spec["serviceAccountName"] == "front-sa"
    assert spec["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 8080},
        {"name": "dns", "protocol": "UDP", "port": 53},
    ]
    assert wep["metadata"]["uid"] and wep["metadata"]["creationTimestamp"]

    listed = await felix.stub.ListEndpoints(pb.ListEndpointsRequest())
    assert [(e.host_interface, e.programmed) for e in listed.endpoints] == [(host, True)]


async def test_pod_missing_from_datastore_gets_automatic_labels(felix: FelixHarness) -> None:
    pod = felix.new_pod_netns()
    resp = await felix.stub.SetupEndpoint(
        setup_request("ghost", felix.netns_path(pod), ["10.65.0.9/26"])
    )
    wep = await get_wep(felix.datastore, "default", resp.workload_endpoint)
    assert wep is not None
    assert wep["metadata"]["labels"] == {
        "pcns.projectcalico.org/name": "default",
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "default",
    }
    assert "ports" not in wep["spec"]


async def test_pods_reach_each_other_through_the_node(felix: FelixHarness) -> None:
    a, b = felix.new_pod_netns(), felix.new_pod_netns()
    await felix.stub.SetupEndpoint(
        setup_request("a", felix.netns_path(a), ["10.65.0.10/26", "fd00:65::10/122"])
    )
    await felix.stub.SetupEndpoint(
        setup_request("b", felix.netns_path(b), ["10.65.0.11/26", "fd00:65::11/122"])
    )
    assert ping(a, "10.65.0.11") and ping(b, "10.65.0.10")
    assert ping(a, "fd00:65::11") and ping(b, "fd00:65::10")
    assert tcp_roundtrip(a, b, "10.65.0.11")
    assert tcp_roundtrip(b, a, "fd00:65::10")


async def test_label_changes_reach_the_endpoint(felix: FelixHarness) -> None:
    ds = felix.datastore
    await put_namespace(ds, "shop", {"team": "web"})
    await put_pod(ds, "shop", "cart", {"app": "cart", "tier": "1"})
    pod = felix.new_pod_netns()
    resp = await felix.stub.SetupEndpoint(
        setup_request("cart", felix.netns_path(pod), ["10.65.0.20/26"], namespace="shop")
    )

    async def labels() -> dict[str, str]:
        wep = await get_wep(ds, "shop", resp.workload_endpoint)
        assert wep is not None
        return dict(wep["metadata"]["labels"])

    assert (await labels())["tier"] == "1"
    await put_pod(
        ds,
        "shop",
        "cart",
        {"app": "cart", "tier": "2"},
        ports=[{"name": "web", "containerPort": 80}],
    )
    got = await eventually(labels, lambda lab: lab.get("tier") == "2")
    assert got["app"] == "cart"
    wep = await get_wep(ds, "shop", resp.workload_endpoint)
    assert wep is not None and wep["spec"]["ports"] == [
        {"name": "web", "port": 80, "protocol": "TCP"}
    ]

    await put_namespace(ds, "shop", {"team": "payments", "env": "prod"})
    got = await eventually(labels, lambda lab: lab.get("pcns.team") == "payments")
    assert got["pcns.env"] == "prod"
    assert got["projectcalico.org/namespace"] == "shop"


async def test_teardown_removes_everything(felix: FelixHarness) -> None:
    pod = felix.new_pod_netns()
    req = setup_request("gone", felix.netns_path(pod), ["10.65.0.30/26", "fd00:65::30/122"])
    resp = await felix.stub.SetupEndpoint(req)
    host = resp.host_interface.name

    stale = pb.TeardownEndpointRequest(
        id=endpoint_id("gone", container_id="0ther"), netns=felix.netns_path(pod)
    )
    assert (await felix.stub.TeardownEndpoint(stale)).removed is False  # not its container
    assert await get_wep(felix.datastore, "default", resp.workload_endpoint) is not None

    td = pb.TeardownEndpointRequest(id=req.id, netns=felix.netns_path(pod))
    assert (await felix.stub.TeardownEndpoint(td)).removed is True
    assert await get_wep(felix.datastore, "default", resp.workload_endpoint) is None

    async def host_links() -> list[str]:
        return [link["ifname"] for link in ip_json(felix.node, "link", "show")]

    await eventually(host_links, lambda names: host not in names)
    assert ip_json(pod, "link", "show") and all(
        link["ifname"] == "lo" for link in ip_json(pod, "link", "show")
    )
    assert not [r for r in routes_of(felix.node, "-4") if r.get("dev") == host]
    assert not [r for r in routes_of(felix.node, "-6") if r.get("dev") == host]
    assert (await felix.stub.ListEndpoints(pb.ListEndpointsRequest())).endpoints == []
    # Idempotent: a second DEL (and a DEL for a never-seen pod) succeeds, removing nothing.
    assert (await felix.stub.TeardownEndpoint(td)).removed is False
    never = pb.TeardownEndpointRequest(id=endpoint_id("never"), netns="/var/run/netns/none")
    assert (await felix.stub.TeardownEndpoint(never)).removed is False


async def test_repeated_setup_converges_without_recreating(felix: FelixHarness) -> None:
    pod = felix.new_pod_netns()
    req = setup_request("again", felix.netns_path(pod), ["10.65.0.40/26"])
    first = await felix.stub.SetupEndpoint(req)
    (before,) = ip_json(felix.node, "link", "show", "dev", first.host_interface.name)
    second = await felix.stub.SetupEndpoint(req)
    (after,) = ip_json(felix.node, "link", "show", "dev", first.host_interface.name)
    assert second == first
    assert after["ifindex"] == before["ifindex"]

    # A new container for the same pod name replaces the endpoint.
    newer = setup_request("again", felix.netns_path(pod), ["10.65.0.41/26"], container_id="beef")
    third = await felix.stub.SetupEndpoint(newer)
    assert list(third.addresses) == ["10.65.0.41/32"]
    wep = await get_wep(felix.datastore, "default", third.workload_endpoint)
    assert wep is not None and wep["spec"]["containerID"] == "beef"
    assert addresses_of(pod, "eth0") == {"10.65.0.41/32"}


def veth_mtus(felix: FelixHarness, pod: str, host: str) -> tuple[int, int]:
    (host_link,) = ip_json(felix.node, "link", "show", "dev", host)
    (pod_link,) = ip_json(pod, "link", "show", "dev", "eth0")
    return host_link["mtu"], pod_link["mtu"]


async def test_setup_reports_the_mtu_each_veth_end_has(felix: FelixHarness) -> None:
    pod = felix.new_pod_netns()
    req = setup_request("sized", felix.netns_path(pod), ["10.65.0.45/26", "fd00:65::45/122"])
    req.mtu = 1400
    first = await felix.stub.SetupEndpoint(req)
    host = first.host_interface.name
    assert veth_mtus(felix, pod, host) == (1400, 1400)
    assert (first.host_interface.mtu, first.container_interface.mtu) == (1400, 1400)

    # A repeated ADD converges without recreating and reports what the kernel has now.
    (before,) = ip_json(felix.node, "link", "show", "dev", host)
    again = await felix.stub.SetupEndpoint(req)
    assert (again.host_interface.mtu, again.container_interface.mtu) == (1400, 1400)
    (after,) = ip_json(felix.node, "link", "show", "dev", host)
    assert after["ifindex"] == before["ifindex"]

    # The same container asking for another MTU gets its veth rebuilt with it.
    req.mtu = 1300
    changed = await felix.stub.SetupEndpoint(req)
    assert veth_mtus(felix, pod, host) == (1300, 1300)
    assert (changed.host_interface.mtu, changed.container_interface.mtu) == (1300, 1300)
    assert addresses_of(pod, "eth0") == {"10.65.0.45/32", "fd00:65::45/128"}

    # Without an MTU a repeated ADD keeps the pod's (Felix's default is 1500 here).
    req.mtu = 0
    kept = await felix.stub.SetupEndpoint(req)
    assert veth_mtus(felix, pod, host) == (1300, 1300)
    assert (kept.host_interface.mtu, kept.container_interface.mtu) == (1300, 1300)


async def test_check_endpoint_reports_drift(felix: FelixHarness) -> None:
    pod = felix.new_pod_netns()
    req = setup_request("checked", felix.netns_path(pod), ["10.65.0.50/26"])
    await felix.stub.SetupEndpoint(req)
    check = pb.CheckEndpointRequest(
        id=req.id, netns=felix.netns_path(pod), addresses=["10.65.0.50/32"]
    )
    ok = await felix.stub.CheckEndpoint(check)
    assert ok.ok and not ok.problems

    run("ip", "route", "del", "default", netns=pod)
    bad = await felix.stub.CheckEndpoint(check)
    assert not bad.ok
    assert bad.problems == ["pod route 0.0.0.0/0 via 169.254.1.1 dev eth0 missing"]

    wrong = pb.CheckEndpointRequest(id=endpoint_id("nobody"), netns=felix.netns_path(pod))
    assert not (await felix.stub.CheckEndpoint(wrong)).ok


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.id.ClearField("container_id"), "id.container_id"),
        (lambda r: setattr(r.id, "container_id", "a/b"), "id.container_id"),
        (lambda r: setattr(r.id, "namespace", "Bad_NS"), "id.namespace"),
        (lambda r: r.id.ClearField("pod"), "id.pod"),
        (lambda r: setattr(r.id, "interface_name", "eth0-far-too-long"), "id.interface_name"),
        (lambda r: setattr(r.id, "interface_name", "../x"), "id.interface_name"),
        (lambda r: r.ClearField("netns"), "netns"),
        (lambda r: setattr(r, "netns", "relative/path"), "netns"),
        (lambda r: r.ClearField("addresses"), "addresses"),
        (lambda r: r.addresses.append("10.0.0.300"), "addresses[1]"),
        (lambda r: r.addresses.append("127.0.0.1/8"), "addresses[1]"),
        (lambda r: setattr(r, "mtu", 20), "mtu"),
        (lambda r: setattr(r, "mtu", -1500), "mtu"),
        (
            lambda r: r.MergeFrom(pb.SetupEndpointRequest(addresses=["fd00:65::60/122"], mtu=1279)),
            "mtu",
        ),
        (lambda r: setattr(r, "policy_timeout_ms", -1), "policy_timeout_ms"),
        (lambda r: setattr(r, "netns", "/proc/self/ns/net"), "netns"),
        (lambda r: setattr(r, "netns", "/etc/hostname"), "netns"),
    ],
)
async def test_bad_input_is_refused_and_creates_nothing(
    felix: FelixHarness, change: object, field: str
) -> None:
    pod = felix.new_pod_netns()
    req = setup_request("bad", felix.netns_path(pod), ["10.65.0.60/26"])
    change(req)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await felix.stub.SetupEndpoint(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}:")
    assert not [
        link for link in ip_json(felix.node, "link", "show") if link["ifname"].startswith("cali")
    ]
    assert [link["ifname"] for link in ip_json(pod, "link", "show")] == ["lo"]
    assert await list_weps(felix.datastore) == []


async def test_missing_netns_is_not_found(felix: FelixHarness) -> None:
    req = setup_request("lost", "/var/run/netns/cpt-felix-does-not-exist", ["10.65.0.70/26"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await felix.stub.SetupEndpoint(req)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert await list_weps(felix.datastore) == []
