"""IPAM garbage collection: leaked allocations, and the IPAM data of nodes that are gone.

One scan reads every block and affinity and judges each allocation (Calico's rules):

- a tunnel address (`type` ...TunnelAddress) is valid while its node exists;
- an allocation without `namespace` and `pod` attributes is assumed valid;
- one whose pod exists (on the allocation's node, or not yet bound) is valid;
- one whose pod is gone, on a node that is gone: leaked, released now;
- one whose pod is gone, on a node that exists: a leak *candidate*; it is released only when
  a later scan, at least the grace period after the first sighting, still sees it leaked (two
  sightings a grace period apart), and never with a grace period of 0 (collection off).

Before any release the judgement is checked live against the API (the pod, or the node), and
the release itself is guarded by handle and sequence number, so an address reassigned since
the scan read it is left alone. A handle's addresses are released together or not at all.
A gone node is cleared once none of its allocations is held by a pod that still exists (or
is otherwise assumed valid): its tunnel addresses are released, then its block affinities
(an empty block goes back to its pool; a block still holding other nodes' addresses stays,
claimed by no one). Every change is one compare-and-swap transaction through
`libcalico.ipam`, retried on conflict with calico-ipamd allocating at the same time.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from libcalico.datastore import DatastoreError
from libcalico.ipam.keys import Network
from libcalico.ipam.model import (
    ATTR_NAMESPACE,
    ATTR_NODE,
    ATTR_POD,
    ATTR_TYPE,
    TUNNEL_TYPE_SUFFIX,
    IPAddress,
)
from libcalico.ipam.release import (
    AffinityRelease,
    ReleaseSpec,
    release_affinity,
    release_all_or_none,
)
from libcalico.ipam.staging import Staging
from libcalico.ipam.store import IpamStore
from libcalico.ipam.transact import run_staged
from services.controllers.kube_view import KubeView

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Seen:
    """One allocation as a scan read it."""

    cidr: Network
    ip: IPAddress
    handle: str | None
    sequence: int
    node: str | None
    namespace: str
    pod: str
    tunnel: bool

    @property
    def identity(self) -> tuple[str, str | None, int]:
        """Changes when the address is released and given out again (sequence number)."""
        return (str(self.ip), self.handle, self.sequence)

    @property
    def spec(self) -> ReleaseSpec:
        return ReleaseSpec(self.ip, handle_id=self.handle, sequence_number=self.sequence)


@dataclass
class ScanResult:
    released: list[IPAddress] = field(default_factory=list)
    candidates: int = 0
    nodes_cleared: list[str] = field(default_factory=list)
    # Gone nodes kept because an allocation on them is still valid (a pod that exists).
    nodes_waiting: list[str] = field(default_factory=list)


class IpamGarbageCollector:
    def __init__(
        self,
        store: IpamStore,
        view: KubeView,
        grace_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.store = store
        self.view = view
        self.grace_seconds = grace_seconds
        self._clock = clock
        # Leak candidates: identity -> when first seen leaked (monotonic).
        self.sightings: dict[tuple[str, str | None, int], float] = {}
        self.released_total = 0
        self.scans = 0

    async def _snapshot(self) -> tuple[list[Seen], dict[str, set[Network]]]:
        """Every allocation, and each node's blocks (by affinity or the block's own field)."""
        seen: list[Seen] = []
        node_blocks: dict[str, set[Network]] = defaultdict(set)
        for version in (4, 6):
            for entry in await self.store.list_blocks(version):
                block = entry.value
                if block.affine_node:
                    node_blocks[block.affine_node].add(block.cidr)
                for alloc in block.all_allocations():
                    attrs = alloc.attributes
                    seen.append(
                        Seen(
                            cidr=block.cidr,
                            ip=alloc.ip,
                            handle=alloc.handle_id,
                            sequence=alloc.sequence_number,
                            node=attrs.get(ATTR_NODE) or block.affine_node,
                            namespace=attrs.get(ATTR_NAMESPACE, ""),
                            pod=attrs.get(ATTR_POD, ""),
                            tunnel=attrs.get(ATTR_TYPE, "").endswith(TUNNEL_TYPE_SUFFIX),
                        )
                    )
        for affinity in await self.store.list_all_affinities():
            node_blocks[affinity.value.node].add(affinity.value.cidr)
        return seen, node_blocks

    async def scan(
        self, not_kubernetes: Iterable[str] = (), known_nodes: Iterable[str] = ()
    ) -> ScanResult:
        """One pass. `not_kubernetes`: node names known not to be Kubernetes nodes (their
        IPAM data is never judged gone). `known_nodes`: further node names to judge (Calico
        Nodes with no IPAM data), cleared when gone."""
        if not self.view.synced:
            raise RuntimeError("IPAM scan before the Kubernetes informers synced")
        self.scans += 1
        result = ScanResult()
        now = self._clock()
        seen, node_blocks = await self._snapshot()
        skip = set(not_kubernetes)
        names = {s.node for s in seen if s.node} | set(node_blocks) | set(known_nodes)
        gone = {n for n in names if n not in skip and not self.view.node_exists(n)}

        leaked: list[Seen] = []  # confirmed: release now (after the live check)
        keeps_node: set[str] = set()  # gone nodes with an allocation still valid
        candidates: dict[tuple[str, str | None, int], float] = {}
        for s in seen:
            node_gone = s.node in gone
            if s.tunnel:
                continue  # judged per node below, after its other allocations
            if not (s.namespace and s.pod) or self.view.pod_holds(s.namespace, s.pod, s.node):
                if node_gone and s.node:
                    keeps_node.add(s.node)
                continue
            if node_gone:
                leaked.append(s)
                continue
            if self.grace_seconds <= 0:
                continue
            first = self.sightings.get(s.identity, now)
            candidates[s.identity] = first
            if now - first >= self.grace_seconds:
                leaked.append(s)
        self.sightings = candidates

        # Live re-checks, once per node and pod.
        confirmed_gone = {n for n in gone if await self._node_really_gone(n)}
        pods_gone: dict[tuple[str, str, str | None], bool] = {}
        releasable: list[Seen] = []
        for s in leaked:
            if s.node in gone and s.node not in confirmed_gone:
                continue
            pod = (s.namespace, s.pod, s.node)
            if pod not in pods_gone:
                pods_gone[pod] = await self._pod_really_gone(*pod)
            if pods_gone[pod]:
                releasable.append(s)
            else:
                self.sightings.pop(s.identity, None)
                if s.node in gone and s.node:
                    keeps_node.add(s.node)

        by_handle = _group_by_handle(seen)
        failed_nodes: set[str] = set()
        for group in _group_by_handle(releasable).values():
            handle = group[0].handle
            everything = by_handle.get(handle, group) if handle else group
            if len(everything) != len(group):
                # Some of the handle's addresses are still valid: all or none.
                for s in group:
                    if s.node in gone and s.node:
                        keeps_node.add(s.node)
                continue
            if await self._release(group):
                result.released.extend(s.ip for s in group)
                for s in group:
                    self.sightings.pop(s.identity, None)
            else:
                failed_nodes.update(s.node for s in group if s.node)

        for node in sorted(confirmed_gone):
            if node in keeps_node or node in failed_nodes:
                result.nodes_waiting.append(node)
                continue
            tunnels = [s for s in seen if s.tunnel and s.node == node]
            if tunnels and not await self._release(tunnels):
                result.nodes_waiting.append(node)
                continue
            result.released.extend(s.ip for s in tunnels)
            for cidr in sorted(node_blocks.get(node, ()), key=str):
                outcome = await self._release_affinity(node, cidr)
                if outcome is not AffinityRelease.NOTHING:
                    log.info("node %s is gone: block %s: %s", node, cidr, outcome.value)
            result.nodes_cleared.append(node)

        result.candidates = len(self.sightings)
        self.released_total += len(result.released)
        if result.released or result.nodes_cleared:
            log.info(
                "IPAM garbage collection released %d address(es)",
                len(result.released),
                extra={
                    "released": [str(ip) for ip in result.released],
                    "nodes_cleared": result.nodes_cleared,
                },
            )
        return result

    async def _node_really_gone(self, node: str) -> bool:
        try:
            return await self.view.node_gone(node)
        except DatastoreError as exc:
            log.warning("cannot confirm that node %s is gone: %s", node, exc)
            return False

    async def _pod_really_gone(self, namespace: str, pod: str, node: str | None) -> bool:
        if not (namespace and pod):
            return True  # a gone node's allocation without a pod: nothing to check
        try:
            return await self.view.pod_gone(namespace, pod, node)
        except DatastoreError as exc:
            log.warning("cannot confirm that pod %s/%s is gone: %s", namespace, pod, exc)
            return False

    async def _release_affinity(self, node: str, cidr: Network) -> AffinityRelease:
        async def op(stg: Staging) -> AffinityRelease:
            return await release_affinity(stg, node, cidr)

        return await run_staged(self.store, op)

    async def _release(self, group: list[Seen]) -> bool:
        """Release the group's addresses in one transaction, all or none."""
        specs = [(s.cidr, s.spec) for s in group]
        released = await run_staged(self.store, lambda stg: release_all_or_none(stg, specs))
        if not released:
            log.info(
                "not released: an address changed since the scan read it",
                extra={"addresses": [str(s.ip) for s in group]},
            )
        else:
            for s in group:
                pod = f"{s.namespace}/{s.pod}" if s.pod else None
                log.info(
                    "released address %s",
                    s.ip,
                    extra={"handle": s.handle, "node": s.node, "pod": pod},
                )
        return released


def _group_by_handle(allocations: Iterable[Seen]) -> dict[str | None, list[Seen]]:
    """Allocations by handle; those without a handle each alone (keyed by address)."""
    groups: dict[str | None, list[Seen]] = defaultdict(list)
    for s in allocations:
        groups[s.handle if s.handle else f"\0{s.ip}"].append(s)
    return groups
