"""Felix's status over gRPC (calico.felix.v1.Status: the policy engine's and the overlay's)
and health from the policy engine.

The overall health status ("") follows the engine's liveness; the service named
READINESS follows its readiness (in sync and reconciled), polled every second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import grpc

from calico.felix.v1 import status_pb2, status_pb2_grpc
from libcalico.runtime import ServiceRuntime
from services.felix.policy.engine import PolicyEngine
from services.felix.vxlan.intent import DEVICE, IPIP_DEVICE
from services.felix.vxlan.manager import OverlayManager

SERVICE_NAME = "calico.felix.v1.Status"
READINESS = "calico.felix.v1.Readiness"
HEALTH_POLL_S = 1.0


def overlay_status(overlay: OverlayManager) -> status_pb2.OverlayStatus:
    done = overlay.programmed
    routes = Counter(route.device for route in done.routes.values())
    vxlan, ipip = done.device, done.ipip
    return status_pb2.OverlayStatus(
        vxlan=status_pb2.VxlanStatus(
            device_present=vxlan is not None,
            vtep_address=vxlan.vtep_ip if vxlan else "",
            vtep_mac=vxlan.vtep_mac if vxlan else "",
            mtu=overlay.vxlan_mtu or 0,
            routes=routes[DEVICE],
            problem=overlay.vtep_problem,
        ),
        ipip=status_pb2.IpipStatus(
            state=overlay.ipip_state,
            device_present=ipip is not None,
            address=ipip.address if ipip else "",
            mtu=ipip.mtu if ipip else 0,
            routes=routes[IPIP_DEVICE],
            problem=overlay.ipip_addr_problem,
        ),
        direct_routes=routes[None],
        detected_mtu=overlay.detected_mtu or 0,
        pod_mtu=done.pod_mtu if overlay.rounds else 0,
        last_error=overlay.last_error,
        rounds=overlay.rounds,
        last_repairs=overlay.last_repairs,
    )


class StatusServicer(status_pb2_grpc.StatusServicer):
    def __init__(self, engine: PolicyEngine, overlay: OverlayManager | None = None) -> None:
        self._engine = engine
        self._overlay = overlay

    async def GetStatus(
        self,
        request: status_pb2.GetStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> status_pb2.FelixStatus:
        s = self._engine.status()
        return status_pb2.FelixStatus(
            in_sync=s.in_sync,
            dataplane=s.dataplane,
            programmed_endpoints=s.endpoints,
            known_endpoints=s.known_endpoints,
            active_policies=s.active_policies,
            ip_sets=s.ipsets,
            last_apply_seconds=s.last_apply_seconds,
            applies=s.applies,
            last_refresh_repairs=s.last_refresh_repairs,
            live=s.live,
            ready=s.ready,
            overlay=overlay_status(self._overlay) if self._overlay is not None else None,
        )


def serve_status(
    runtime: ServiceRuntime, engine: PolicyEngine, overlay: OverlayManager | None = None
) -> None:
    """Register the Status service and keep health in step with the engine."""
    runtime.add(
        StatusServicer(engine, overlay), status_pb2_grpc.add_StatusServicer_to_server, SERVICE_NAME
    )

    async def follow_health() -> None:
        reported: tuple[bool, bool] | None = None
        while True:
            state = (engine.live, engine.ready)
            if state != reported:
                await runtime.set_serving("", state[0])
                await runtime.set_serving(READINESS, state[1])
                reported = state
            await asyncio.sleep(HEALTH_POLL_S)

    task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal task
        await runtime.wait_started()
        task = asyncio.create_task(follow_health())

    starter = asyncio.get_running_loop().create_task(start())

    async def stop() -> None:
        for t in (starter, task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    runtime.on_shutdown(stop)
