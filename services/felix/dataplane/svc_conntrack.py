"""Deleting conntrack entries of UDP flows DNATed to a backend a ServicePort no longer has.

UDP has no connection end: a client that keeps sending to a cluster IP keeps its conntrack
entry (and so its DNAT to the old backend) alive forever, even after the backend is gone.
kube-proxy deletes those entries after it has removed the backend from the rules; so does
Felix, after a successful apply (a new datagram then misses conntrack and is balanced over
the current backends). Dataplane-independent: the nftables and iptables drivers both call it.

Measured choice (3,000 UDP entries in a namespace): pyroute2's conntrack dump parses in
Python, 1.65 s for the 3,000; ``conntrack -L -p udp`` lists them in C and one
``conntrack -D`` per stale (service address, backend) pair deletes in ~20 ms each. So the
tool (in scripts/setup.sh's apt list, as in Calico's and kube-proxy's images) it is.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.felix.calc.model import ServicePort
from services.felix.dataplane.netns import command_in_netns

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


def parse_listing(text: str) -> list[tuple[Target, Target]]:
    """(original destination, reply source) of each ``conntrack -L`` line."""
    out = []
    for line in text.splitlines():
        dst = _values(line, "dst=")
        src = _values(line, "src=")
        sport = _values(line, "sport=")
        dport = _values(line, "dport=")
        if len(dst) >= 2 and len(src) >= 2 and len(sport) >= 2 and len(dport) >= 2:
            out.append(((dst[0], int(dport[0])), (src[1], int(sport[1]))))
    return out


def _values(line: str, key: str) -> list[str]:
    return [word[len(key) :] for word in line.split() if word.startswith(key)]


class ConntrackCleaner:
    """Deletes stale UDP entries inside one network namespace, with the ``conntrack`` tool:
    one listing of the UDP entries, then one delete per stale (service address,
    backend) pair."""

    def __init__(self, netns_path: str | None) -> None:
        self._path = netns_path

    async def _conntrack(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *command_in_netns(self._path, ["conntrack", *args]),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        return out.decode()

    async def delete_stale(self, targets: UdpTargets) -> int:
        if not targets:
            return 0
        if shutil.which("conntrack") is None:
            log.warning("conntrack tool missing: stale UDP service flows are not deleted")
            return 0
        try:
            listing = await self._conntrack("-L", "-p", "udp")
            stale = sorted({pair for pair in parse_listing(listing) if targets.stale(*pair)})
            for (dst, dport), (backend, bport) in stale:
                await self._conntrack(
                    "-D", "-p", "udp",
                    "--orig-dst", dst, "--orig-port-dst", str(dport),
                    "--reply-src", backend, "--reply-port-src", str(bport),
                )  # fmt: skip
        except OSError:
            log.exception("deleting stale UDP conntrack entries failed")
            return 0
        if stale:
            log.info("deleted UDP conntrack entries of %d removed service backends", len(stale))
        return len(stale)

    def close(self) -> None:
        pass
