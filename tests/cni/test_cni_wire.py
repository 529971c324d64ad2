"""The hand-written protobuf encoding in cni_client/wire.py against the generated classes:
any drift from ipam.proto / endpoints.proto / health.proto fails here."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from calico.felix.v1 import endpoints_pb2 as fpb
from calico.ipam.v1 import ipam_pb2 as ipb
from cni_client import wire

EP = wire.EndpointID("c0ffee", "kube-system", "coredns-1", "eth0")
EP_PB = fpb.EndpointID(
    container_id="c0ffee", namespace="kube-system", pod="coredns-1", interface_name="eth0"
)


def test_auto_assign_request() -> None:
    attrs = {"namespace": "default", "pod": "p", "node": "node-1", "ünï": "cödé"}
    got = ipb.AutoAssignRequest.FromString(
        wire.auto_assign_request("k8s-pod-network.c0ffee", 1, 2, attrs, ["a", "b"], ["c"])
    )
    assert got == ipb.AutoAssignRequest(
        num_ipv4=1,
        num_ipv6=2,
        handle_id="k8s-pod-network.c0ffee",
        attributes=attrs,
        ipv4_pools=["a", "b"],
        ipv6_pools=["c"],
    )
    assert ipb.AutoAssignRequest.FromString(wire.auto_assign_request("h", 0, 0, {})) == (
        ipb.AutoAssignRequest(handle_id="h")
    )


def test_ipam_responses() -> None:
    raw = ipb.AutoAssignResponse(ipv4=["10.0.0.5/26", "10.0.0.6/26"], ipv6=["fd00::5/122"])
    assert wire.auto_assign_response(raw.SerializeToString()) == (
        ["10.0.0.5/26", "10.0.0.6/26"],
        ["fd00::5/122"],
    )
    assert wire.auto_assign_response(b"") == ([], [])
    rel = ipb.ReleaseByHandleResponse(released=["10.0.0.5"]).SerializeToString()
    assert wire.release_by_handle_response(rel) == ["10.0.0.5"]
    assert (
        ipb.ReleaseByHandleRequest.FromString(wire.release_by_handle_request("h")).handle_id == "h"
    )
    got = ipb.GetAllocationsResponse(ips=["10.0.0.5", "fd00::5"]).SerializeToString()
    assert wire.get_allocations_response(got) == ["10.0.0.5", "fd00::5"]
    assert ipb.GetAllocationsRequest.FromString(wire.get_allocations_request("h")).handle_id == "h"


def test_setup_endpoint_round_trip() -> None:
    req = fpb.SetupEndpointRequest.FromString(
        wire.setup_endpoint_request(EP, "/run/netns/x", ["10.0.0.5/26"], 1440, "k8s", 3000)
    )
    assert req == fpb.SetupEndpointRequest(
        id=EP_PB,
        netns="/run/netns/x",
        addresses=["10.0.0.5/26"],
        mtu=1440,
        network_name="k8s",
        policy_timeout_ms=3000,
    )
    resp = fpb.SetupEndpointResponse(
        host_interface=fpb.Interface(name="cali123", mac="ee:ee:ee:ee:ee:ee", mtu=1450),
        container_interface=fpb.Interface(
            name="eth0", mac="aa:bb:cc:dd:ee:ff", sandbox="/x", mtu=65535
        ),
        addresses=["10.0.0.5/32"],
        routes=[fpb.Route(dst="169.254.1.1/32"), fpb.Route(dst="0.0.0.0/0", gateway="169.254.1.1")],
        workload_endpoint="node--k8s-p-eth0",
    )
    got = wire.setup_endpoint_response(resp.SerializeToString())
    assert (got.host_interface.name, got.host_interface.mac, got.host_interface.sandbox) == (
        "cali123",
        "ee:ee:ee:ee:ee:ee",
        "",
    )
    assert (got.container_interface.name, got.container_interface.sandbox) == ("eth0", "/x")
    assert (got.host_interface.mtu, got.container_interface.mtu) == (1450, 65535)
    assert got.addresses == ["10.0.0.5/32"]
    assert got.routes == [("169.254.1.1/32", ""), ("0.0.0.0/0", "169.254.1.1")]
    assert got.workload == "node--k8s-p-eth0"


@pytest.mark.parametrize("mtu", [0, 1, 127, 128, 1500, 9000, 2**31 - 1, -1, -(2**31)])
def test_interface_mtu_round_trip(mtu: int) -> None:
    # int32: a negative value (never sent by Felix) is a 10-byte varint; it must still decode.
    raw = fpb.SetupEndpointResponse(
        host_interface=fpb.Interface(name="cali1", mtu=mtu)
    ).SerializeToString()
    assert wire.setup_endpoint_response(raw).host_interface.mtu == mtu


def test_interface_mtu_of_a_felix_without_it() -> None:
    # An Interface with no field 4 (an older Felix, or MTU unknown) reads as 0.
    raw = fpb.SetupEndpointResponse(
        host_interface=fpb.Interface(name="cali1"), container_interface=fpb.Interface(name="e")
    ).SerializeToString()
    got = wire.setup_endpoint_response(raw)
    assert (got.host_interface.mtu, got.container_interface.mtu) == (0, 0)
    with pytest.raises(wire.WireError):  # field 4 as a string is not an int32
        wire.Interface.decode(b"\x22\x02ab")


def test_teardown_check_list() -> None:
    assert fpb.TeardownEndpointRequest.FromString(
        wire.teardown_endpoint_request(EP, "")
    ) == fpb.TeardownEndpointRequest(id=EP_PB)
    assert wire.teardown_endpoint_response(
        fpb.TeardownEndpointResponse(removed=True).SerializeToString()
    )
    assert not wire.teardown_endpoint_response(b"")
    assert fpb.CheckEndpointRequest.FromString(
        wire.check_endpoint_request(EP, "/x", ["10.0.0.5/32"])
    ) == fpb.CheckEndpointRequest(id=EP_PB, netns="/x", addresses=["10.0.0.5/32"])
    resp = fpb.CheckEndpointResponse(ok=False, problems=["no route", "no veth"])
    assert wire.check_endpoint_response(resp.SerializeToString()) == (
        False,
        ["no route", "no veth"],
    )
    listed = fpb.ListEndpointsResponse(
        endpoints=[
            fpb.Endpoint(
                id=EP_PB,
                host_interface="cali1",
                addresses=["10.0.0.5/32"],
                workload_endpoint="w",
                programmed=True,
            ),
            fpb.Endpoint(id=fpb.EndpointID(container_id="x")),
        ]
    )
    eps = wire.list_endpoints_response(listed.SerializeToString())
    assert [e.id for e in eps] == [EP, wire.EndpointID("x", "", "", "")]
    assert (eps[0].host_interface, eps[0].addresses, eps[0].workload, eps[0].programmed) == (
        "cali1",
        ["10.0.0.5/32"],
        "w",
        True,
    )
    assert fpb.ListEndpointsRequest.FromString(wire.list_endpoints_request()) == (
        fpb.ListEndpointsRequest()
    )


def test_health() -> None:
    assert health_pb2.HealthCheckRequest.FromString(wire.health_check_request("x")).service == "x"
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    assert wire.health_check_response(serving.SerializeToString()) == wire.HEALTH_SERVING


def test_method_paths_match_services() -> None:
    ipam = ipb.DESCRIPTOR.services_by_name["Ipam"]
    felix = fpb.DESCRIPTOR.services_by_name["Endpoints"]
    for path in (wire.AUTO_ASSIGN, wire.RELEASE_BY_HANDLE, wire.GET_ALLOCATIONS):
        assert path == f"/{ipam.full_name}/{ipam.methods_by_name[path.rsplit('/', 1)[1]].name}"
    for path in (
        wire.SETUP_ENDPOINT,
        wire.TEARDOWN_ENDPOINT,
        wire.CHECK_ENDPOINT,
        wire.LIST_ENDPOINTS,
    ):
        assert path == f"/{felix.full_name}/{felix.methods_by_name[path.rsplit('/', 1)[1]].name}"


def test_unknown_fields_are_skipped_and_garbage_rejected() -> None:
    # A newer daemon may add fields (of any wire type); older plugins must still read replies.
    extra = b"\x78\x05" + b"\x85\x01\x00\x00\x00\x00" + b"\x89\x01" + b"\x00" * 8
    ok = fpb.CheckEndpointResponse(ok=True).SerializeToString()
    assert wire.check_endpoint_response(ok + extra) == (True, [])
    for garbage in (b"\x0a\x05ab", b"\x08", b"\x0f"):
        with pytest.raises(wire.WireError):
            wire.check_endpoint_response(garbage)
