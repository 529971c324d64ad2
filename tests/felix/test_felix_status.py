"""calico-felix's Status service and readiness health, with the policy engine in the process."""

from __future__ import annotations

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from calico.felix.v1 import status_pb2, status_pb2_grpc
from services.felix.status_api import READINESS
from tests.felix.conftest import FelixHarness
from tests.felix.helpers import eventually, put_namespace, put_pod, setup_request

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
