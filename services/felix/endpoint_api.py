"""The calico.felix.v1.Endpoints gRPC service: proto in, EndpointManager, proto out.

Errors become status codes (see protos/calico/felix/v1/endpoints.proto): INVALID_ARGUMENT
naming the field, NOT_FOUND for a missing netns, DEADLINE_EXCEEDED when policy was not
programmed in time, UNAVAILABLE when the datastore cannot be reached, INTERNAL for a kernel
refusal (with the kernel's message).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import grpc.aio

from calico.felix.v1 import endpoints_pb2 as pb
from calico.felix.v1 import endpoints_pb2_grpc as pb_grpc
from libcalico.datastore import DatastoreError, DatastoreUnavailableError
from services.felix.endpoint_manager import EndpointManager, LocalEndpoint
from services.felix.endpoints.naming import HOST_VETH_MAC
from services.felix.endpoints.netlink import NetlinkError
from services.felix.endpoints.netns import NetnsError
from services.felix.endpoints.veth import BadPodNetnsError, PodNetnsNotFoundError, pod_routes
from services.felix.requests import (
    InvalidRequestError,
    check_addresses,
    check_endpoint_id,
    check_netns,
    check_setup,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "calico.felix.v1.Endpoints"
add_to_server = pb_grpc.add_EndpointsServicer_to_server


@asynccontextmanager
async def _status_on_error(context: grpc.aio.ServicerContext, what: str) -> AsyncIterator[None]:  # type: ignore[type-arg]
    try:
        yield
    except InvalidRequestError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except BadPodNetnsError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"netns: {exc}")
    except PodNetnsNotFoundError as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"netns: {exc.strerror}")
    except TimeoutError as exc:
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"{what}: policy not programmed in time ({exc})"
        )
    except DatastoreUnavailableError as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{what}: datastore: {exc}")
    except DatastoreError as exc:
        await context.abort(grpc.StatusCode.ABORTED, f"{what}: datastore: {exc}")
    except (NetlinkError, NetnsError) as exc:
        await context.abort(grpc.StatusCode.INTERNAL, f"{what}: kernel: {exc}")


def _endpoint_id(record: LocalEndpoint) -> pb.EndpointID:
    wep = record.wep
    return pb.EndpointID(
        container_id=wep.container_id,
        namespace=wep.namespace,
        pod=wep.pod,
        interface_name=wep.endpoint,
    )


def setup_response(record: LocalEndpoint) -> pb.SetupEndpointResponse:
    wep = record.wep
    return pb.SetupEndpointResponse(
        host_interface=pb.Interface(
            name=wep.interface_name, mac=HOST_VETH_MAC, mtu=record.host_mtu
        ),
        container_interface=pb.Interface(
            name=wep.endpoint, mac=wep.mac, sandbox=record.netns, mtu=record.pod_mtu
        ),
        addresses=list(wep.ip_networks),
        routes=[
            pb.Route(dst=str(r.dst), gateway=str(r.gateway) if r.gateway else "")
            for r in pod_routes(wep.ips())
        ],
        workload_endpoint=wep.name,
    )


class EndpointsServicer(pb_grpc.EndpointsServicer):
    def __init__(self, manager: EndpointManager) -> None:
        self._manager = manager

    async def SetupEndpoint(
        self,
        request: pb.SetupEndpointRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.SetupEndpointResponse:
        started = time.perf_counter()
        async with _status_on_error(context, "setup"):
            req = check_setup(request)
            record = await self._manager.setup(req)
            log.info(
                "endpoint set up",
                extra={
                    "pod": str(req.id.pod_key),
                    "container_id": req.id.container_id,
                    "interface": record.wep.interface_name,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return setup_response(record)
        raise AssertionError("unreachable: abort() raises")

    async def TeardownEndpoint(
        self,
        request: pb.TeardownEndpointRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.TeardownEndpointResponse:
        started = time.perf_counter()
        async with _status_on_error(context, "teardown"):
            endpoint_id = check_endpoint_id(request.id)
            removed = await self._manager.teardown(endpoint_id)
            log.info(
                "endpoint torn down",
                extra={
                    "pod": str(endpoint_id.pod_key),
                    "container_id": endpoint_id.container_id,
                    "removed": removed,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return pb.TeardownEndpointResponse(removed=removed)
        raise AssertionError("unreachable: abort() raises")

    async def CheckEndpoint(
        self,
        request: pb.CheckEndpointRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.CheckEndpointResponse:
        async with _status_on_error(context, "check"):
            endpoint_id = check_endpoint_id(request.id)
            netns = check_netns(request.netns)
            ips = check_addresses(request.addresses) if request.addresses else ()
            problems = await self._manager.check(endpoint_id, netns, ips)
            return pb.CheckEndpointResponse(ok=not problems, problems=problems)
        raise AssertionError("unreachable: abort() raises")

    async def ListEndpoints(
        self,
        request: pb.ListEndpointsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.ListEndpointsResponse:
        return pb.ListEndpointsResponse(
            endpoints=[
                pb.Endpoint(
                    id=_endpoint_id(record),
                    host_interface=record.wep.interface_name,
                    addresses=list(record.wep.ip_networks),
                    workload_endpoint=record.wep.name,
                    programmed=record.programmed,
                )
                for record in self._manager.endpoints()
            ]
        )
