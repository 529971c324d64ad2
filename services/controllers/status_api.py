"""calico.controllers.v1.KubeControllers.GetStatus, and health that follows leadership.

The overall health status ("") is liveness (SERVING while the process runs its election);
the service LEADING is SERVING while this replica holds the lease, polled twice a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from calico.controllers.v1 import controllers_pb2, controllers_pb2_grpc
from libcalico.runtime import ServiceRuntime
from services.controllers.guarded import GuardedDatastore
from services.controllers.leader import LeaderElector
from services.controllers.manager import ControllerManager

SERVICE_NAME = "calico.controllers.v1.KubeControllers"
LEADING = "calico.controllers.v1.Leading"
HEALTH_POLL_S = 0.5


class StatusServicer(controllers_pb2_grpc.KubeControllersServicer):
    def __init__(
        self,
        elector: LeaderElector,
        manager: ControllerManager,
        datastore: GuardedDatastore,
        datastore_type: str,
    ) -> None:
        self._elector = elector
        self._manager = manager
        self._datastore = datastore
        self._datastore_type = datastore_type

    def status(self) -> controllers_pb2.ControllersStatus:
        manager = self._manager
        node = manager.node_controller
        gc = node.gc if node is not None else None
        return controllers_pb2.ControllersStatus(
            identity=self._elector.identity,
            leading=self._elector.leadership.leading,
            lease_holder=self._elector.holder,
            acquisitions=self._elector.acquisitions,
            losses=self._elector.losses,
            datastore_type=self._datastore_type,
            running=manager.running,
            writes=self._datastore.writes,
            refused_writes=self._datastore.refused,
            leak_candidates=len(gc.sightings) if gc is not None else 0,
            leaks_released=gc.released_total if gc is not None else 0,
            gc_scans=gc.scans if gc is not None else 0,
            nodes_cleaned=node.nodes_cleaned if node is not None else 0,
            leak_grace_seconds=gc.grace_seconds if gc is not None else 0.0,
            last_error=manager.last_error,
        )

    async def GetStatus(
        self,
        request: controllers_pb2.GetStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> controllers_pb2.ControllersStatus:
        return self.status()


def serve_status(runtime: ServiceRuntime, servicer: StatusServicer, elector: LeaderElector) -> None:
    """Register the status service and keep the LEADING health status in step."""
    runtime.add(servicer, controllers_pb2_grpc.add_KubeControllersServicer_to_server, SERVICE_NAME)

    async def follow_leadership() -> None:
        await runtime.wait_started()
        reported: bool | None = None
        while True:
            leading = elector.leadership.leading
            if leading != reported:
                await runtime.set_serving(LEADING, leading)
                reported = leading
            await asyncio.sleep(HEALTH_POLL_S)

    task = asyncio.get_running_loop().create_task(follow_leadership())

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    runtime.on_shutdown(stop)
