"""Wiring calico-felix together inside the runtime (the part of main that needs a loop).

Order matters on start: the pod cache is loaded before existing endpoints are adopted (their
labels are refreshed from it), and both happen before the server accepts calls. On stop the
hooks run in reverse: the server stops first, then the manager, cache, reaper (which finishes
pending deletions), worker and datastore.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from libcalico.config import DatastoreConfig
from libcalico.datastore import connect
from libcalico.runtime import ServiceRuntime
from libcalico.runtime.tasks import cancel_and_wait
from libcalico.syncer.api import Syncer, SyncerUpdate
from libcalico.syncer.selection import create_syncer
from services.felix.endpoint_api import SERVICE_NAME, EndpointsServicer, add_to_server
from services.felix.endpoint_dataplane import (
    EndpointDataplane,
    KnownEndpointsDataplane,
    PolicyEngineDataplane,
)
from services.felix.endpoint_manager import EndpointManager
from services.felix.endpoints.reaper import LinkReaper
from services.felix.endpoints.sysctls import PROC_SYS_NET
from services.felix.endpoints.worker import PlumbingWorker
from services.felix.natout.manager import NatOutgoingManager
from services.felix.pod_cache import PodCache
from services.felix.policy.agent import start_policy_engine
from services.felix.policy.engine import DEFAULT_REFRESH_INTERVAL_S
from services.felix.status_api import serve_status
from services.felix.syncer_tap import ObservedSyncer
from services.felix.vxlan.manager import OverlayManager
from services.felix.vxlan.view import VxlanView
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
    ipam_socket: str,
    policy_dataplane: str | None = "nftables",
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL_S,
    sysctl_dir: str = PROC_SYS_NET,
) -> EndpointManager:
    """`policy_dataplane` None runs without the policy engine (endpoint plumbing only);
    `sysctl_dir` is where /proc/sys/net is seen (endpoints/sysctls.py)."""
    datastore = await connect(ds_config)
    runtime.on_shutdown(datastore.close)
    dataplane: EndpointDataplane = KnownEndpointsDataplane()
    # One syncer stream feeds the policy engine and, beside it, one view of nodes, pools and
    # blocks (each update parsed once) that the VXLAN and outgoing-NAT managers both read.
    topology = VxlanView()
    vxlan = OverlayManager(topology, datastore, ipam_socket, node, refresh_interval)
    vxlan.start()
    runtime.on_shutdown(vxlan.stop)
    woken = [vxlan.wake]
    if policy_dataplane is not None:
        natout = NatOutgoingManager(topology, policy_dataplane, refresh_interval)
        natout.start()
        runtime.on_shutdown(natout.stop)
        woken.append(natout.wake)

    def observe(batch: list[SyncerUpdate]) -> None:
        if topology.apply(batch) and topology.in_sync:
            for wake in woken:
                wake()

    syncer = ObservedSyncer(create_syncer(datastore, node, "felix"), [observe])
    if policy_dataplane is not None:
        # Policy first: an ADD is answered only once its endpoint's rules are in the kernel.
        engine = await start_policy_engine(
            datastore, node, policy_dataplane, refresh_interval=refresh_interval, syncer=syncer
        )
        runtime.on_shutdown(engine.stop)
        serve_status(runtime, engine, vxlan)
        dataplane = PolicyEngineDataplane(engine)
    else:
        runtime.on_shutdown(_drain(syncer))
    worker = PlumbingWorker(sysctl_dir)
    await worker.start()
    runtime.on_shutdown(worker.close)
    reaper = LinkReaper()
    runtime.on_shutdown(reaper.close)
    explicit_mtu = mtu
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
        dataplane=dataplane,
        default_mtu=mtu,
        policy_timeout=policy_timeout,
    )
    pods.listener = manager

    def overlay_mtu(pod_mtu: int) -> None:
        # An explicit --mtu/FELIX_VETHMTU wins; else the overlay manager's choice (Calico's
        # veth MTU: the smallest of the enabled encapsulations', else the detected MTU).
        manager.default_mtu = explicit_mtu or pod_mtu
        log.info("veth MTU for new pods %d", manager.default_mtu)

    vxlan.on_mtu(overlay_mtu)
    await pods.start()
    runtime.on_shutdown(pods.close)
    await manager.adopt_existing()
    runtime.on_shutdown(manager.close)
    runtime.add(EndpointsServicer(manager), add_to_server, SERVICE_NAME)
    return manager


def _drain(syncer: Syncer) -> Callable[[], Awaitable[None]]:
    """Without a policy engine nothing else reads the syncer: read it for the observers.
    Returns the stop hook."""

    async def consume() -> None:
        async for _batch in syncer.updates():
            pass

    task = asyncio.create_task(consume(), name="felix-syncer")

    async def stop() -> None:
        await cancel_and_wait([task])
        await syncer.close()

    return stop
