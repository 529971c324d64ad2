"""Deleting conntrack entries of UDP flows DNATed to a backend a ServicePort no longer has.

UDP has no connection end: a client that keeps sending to a cluster IP keeps its conntrack
entry (and so its DNAT to the old backend) alive forever, even after the backend is gone.
kube-proxy deletes those entries after it has removed the backend from the rules; so does
Felix, after a successful apply (a new datagram then misses conntrack and is balanced over
the current backends). Dataplane-independent: the nftables and iptables drivers both call it.

Measured choice: pyroute2's conntrack socket on a thread inside the node's namespace — one
netlink dump per cleanup whatever the number of stale (service, backend) pairs, no fork —
rather than one ``conntrack -D`` process per pair.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.felix.calc.model import ServicePort
from services.felix.dataplane.netns import NetnsWorker

log = logging.getLogger(__name__)

UDP = 17
Target = tuple[str, int]  # backend address, port


@dataclass(slots=True)
class UdpTargets:
    """Service keys whose DNATed UDP flows must reach one of the allowed backends."""

    by_ip: dict[tuple[str, int], frozenset[Target]] = field(default_factory=dict)
    by_node_port: dict[int, frozenset[Target]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_ip or self.by_node_port)

    def stale(self, orig_dst: Target, reply_src: Target) -> bool:
        """A flow originally to ``orig_dst`` now answered by ``reply_src``: to be deleted?"""
        if reply_src == orig_dst:
            return False  # not DNATed
        allowed = self.by_ip.get(orig_dst)
        if allowed is None:
            allowed = self.by_node_port.get(orig_dst[1])
        return allowed is not None and reply_src not in allowed


def _backends(sp: ServicePort | None) -> frozenset[Target]:
    if sp is None or sp.protocol != UDP:
        return frozenset()
    return frozenset((b.address, b.port) for b in sp.backends)


def _keys(sp: ServicePort) -> tuple[list[tuple[str, int]], int | None]:
    return [(ip, sp.port) for ip in (*sp.cluster_ips, *sp.external_ips)], sp.node_port


def changed_targets(
    old: Mapping[str, ServicePort | None], new: Mapping[str, ServicePort]
) -> UdpTargets:
    """Keys of UDP ServicePorts (as they were in ``old``) that lost backends in ``new``."""
    out = UdpTargets()
    for sp_id, before in old.items():
        if before is None or before.protocol != UDP:
            continue
        after = _backends(new.get(sp_id))
        if not _backends(before) - after:
            continue
        ips, node_port = _keys(before)
        for key in ips:
            out.by_ip[key] = after
        if node_port is not None:
            out.by_node_port[node_port] = after
    return out


def current_targets(ports: Iterable[ServicePort]) -> UdpTargets:
    """Every UDP ServicePort's keys with its current backends (a full sync after a restart:
    backends may have gone while Felix was not running)."""
    out = UdpTargets()
    for sp in ports:
        if sp.protocol != UDP:
            continue
        ips, node_port = _keys(sp)
        for key in ips:
            out.by_ip[key] = _backends(sp)
        if node_port is not None:
            out.by_node_port[node_port] = _backends(sp)
    return out


class ConntrackCleaner:
    """Deletes stale UDP entries inside one network namespace."""

    def __init__(self, netns_path: str | None) -> None:
        self._path = netns_path
        self._worker: NetnsWorker | None = None

    def _delete(self, targets: UdpTargets) -> int:
        from pyroute2 import Conntrack
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        deleted = 0
        ct: Any = Conntrack()
        try:
            stale = []
            for entry in ct.dump_entries(tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP)):
                orig, reply = entry.tuple_orig, entry.tuple_reply
                if targets.stale((orig.daddr, orig.dport), (reply.saddr, reply.sport)):
                    stale.append(entry)
            for entry in stale:
                try:
                    ct.delete(entry)
                    deleted += 1
                except OSError:  # already gone (expired meanwhile)
                    pass
        finally:
            ct.close()
        return deleted

    async def delete_stale(self, targets: UdpTargets) -> int:
        if not targets:
            return 0
        if self._worker is None:
            self._worker = NetnsWorker(self._path, "conntrack")
        worker = self._worker
        try:
            deleted = await asyncio.wrap_future(worker.submit(lambda: self._delete(targets)))
        except Exception:
            log.exception("deleting stale UDP conntrack entries failed")
            return 0
        if deleted:
            log.info("deleted %d UDP conntrack entries of removed service backends", deleted)
        return deleted

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
