"""Wiring calico-felix together inside the runtime (the part of main that needs a loop).

Order matters on start: the pod cache is loaded before existing endpoints are adopted (their
labels are refreshed from it), and both happen before the server accepts calls. On stop the
hooks run in reverse: the server stops first, then the manager, cache, reaper (which finishes
pending deletions), worker and datastore.
"""

from __future__ import annotations

import logging

from libcalico.config import DatastoreConfig
from libcalico.datastore import connect
from libcalico.runtime import ServiceRuntime
from services.felix.endpoint_api import SERVICE_NAME, EndpointsServicer, add_to_server
from services.felix.endpoint_dataplane import EndpointDataplane, KnownEndpointsDataplane
from services.felix.endpoint_manager import EndpointManager
from services.felix.endpoints.reaper import LinkReaper
from services.felix.endpoints.worker import PlumbingWorker
from services.felix.pod_cache import PodCache
from services.felix.workload_endpoints import WorkloadEndpointStore

log = logging.getLogger(__name__)

FALLBACK_MTU = 1500


async def build_felix(
    runtime: ServiceRuntime,
    ds_config: DatastoreConfig,
    *,
    node: str,
    mtu: int,
    policy_timeout: float,
    dataplane: EndpointDataplane | None = None,
) -> EndpointManager:
    datastore = await connect(ds_config)
    runtime.on_shutdown(datastore.close)
    worker = PlumbingWorker()
    await worker.start()
    runtime.on_shutdown(worker.close)
    reaper = LinkReaper()
    runtime.on_shutdown(reaper.close)
    if not mtu:
        mtu = await worker.default_route_mtu(FALLBACK_MTU)
    log.info("veth MTU %d", mtu)
    pods = PodCache(datastore)
    manager = EndpointManager(
        node=node,
        worker=worker,
        reaper=reaper,
        store=WorkloadEndpointStore(datastore),
        pods=pods,
        dataplane=dataplane or KnownEndpointsDataplane(),
        default_mtu=mtu,
        policy_timeout=policy_timeout,
    )
    pods.listener = manager
    await pods.start()
    runtime.on_shutdown(pods.close)
    await manager.adopt_existing()
    runtime.on_shutdown(manager.close)
    runtime.add(EndpointsServicer(manager), add_to_server, SERVICE_NAME)
    return manager
