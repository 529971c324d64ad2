"""The node controller (both datastore modes): Calico's data follows the Kubernetes Nodes.

- etcd mode: every Kubernetes Node has a Calico Node (node_sync.py), labels in step.
- both modes: IPAM garbage collection (ipam_gc.py) scans every `scan_seconds` and soon after a
  Pod or a Node disappears from the API; it releases leaked addresses and clears the IPAM data
  of nodes that are gone.
- etcd mode: once a gone node's IPAM data is cleared, its Calico Node (only one marked as
  Kubernetes's by a k8s orchRef) and its WorkloadEndpoints are deleted, compare-and-swap at
  the revision read. With the Kubernetes datastore the Calico Node *is* the Kubernetes Node:
  there is nothing more to remove.

A Calico Node without a k8s orchRef is not Kubernetes's (a host outside the cluster, or one
made by hand): its IPAM data is never judged gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from opentelemetry import trace

from libcalico.datastore import Datastore, DatastoreError, KeyNotFoundError, RevisionConflictError
from libcalico.datastore.keys import GROUP_CALICO, resource_key, resource_prefix
from libcalico.ipam.store import IpamStore
from libcalico.resources.client import ResourceClient
from services.controllers.informer import KeyQueue
from services.controllers.ipam_gc import IpamGarbageCollector, ScanResult
from services.controllers.kube_view import KubeView
from services.controllers.node_sync import kubernetes_name, sync_node
from services.controllers.run_config import NodeControllerConfig

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# After a Pod or Node disappears, wait this long for others to go too, then scan once.
TRIGGER_DELAY_SECONDS = 0.3
RETRY_SECONDS = 1.0


class NodeController:
    def __init__(
        self,
        config: NodeControllerConfig,
        view: KubeView,
        datastore: Datastore,
    ) -> None:
        self.config = config
        self.view = view
        self.datastore = datastore
        self.resources = ResourceClient(datastore)
        self.gc = IpamGarbageCollector(
            IpamStore(datastore, cache=False), view, config.leak_grace_seconds
        )
        self.nodes_cleaned = 0
        self.last_scan: ScanResult | None = None
        self._trigger = asyncio.Event()

    async def run(self) -> None:
        nodes = self.view.nodes.subscribe()
        pods = self.view.pods.subscribe()
        await self.view.wait_synced()
        tasks = [
            asyncio.create_task(self._watch_disappearances(nodes, "node"), name="node-gone"),
            asyncio.create_task(self._watch_disappearances(pods, "pod"), name="pod-gone"),
            asyncio.create_task(self._scan_loop(), name="ipam-scan"),
        ]
        if self.config.manage_nodes:
            sync_queue = self.view.nodes.subscribe()
            tasks.append(asyncio.create_task(self._sync_loop(sync_queue), name="node-sync"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise what ended it (NotLeaderError, a bug)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- triggers -----------------------------------------------------------------------------

    async def _watch_disappearances(self, queue: KeyQueue, what: str) -> None:
        informer = self.view.nodes if what == "node" else self.view.pods
        while True:
            await queue.wait()
            if any(informer.get(key) is None for key in queue.take()):
                self._trigger.set()

    async def _scan_loop(self) -> None:
        next_scan = 0.0
        backoff = RETRY_SECONDS
        while True:
            timeout = max(0.0, next_scan - time.monotonic())
            try:
                await asyncio.wait_for(self._trigger.wait(), timeout)
                await asyncio.sleep(TRIGGER_DELAY_SECONDS)
            except TimeoutError:
                pass
            self._trigger.clear()
            try:
                await self.scan_once()
                next_scan = time.monotonic() + self.config.scan_seconds
                backoff = RETRY_SECONDS
            except (DatastoreError, RuntimeError) as exc:
                # Doubling up to the scan period: a datastore that cannot serve IPAM at all
                # is reported every few minutes, not every second.
                log.warning("IPAM scan failed, again in %.0f s: %s", backoff, exc)
                next_scan = time.monotonic() + backoff
                backoff = min(backoff * 2, max(self.config.scan_seconds, RETRY_SECONDS))

    async def scan_once(self) -> ScanResult:
        with tracer.start_as_current_span("node-controller.scan"):
            calico_nodes = await self._calico_nodes() if self.config.manage_nodes else {}
            not_kubernetes = {n for n, obj in calico_nodes.items() if kubernetes_name(obj) != n}
            result = await self.gc.scan(not_kubernetes, known_nodes=calico_nodes)
            for node in result.nodes_cleared:
                if self.config.manage_nodes:
                    await self._delete_node_data(node, calico_nodes.get(node))
                self.nodes_cleaned += 1
            self.last_scan = result
            return result

    async def _calico_nodes(self) -> dict[str, dict[str, Any]]:
        listed = await self.datastore.list(resource_prefix(GROUP_CALICO, "nodes"))
        out: dict[str, dict[str, Any]] = {}
        for kv in listed.items:
            try:
                obj = json.loads(kv.value)
                name = str(obj["metadata"]["name"])
            except (ValueError, KeyError, TypeError):
                log.error("Calico Node at %s does not parse: skipped", kv.key)
                continue
            obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
            out[name] = obj
        return out

    # -- node data ----------------------------------------------------------------------------

    async def _delete_node_data(self, node: str, calico_node: dict[str, Any] | None) -> None:
        """The gone node's WorkloadEndpoints, then its Calico Node (compare-and-swap)."""
        weps = await self.datastore.list(resource_prefix(GROUP_CALICO, "workloadendpoints"))
        for kv in weps.items:
            try:
                wep_node = (json.loads(kv.value).get("spec") or {}).get("node")
            except ValueError:
                continue
            if wep_node == node:
                await self._delete(kv.key, kv.mod_revision)
        if calico_node is not None:
            revision = int(calico_node["metadata"]["resourceVersion"])
            if await self._delete(resource_key(GROUP_CALICO, "nodes", node), revision):
                log.info("Calico Node %s deleted: its Kubernetes Node is gone", node)

    async def _delete(self, key: str, revision: int) -> bool:
        try:
            await self.datastore.delete(key, revision)
        except KeyNotFoundError:
            return False
        except RevisionConflictError:
            log.info("%s changed since it was read: left for the next scan", key)
            return False
        return True

    # -- Calico Nodes from Kubernetes Nodes (etcd mode) -------------------------------------

    async def _sync_loop(self, queue: KeyQueue) -> None:
        next_pass = 0.0
        while True:
            try:
                if time.monotonic() >= next_pass:
                    queue.take()
                    for kube_node in self.view.nodes:
                        await sync_node(self.resources, kube_node, self.config.sync_labels)
                    next_pass = time.monotonic() + self.config.reconciler_seconds
                    continue
                await queue.wait(max(0.0, next_pass - time.monotonic()))
                for key in sorted(queue.take()):
                    found = self.view.nodes.get(key)
                    if found is not None:
                        await sync_node(self.resources, found, self.config.sync_labels)
            except DatastoreError as exc:
                log.warning("Calico Node sync failed, full pass shortly: %s", exc)
                next_pass = 0.0
                await asyncio.sleep(RETRY_SECONDS)
