"""The life of local endpoints: setup, teardown, check, restart, label sync.

Per pod (namespace, name) one lock serialises everything, so an ADD, a DEL and a label
update for the same pod never interleave. State lives in two places only: the kernel (host
veth `caliXXXXXXXXXXX`, named from the pod) and the pod's WorkloadEndpoint in the datastore;
the in-memory table is rebuilt from both on start.

Invariants:
- SetupEndpoint answers only after the dataplane reports the endpoint programmed; a failed
  setup removes what it made (veth, WorkloadEndpoint) before answering.
- A DEL for a container that no longer owns the pod's endpoint (a newer ADD replaced it)
  removes nothing.
- A restart touches no interface or route of a known endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass

from services.felix.endpoint_dataplane import EndpointDataplane
from services.felix.endpoints.naming import host_veth_name
from services.felix.endpoints.reaper import LinkReaper
from services.felix.endpoints.veth import PodInterfaceSpec, host_network
from services.felix.endpoints.worker import PlumbingWorker
from services.felix.model import EndpointID, IPAddress, PodKey, WorkloadEndpoint
from services.felix.pod_cache import PodCache, PodCacheListener
from services.felix.requests import SetupRequest
from services.felix.workload_endpoints import (
    WorkloadEndpointStore,
    build_workload_endpoint,
    relabelled,
)

log = logging.getLogger(__name__)

DEFAULT_POLICY_TIMEOUT = 10.0


@dataclass
class LocalEndpoint:
    wep: WorkloadEndpoint
    revision: int  # of the WorkloadEndpoint as Felix last wrote it
    netns: str  # "" when adopted after a restart (the CNI passes it on each call)
    plumbed: bool  # the host veth exists
    programmed: bool
    # The veth ends' MTUs as the kernel reported them at setup (0: not read, e.g. adopted
    # after a restart); SetupEndpoint reports them, the CNI plugin puts them in its result.
    host_mtu: int = 0
    pod_mtu: int = 0

    @property
    def key(self) -> PodKey:
        return self.wep.pod_key


class EndpointOwnedElsewhereError(Exception):
    """The pod's endpoint belongs to another container ID."""


class EndpointManager(PodCacheListener):
    def __init__(
        self,
        *,
        node: str,
        worker: PlumbingWorker,
        reaper: LinkReaper,
        store: WorkloadEndpointStore,
        pods: PodCache,
        dataplane: EndpointDataplane,
        default_mtu: int,
        policy_timeout: float = DEFAULT_POLICY_TIMEOUT,
    ) -> None:
        self.node = node
        self._worker = worker
        self._reaper = reaper
        self._store = store
        self._pods = pods
        self._dataplane = dataplane
        self.default_mtu = default_mtu
        self.policy_timeout = policy_timeout
        self._endpoints: dict[PodKey, LocalEndpoint] = {}
        self._locks: defaultdict[PodKey, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._refreshes: dict[PodKey, asyncio.Task[None]] = {}
        self._dirty: set[PodKey] = set()  # changed while their refresh was running

    # ---- what is known ----

    def endpoints(self) -> list[LocalEndpoint]:
        return sorted(self._endpoints.values(), key=lambda e: (e.key.namespace, e.key.pod))

    def get(self, key: PodKey) -> LocalEndpoint | None:
        return self._endpoints.get(key)

    # ---- start: find existing endpoints again ----

    async def adopt_existing(self) -> None:
        """Take over this node's endpoints as a previous Felix left them, changing nothing.

        An endpoint whose host veth exists is handed to the dataplane again; one whose veth is
        gone stays listed (unplumbed) until its DEL. A `cali*` link without endpoint that is
        down was being deleted when the previous Felix stopped: delete it. One that is up is
        a setup cut short before it answered; its DEL (which the runtime retries) removes it.
        """
        links = {link.name: link for link in await self._worker.host_veths()}
        for wep, revision in await self._store.list_for_node(self.node):
            link = links.pop(wep.interface_name, None)
            if wep.pod_key in self._endpoints and link is None:
                continue  # a duplicate for the same pod; keep the plumbed one
            record = LocalEndpoint(wep, revision, "", plumbed=link is not None, programmed=False)
            self._endpoints[wep.pod_key] = record
            if record.plumbed:
                try:
                    await self._dataplane.endpoint_added(wep, self.policy_timeout)
                    record.programmed = True
                except TimeoutError:
                    log.warning("policy for adopted endpoint %s not programmed yet", wep.name)
            else:
                log.warning("endpoint %s has no interface %s", wep.name, wep.interface_name)
        for name, link in links.items():
            if not link.up:
                self._reaper.schedule(name)
            else:
                log.warning("interface %s has no WorkloadEndpoint; left for its DEL", name)
        log.info("adopted %d existing endpoints", len(self._endpoints))
        for key in list(self._endpoints):
            self._schedule_refresh(key)

    # ---- setup ----

    def _spec(
        self, endpoint_id: EndpointID, netns: str, ips: tuple[IPAddress, ...], mtu: int
    ) -> PodInterfaceSpec:
        return PodInterfaceSpec(
            host_name=host_veth_name(endpoint_id.namespace, endpoint_id.pod),
            netns=netns,
            interface_name=endpoint_id.interface_name,
            ips=ips,
            mtu=mtu or self.default_mtu,
        )

    async def setup(self, req: SetupRequest) -> LocalEndpoint:
        key = req.id.pod_key
        spec = self._spec(req.id, req.netns, req.ips, req.mtu)
        timeout = req.policy_timeout or self.policy_timeout
        async with self._locks[key]:
            await self._reaper.wait(spec.host_name)
            existing = self._endpoints.get(key)
            if existing is not None and await self._converged(existing, req, spec):
                if not existing.programmed:
                    await self._dataplane.endpoint_added(existing.wep, timeout)
                    existing.programmed = True
                existing.netns = req.netns
                return existing
            if existing is not None:
                await self._forget(existing)
            plumbed = await self._worker.setup(spec)
            wep: WorkloadEndpoint | None = None
            try:
                wep = build_workload_endpoint(
                    node=self.node,
                    endpoint_id=req.id,
                    host_interface=plumbed.host_name,
                    pod_mac=plumbed.pod_mac,
                    ip_networks=[str(n) for n in plumbed.addresses],
                    pod=await self._pods.fetch_pod(key),
                    namespace=await self._pods.fetch_namespace(key.namespace),
                )
                wep, revision = await self._store.create_or_replace(wep)
                record = LocalEndpoint(
                    wep,
                    revision,
                    req.netns,
                    plumbed=True,
                    programmed=False,
                    host_mtu=plumbed.host_mtu,
                    pod_mtu=plumbed.pod_mtu,
                )
                self._endpoints[key] = record
                # The dataplane promises a TimeoutError itself; the outer bound guards against
                # one that does not keep that promise.
                async with asyncio.timeout(timeout + 1.0):
                    await self._dataplane.endpoint_added(wep, timeout)
                record.programmed = True
                return record
            except BaseException:
                await self._undo_setup(key, spec.host_name, wep)
                raise

    async def _converged(
        self, existing: LocalEndpoint, req: SetupRequest, spec: PodInterfaceSpec
    ) -> bool:
        """A repeated ADD for the same container whose interface is intact (and has the MTU
        the request names, if it names one). Refreshes the record's MTUs from the kernel, so
        the answer reports what the veths have now, also for an endpoint adopted on start."""
        wep = existing.wep
        if (
            wep.container_id != req.id.container_id
            or wep.endpoint != req.id.interface_name
            or set(wep.ips()) != set(req.ips)
            or not existing.plumbed
        ):
            return False
        if await self._worker.check(spec):
            return False
        existing.host_mtu, existing.pod_mtu = await self._worker.interface_mtus(spec)
        # Without an explicit MTU the pod keeps the one it was made with, even if Felix's
        # default has changed since (an overlay turned on): a repeated ADD does not recreate.
        return not req.mtu or existing.host_mtu == existing.pod_mtu == req.mtu

    async def _undo_setup(self, key: PodKey, host_name: str, wep: WorkloadEndpoint | None) -> None:
        self._endpoints.pop(key, None)
        with contextlib.suppress(Exception):
            if wep is not None:
                await self._dataplane.endpoint_removed(wep)
                await self._store.delete(wep)
        with contextlib.suppress(Exception):
            if await self._worker.disable(host_name):
                self._reaper.schedule(host_name)

    async def _forget(self, record: LocalEndpoint) -> None:
        """Drop a previous container's endpoint record (its interface is replaced next)."""
        self._endpoints.pop(record.key, None)
        await self._dataplane.endpoint_removed(record.wep)
        await self._store.delete(record.wep)

    # ---- teardown ----

    async def teardown(self, endpoint_id: EndpointID) -> bool:
        """Remove the pod's interface and endpoint; False when there was nothing to remove.

        The host veth is taken down before answering and deleted in the background (see
        reaper.py); routes, addresses and the pod side go with it.
        """
        key = endpoint_id.pod_key
        host_name = host_veth_name(endpoint_id.namespace, endpoint_id.pod)
        async with self._locks[key]:
            record = self._endpoints.get(key)
            if record is not None and record.wep.container_id != endpoint_id.container_id:
                log.info(
                    "DEL for container %s ignored: %s belongs to %s",
                    endpoint_id.container_id,
                    key,
                    record.wep.container_id,
                )
                return False
            removed = await self._worker.disable(host_name)
            if removed:
                self._reaper.schedule(host_name)
            if record is not None:
                await self._dataplane.endpoint_removed(record.wep)
                await self._store.delete(record.wep)
                del self._endpoints[key]
                removed = True
        return removed

    # ---- check ----

    async def check(
        self, endpoint_id: EndpointID, netns: str, ips: tuple[IPAddress, ...]
    ) -> list[str]:
        key = endpoint_id.pod_key
        async with self._locks[key]:
            record = self._endpoints.get(key)
            if record is None:
                return [f"no endpoint for pod {key}"]
            wep = record.wep
            if wep.container_id != endpoint_id.container_id:
                return [f"pod {key} belongs to container {wep.container_id}"]
            problems: list[str] = []
            if wep.endpoint != endpoint_id.interface_name:
                problems.append(
                    f"pod interface is {wep.endpoint}, not {endpoint_id.interface_name}"
                )
            if ips and {host_network(ip) for ip in ips} != {host_network(ip) for ip in wep.ips()}:
                problems.append(f"addresses are {', '.join(wep.ip_networks)}")
            spec = self._spec(wep.endpoint_id(), netns, wep.ips(), 0)
            problems += await self._worker.check(spec)
            stored = await self._store.get(wep.namespace, wep.name)
            if stored is None or stored[0].container_id != wep.container_id:
                problems.append(f"WorkloadEndpoint {wep.namespace}/{wep.name} missing")
            if not self._dataplane.is_programmed(wep):
                problems.append("policy not programmed")
            return problems

    # ---- label sync (PodCacheListener) ----

    async def pod_changed(self, key: PodKey) -> None:
        if key in self._endpoints:
            self._schedule_refresh(key)

    async def namespace_changed(self, namespace: str) -> None:
        for key in [k for k in self._endpoints if k.namespace == namespace]:
            self._schedule_refresh(key)

    def _schedule_refresh(self, key: PodKey) -> None:
        """Rewrite the pod's endpoint from the cache soon, without holding up the watch."""
        task = self._refreshes.get(key)
        if task is not None and not task.done():
            self._dirty.add(key)  # run once more when this one is done
            return
        task = asyncio.create_task(self._refresh(key), name=f"felix-refresh-{key}")
        self._refreshes[key] = task
        task.add_done_callback(lambda t: self._refresh_done(key, t))

    def _refresh_done(self, key: PodKey, task: asyncio.Task[None]) -> None:
        if self._refreshes.get(key) is task:
            del self._refreshes[key]
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("updating the endpoint of %s failed: %s", key, task.exception())
        if key in self._dirty:
            self._dirty.discard(key)
            self._schedule_refresh(key)

    async def _refresh(self, key: PodKey) -> None:
        async with self._locks[key]:
            record = self._endpoints.get(key)
            pod = self._pods.pod(key)
            if record is None or pod is None:
                # A deleted Pod keeps its last labels until its DEL: no policy flap on the
                # way out.
                return
            new = relabelled(record.wep, pod, self._pods.namespace(key.namespace))
            if new == record.wep:
                return
            revision = await self._store.update(new, record.revision)
            if revision is None:
                log.warning("WorkloadEndpoint %s changed owner; not updating it", new.name)
                return
            record.wep, record.revision = new, revision
            if record.plumbed:
                await self._dataplane.endpoint_added(new, self.policy_timeout)

    async def close(self) -> None:
        for task in list(self._refreshes.values()):
            task.cancel()
        for task in list(self._refreshes.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
