"""Felix's status over gRPC (calico.felix.v1.Status) and health from the policy engine.

The overall health status ("") follows the engine's liveness; the service named
READINESS follows its readiness (in sync and reconciled), polled every second.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from calico.felix.v1 import status_pb2, status_pb2_grpc
from libcalico.runtime import ServiceRuntime
from services.felix.policy.engine import PolicyEngine

SERVICE_NAME = "calico.felix.v1.Status"
READINESS = "calico.felix.v1.Readiness"
HEALTH_POLL_S = 1.0


class StatusServicer(status_pb2_grpc.StatusServicer):
    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine

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
        )


def serve_status(runtime: ServiceRuntime, engine: PolicyEngine) -> None:
    """Register the Status service and keep health in step with the engine."""
    runtime.add(StatusServicer(engine), status_pb2_grpc.add_StatusServicer_to_server, SERVICE_NAME)

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
