"""The calico.ipam.v1.Ipam gRPC servicer: request parsing, the allocator, status codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import NoReturn, TypeVar

import grpc
import grpc.aio

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from libcalico.datastore import DatastoreUnavailableError
from libcalico.ipam.release import ReleaseSpec
from services.ipam.allocator import Allocator, AssignRequest, parse_ip
from services.ipam.errors import (
    AddressInUseError,
    InvalidRequestError,
    IpamError,
    PoolsExhaustedError,
    TooManyConflictsError,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "calico.ipam.v1.Ipam"
T = TypeVar("T")
Context = grpc.aio.ServicerContext[object, object]

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (PoolsExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AddressInUseError, grpc.StatusCode.ALREADY_EXISTS),
    (TooManyConflictsError, grpc.StatusCode.ABORTED),
    (DatastoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
]


def status_of(exc: Exception) -> grpc.StatusCode:
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


class IpamServicer(ipam_pb2_grpc.IpamServicer):
    def __init__(self, allocator: Allocator) -> None:
        self.allocator = allocator

    async def _call(self, context: Context, work: Awaitable[T]) -> T:
        try:
            return await work
        except (IpamError, DatastoreUnavailableError) as exc:
            await self._abort(context, exc)
        except Exception as exc:
            log.exception("IPAM request failed")
            await self._abort(context, exc)

    @staticmethod
    async def _abort(context: Context, exc: Exception) -> NoReturn:
        await context.abort(status_of(exc), str(exc) or type(exc).__name__)
        raise AssertionError("unreachable")  # abort raises

    async def AutoAssign(
        self, request: ipam_pb2.AutoAssignRequest, context: Context
    ) -> ipam_pb2.AutoAssignResponse:
        req = AssignRequest(
            num_ipv4=request.num_ipv4,
            num_ipv6=request.num_ipv6,
            handle_id=request.handle_id,
            attributes=dict(request.attributes),
            ipv4_pools=list(request.ipv4_pools),
            ipv6_pools=list(request.ipv6_pools),
        )
        result = await self._call(context, self.allocator.auto_assign(req))
        return ipam_pb2.AutoAssignResponse(
            ipv4=[str(i) for i in result.ipv4], ipv6=[str(i) for i in result.ipv6]
        )

    async def AssignIP(
        self, request: ipam_pb2.AssignIPRequest, context: Context
    ) -> ipam_pb2.AssignIPResponse:
        work = self.allocator.assign_ip(request.ip, request.handle_id, dict(request.attributes))
        return ipam_pb2.AssignIPResponse(ip=str(await self._call(context, work)))

    async def ReleaseIPs(
        self, request: ipam_pb2.ReleaseIPsRequest, context: Context
    ) -> ipam_pb2.ReleaseIPsResponse:
        try:
            specs = [
                ReleaseSpec(
                    ip=parse_ip(o.ip),
                    handle_id=o.handle_id or None,
                    sequence_number=o.sequence_number if o.has_sequence_number else None,
                )
                for o in request.ips
            ]
        except InvalidRequestError as exc:
            await self._abort(context, exc)
        result = await self._call(context, self.allocator.release_ips(specs))
        return ipam_pb2.ReleaseIPsResponse(
            released=[str(i) for i in result.released],
            unallocated=[str(i) for i in result.unallocated],
        )

    async def ReleaseByHandle(
        self, request: ipam_pb2.ReleaseByHandleRequest, context: Context
    ) -> ipam_pb2.ReleaseByHandleResponse:
        released = await self._call(context, self.allocator.release_by_handle(request.handle_id))
        return ipam_pb2.ReleaseByHandleResponse(released=[str(i) for i in released])

    async def GetAllocations(
        self, request: ipam_pb2.GetAllocationsRequest, context: Context
    ) -> ipam_pb2.GetAllocationsResponse:
        ips = await self._call(context, self.allocator.get_allocations(request.handle_id))
        return ipam_pb2.GetAllocationsResponse(ips=[str(i) for i in ips])

    async def ListHandles(
        self, request: ipam_pb2.ListHandlesRequest, context: Context
    ) -> ipam_pb2.ListHandlesResponse:
        handles = await self._call(context, self.allocator.list_node_handles(request.handle_prefix))
        return ipam_pb2.ListHandlesResponse(
            handles=[
                ipam_pb2.ListHandlesResponse.Handle(handle_id=h, ips=[str(i) for i in ips])
                for h, ips in handles.items()
            ]
        )


def add_to_server(servicer: IpamServicer, server: grpc.aio.Server) -> None:
    ipam_pb2_grpc.add_IpamServicer_to_server(servicer, server)
