"""Real grpc.aio servers implementing ipam.proto and endpoints.proto (plus grpc.health.v1) on
Unix sockets, with in-memory state, a call log and injectable failures: the peers for the
plugin's unit tests until (and next to) the real calico-ipamd and calico-felix.

The servers run on an event loop in a thread of their own, so tests can exec the plugin
synchronously while the servers answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from calico.felix.v1 import endpoints_pb2, endpoints_pb2_grpc
from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
FAKE_FELIX_MTU = 1450  # the fake's "detected" MTU, unlike any default, so tests see it used


@dataclass
class Call:
    method: str
    request: object
    metadata: dict[str, str]


@dataclass
class FakeState:
    """Shared by both fakes: what they were asked, what they hold, what they should fail."""

    calls: list[Call] = field(default_factory=list)
    allocations: dict[str, list[str]] = field(default_factory=dict)  # handle -> CIDRs
    endpoints: dict[tuple[str, str], endpoints_pb2.Endpoint] = field(default_factory=dict)
    fail: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)  # method -> error
    check_problems: list[str] = field(default_factory=list)
    next_host: int = 2

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]


async def _record(state: FakeState, method: str, request: object, context: Ctx) -> None:
    metadata = {k: str(v) for k, v in (context.invocation_metadata() or ())}
    state.calls.append(Call(method, request, metadata))
    if method in state.fail:
        code, message = state.fail[method]
        await context.abort(code, message)


class FakeIpam(ipam_pb2_grpc.IpamServicer):
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def AutoAssign(
        self, request: ipam_pb2.AutoAssignRequest, context: Ctx
    ) -> ipam_pb2.AutoAssignResponse:
        await _record(self.state, "AutoAssign", request, context)
        if not request.handle_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "handle_id is required")
        v4 = []
        v6 = []
        for _ in range(request.num_ipv4):
            v4.append(f"10.65.0.{self.state.next_host}/26")
            self.state.next_host += 1
        for _ in range(request.num_ipv6):
            v6.append(f"fd00:65::{self.state.next_host:x}/122")
            self.state.next_host += 1
        self.state.allocations.setdefault(request.handle_id, []).extend(v4 + v6)
        return ipam_pb2.AutoAssignResponse(ipv4=v4, ipv6=v6)

    async def AssignIP(
        self, request: ipam_pb2.AssignIPRequest, context: Ctx
    ) -> ipam_pb2.AssignIPResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the plugin never assigns one IP")
        raise AssertionError("unreachable")

    async def ReleaseIPs(
        self, request: ipam_pb2.ReleaseIPsRequest, context: Ctx
    ) -> ipam_pb2.ReleaseIPsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the plugin releases by handle")
        raise AssertionError("unreachable")

    async def ReleaseByHandle(
        self, request: ipam_pb2.ReleaseByHandleRequest, context: Ctx
    ) -> ipam_pb2.ReleaseByHandleResponse:
        await _record(self.state, "ReleaseByHandle", request, context)
        released = self.state.allocations.pop(request.handle_id, [])
        return ipam_pb2.ReleaseByHandleResponse(released=[a.split("/")[0] for a in released])

    async def GetAllocations(
        self, request: ipam_pb2.GetAllocationsRequest, context: Ctx
    ) -> ipam_pb2.GetAllocationsResponse:
        await _record(self.state, "GetAllocations", request, context)
        held = self.state.allocations.get(request.handle_id, [])
        return ipam_pb2.GetAllocationsResponse(ips=[a.split("/")[0] for a in held])

    async def ListHandles(
        self, request: ipam_pb2.ListHandlesRequest, context: Ctx
    ) -> ipam_pb2.ListHandlesResponse:
        await _record(self.state, "ListHandles", request, context)
        Handle = ipam_pb2.ListHandlesResponse.Handle
        return ipam_pb2.ListHandlesResponse(
            handles=[
                Handle(handle_id=handle, ips=ips)
                for handle, ips in sorted(self.state.allocations.items())
                if handle.startswith(request.handle_prefix)
            ]
        )


class FakeFelix(endpoints_pb2_grpc.EndpointsServicer):
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def SetupEndpoint(
        self, request: endpoints_pb2.SetupEndpointRequest, context: Ctx
    ) -> endpoints_pb2.SetupEndpointResponse:
        await _record(self.state, "SetupEndpoint", request, context)
        if not request.netns:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "netns is required")
        addresses = [a.split("/")[0] + ("/128" if ":" in a else "/32") for a in request.addresses]
        host_if = "cali" + request.id.container_id[:11]
        self.state.endpoints[(request.id.container_id, request.id.interface_name)] = (
            endpoints_pb2.Endpoint(
                id=request.id,
                host_interface=host_if,
                addresses=addresses,
                workload_endpoint=f"node-k8s-{request.id.pod}-eth0",
                programmed=True,
            )
        )
        routes = [endpoints_pb2.Route(dst="169.254.1.1/32")]
        routes.append(endpoints_pb2.Route(dst="0.0.0.0/0", gateway="169.254.1.1"))
        if any(":" in a for a in addresses):
            routes.append(endpoints_pb2.Route(dst="::/0", gateway="fe80::ecee:eeff:feee:eeee"))
        # As the real Felix: both ends get the request's MTU, else Felix's own.
        mtu = request.mtu or FAKE_FELIX_MTU
        return endpoints_pb2.SetupEndpointResponse(
            host_interface=endpoints_pb2.Interface(name=host_if, mac="ee:ee:ee:ee:ee:ee", mtu=mtu),
            container_interface=endpoints_pb2.Interface(
                name=request.id.interface_name,
                mac="0a:58:0a:41:00:02",
                sandbox=request.netns,
                mtu=mtu,
            ),
            addresses=addresses,
            routes=routes,
            workload_endpoint=f"node-k8s-{request.id.pod}-eth0",
        )

    async def TeardownEndpoint(
        self, request: endpoints_pb2.TeardownEndpointRequest, context: Ctx
    ) -> endpoints_pb2.TeardownEndpointResponse:
        await _record(self.state, "TeardownEndpoint", request, context)
        key = (request.id.container_id, request.id.interface_name)
        removed = self.state.endpoints.pop(key, None) is not None
        return endpoints_pb2.TeardownEndpointResponse(removed=removed)

    async def CheckEndpoint(
        self, request: endpoints_pb2.CheckEndpointRequest, context: Ctx
    ) -> endpoints_pb2.CheckEndpointResponse:
        await _record(self.state, "CheckEndpoint", request, context)
        ep = self.state.endpoints.get((request.id.container_id, request.id.interface_name))
        problems = list(self.state.check_problems)
        if ep is None:
            problems.append(f"no endpoint for {request.id.container_id}")
        elif sorted(ep.addresses) != sorted(request.addresses):
            problems.append(f"addresses {list(ep.addresses)} != {list(request.addresses)}")
        return endpoints_pb2.CheckEndpointResponse(ok=not problems, problems=problems)

    async def ListEndpoints(
        self, request: endpoints_pb2.ListEndpointsRequest, context: Ctx
    ) -> endpoints_pb2.ListEndpointsResponse:
        await _record(self.state, "ListEndpoints", request, context)
        return endpoints_pb2.ListEndpointsResponse(endpoints=list(self.state.endpoints.values()))


class FakeDaemons:
    """Both fakes on Unix sockets in a temp dir, served from a background event loop."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cni-fake-"))
        self.ipam_socket = str(self.dir / "ipam.sock")
        self.felix_socket = str(self.dir / "felix.sock")
        self.state = FakeState()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[grpc.aio.Server] = []
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]

    def _run(self, coro: object) -> object:
        fut: Future[object] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return fut.result(timeout=20)

    async def _start_server(self, path: str, which: str) -> grpc.aio.Server:
        server = grpc.aio.server()
        if which == "ipam":
            ipam_pb2_grpc.add_IpamServicer_to_server(FakeIpam(self.state), server)
        else:
            endpoints_pb2_grpc.add_EndpointsServicer_to_server(FakeFelix(self.state), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        return server

    def start(self) -> FakeDaemons:
        self._thread.start()
        for path, which in ((self.ipam_socket, "ipam"), (self.felix_socket, "felix")):
            server = self._run(self._start_server(path, which))
            assert isinstance(server, grpc.aio.Server)
            self._servers.append(server)
        return self

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self._run(self.health.set("", status))

    def stop(self) -> None:
        for server in self._servers:
            self._run(server.stop(None))
        self._servers.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def fake_daemons() -> Iterator[FakeDaemons]:
    daemons = FakeDaemons().start()
    try:
        yield daemons
    finally:
        daemons.stop()
