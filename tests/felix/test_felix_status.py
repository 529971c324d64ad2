"""calico-felix's Status service and readiness health, with the policy engine in the process."""

from __future__ import annotations

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from calico.felix.v1 import status_pb2, status_pb2_grpc
from services.felix.status_api import READINESS
from tests.felix.conftest import FelixHarness, ip_json
from tests.felix.helpers import eventually, put_namespace, put_pod, setup_request
from tests.felix.test_overlay_kernel import kernel_has_ipip

pytestmark = pytest.mark.netns


async def test_status_reports_the_programmed_endpoint_and_readiness(felix: FelixHarness) -> None:
    status = status_pb2_grpc.StatusStub(felix.channel)
    health = health_pb2_grpc.HealthStub(felix.channel)

    async def serving(service: str) -> bool:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    await eventually(lambda: serving(READINESS), bool)
    assert await serving("")
    before = await status.GetStatus(status_pb2.GetStatusRequest())
    assert before.in_sync and before.live and before.ready
    assert before.dataplane == "nftables"
    assert before.programmed_endpoints == 0

    await put_namespace(felix.datastore, "shop", {})
    await put_pod(felix.datastore, "shop", "web-1", {"app": "web"})
    pod = felix.new_pod_netns()
    await felix.stub.SetupEndpoint(
        setup_request("web-1", felix.netns_path(pod), ["10.65.0.9/26"], namespace="shop")
    )
    # SetupEndpoint answered only once policy was programmed: the count is already there.
    after = await status.GetStatus(status_pb2.GetStatusRequest())
    assert after.programmed_endpoints == 1
    assert after.known_endpoints == 1
    assert after.applies > before.applies


async def test_status_service_has_its_own_health_entry(
    felix: FelixHarness,
) -> None:
    # Registered under its proto name, like every other daemon's services.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health_pb2_grpc.HealthStub(felix.channel).Check(
            health_pb2.HealthCheckRequest(service="calico.felix.v1.NoSuchService")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    served = await health_pb2_grpc.HealthStub(felix.channel).Check(
        health_pb2.HealthCheckRequest(service="calico.felix.v1.Status")
    )
    assert served.status == health_pb2.HealthCheckResponse.SERVING


async def test_status_reports_the_overlay_and_ipip_support(felix: FelixHarness, node: str) -> None:
    """Without pools there is no overlay, but the round ran: the uplink MTU was detected and
    the kernel asked whether it has ipip (this one has not: Felix says so and runs on)."""
    status = status_pb2_grpc.StatusStub(felix.channel)

    async def first_round() -> status_pb2.OverlayStatus:
        return (await status.GetStatus(status_pb2.GetStatusRequest())).overlay

    overlay = await eventually(first_round, lambda o: o.rounds > 0)
    expected = "supported" if kernel_has_ipip(node) else "unsupported: kernel has no ipip module"
    assert overlay.ipip.state.startswith(expected), overlay.ipip.state
    assert not overlay.vxlan.device_present and not overlay.ipip.device_present
    assert overlay.vxlan.routes == overlay.ipip.routes == overlay.direct_routes == 0
    assert overlay.last_error == ""
    assert overlay.detected_mtu > 0 and overlay.pod_mtu == overlay.detected_mtu
    # Felix keeps running: it still answers and plumbs a pod.
    pod = felix.new_pod_netns()
    reply = await felix.stub.SetupEndpoint(
        setup_request("p", felix.netns_path(pod), ["10.65.0.7/26"])
    )
    assert reply.addresses == ["10.65.0.7/32"]
    (host,) = ip_json(node, "link", "show", "dev", reply.host_interface.name)
    assert host["mtu"] == overlay.pod_mtu  # the MTU the overlay manager chose
