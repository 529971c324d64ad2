"""Calico's block IPAM over the Datastore interface, for one node.

Used in-process by the daemon (calico-ipamd), by calicoctl and by tests. Every change runs as
an operation of the group committer (committer.py): operations stage their changes and the
committer writes them in one compare-and-swap transaction. Block claims are the exception:
they write directly, in Calico's two phases (pending affinity, block, confirmed affinity), so a
crash half-way leaves a pending affinity that counts as not owned and is finished or undone by
the node's next assignment (_settle_affinity).

On a datastore whose txn is ordered writes (kubernetes: Datastore.atomic_txn False) releasing an
empty block is Calico's three steps after the batch is written (affinity pendingDeletion,
block deleted, affinity deleted) instead of part of the batch's transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
from dataclasses import dataclass, field

from libcalico.datastore import Datastore, KeyExistsError, KeyNotFoundError, RevisionConflictError
from libcalico.ipam import keys
from libcalico.ipam.keys import Network
from libcalico.ipam.model import (
    ATTR_NODE,
    AffinityState,
    Block,
    BlockAffinity,
    Handle,
    IPAddress,
    IpamConfig,
)
from libcalico.ipam.release import ReleaseSpec, release_handle, release_one
from libcalico.ipam.staging import Staging
from libcalico.ipam.store import IpamStore, Versioned
from libcalico.ipam_block import host_affinity
from services.ipam.cluster import ClusterView, selects_node
from services.ipam.committer import DEFAULT_LINGER_SECONDS, Committer
from services.ipam.errors import AddressInUseError, InvalidRequestError, PoolsExhaustedError
from services.ipam.pools import USE_WORKLOAD, Pool

log = logging.getLogger(__name__)

CONFLICTS = (KeyExistsError, KeyNotFoundError, RevisionConflictError)
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass
class AssignRequest:
    num_ipv4: int = 0
    num_ipv6: int = 0
    handle_id: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    # Pool names or CIDRs; empty: every enabled pool whose nodeSelector selects the node.
    ipv4_pools: list[str] = field(default_factory=list)
    ipv6_pools: list[str] = field(default_factory=list)


@dataclass
class AssignResult:
    ipv4: list[IPInterface] = field(default_factory=list)
    ipv6: list[IPInterface] = field(default_factory=list)


@dataclass
class ReleaseResult:
    released: list[IPAddress] = field(default_factory=list)
    unallocated: list[IPAddress] = field(default_factory=list)


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidRequestError(f"invalid IP address {text!r}") from None


def check_handle(handle_id: str) -> None:
    if not handle_id:
        raise InvalidRequestError("handle_id is required")
    if "/" in handle_id:
        raise InvalidRequestError(f"handle_id {handle_id!r} must not contain '/'")


def _interface(ip: IPAddress, prefixlen: int) -> IPInterface:
    if isinstance(ip, ipaddress.IPv4Address):
        return ipaddress.IPv4Interface((ip, prefixlen))
    return ipaddress.IPv6Interface((ip, prefixlen))


def _node_offset(node: str, count: int) -> int:
    """Where a node starts looking for a free block: spreads nodes over a pool."""
    digest = hashlib.sha256(node.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


class Allocator:
    def __init__(
        self,
        datastore: Datastore,
        node: str,
        *,
        cache: bool = True,
        cluster_ttl: float = 0.0,
        batch_linger: float = DEFAULT_LINGER_SECONDS,
    ) -> None:
        if not node or "/" in node:
            raise ValueError(f"node name {node!r} is empty or contains '/'")
        self.datastore = datastore
        self.node = node
        self.store = IpamStore(datastore, cache=cache)
        self.cluster = ClusterView(datastore, ttl=cluster_ttl)
        self.committer = Committer(self.store, linger=batch_linger)
        # Per IP version, the affine block last allocated from (a hint, checked before use).
        self._hints: dict[int, Network] = {}
        # Per IP version, block CIDRs known to exist (see _claim_free_block).
        self._known_blocks: dict[int, set[Network]] = {}

    async def close(self) -> None:
        await self.committer.close()

    @property
    def affinity(self) -> str:
        return host_affinity(self.node)

    # -- public API -------------------------------------------------------------------------

    async def auto_assign(self, request: AssignRequest) -> AssignResult:
        check_handle(request.handle_id)
        if request.num_ipv4 < 0 or request.num_ipv6 < 0:
            raise InvalidRequestError("num_ipv4 and num_ipv6 must not be negative")
        if request.num_ipv4 == 0 and request.num_ipv6 == 0:
            raise InvalidRequestError("nothing requested: num_ipv4 and num_ipv6 are both 0")
        # Every allocation records the node that asked, so borrowed addresses are recognisable.
        attrs = {ATTR_NODE: self.node, **request.attributes}
        config = await self.cluster.ipam_config()
        pools4 = await self._eligible_pools(4, request.ipv4_pools) if request.num_ipv4 else []
        pools6 = await self._eligible_pools(6, request.ipv6_pools) if request.num_ipv6 else []

        async def op(stg: Staging) -> AssignResult:
            # One operation for both families: a failure rolls back both (all or nothing).
            result = AssignResult()
            if request.num_ipv4:
                result.ipv4 = await self._assign_family(
                    stg, 4, request.num_ipv4, request.handle_id, attrs, pools4, config
                )
            if request.num_ipv6:
                result.ipv6 = await self._assign_family(
                    stg, 6, request.num_ipv6, request.handle_id, attrs, pools6, config
                )
            return result

        return await self.committer.run(op)

    async def assign_ip(
        self, ip_text: str, handle_id: str, attributes: dict[str, str] | None = None
    ) -> IPInterface:
        check_handle(handle_id)
        ip = parse_ip(ip_text)
        pool = self._pool_of(ip, await self.cluster.pools())
        if pool is None:
            raise InvalidRequestError(f"{ip} is not in any configured IP pool")
        config = await self.cluster.ipam_config()
        cidr = pool.block_of(ip)
        attrs = {ATTR_NODE: self.node, **(attributes or {})}

        async def op(stg: Staging) -> IPInterface:
            block = await stg.get_block(cidr)
            if block is None:
                claimed = await self._claim_block(stg, cidr, config)
                block = claimed or await stg.get_block(cidr)
                if block is None:
                    raise PoolsExhaustedError(f"could not claim block {cidr} for {ip}")
            if not block.assign_ordinal(block.ordinal_of(ip), handle_id, attrs):
                holder = block.allocation(block.ordinal_of(ip))
                owner = holder.handle_id if holder else None
                raise AddressInUseError(f"{ip} is already allocated (handle {owner})")
            stg.put_block(block)
            await self._add_to_handle(stg, handle_id, cidr, 1)
            return ipaddress.ip_interface(f"{ip}/{cidr.prefixlen}")

        return await self.committer.run(op)

    async def release_ips(self, specs: list[ReleaseSpec]) -> ReleaseResult:
        pools = await self.cluster.pools()

        async def op(stg: Staging) -> ReleaseResult:
            result = ReleaseResult()
            for spec in specs:
                if await self._release_one(stg, spec, pools):
                    result.released.append(spec.ip)
                else:
                    result.unallocated.append(spec.ip)
            return result

        return await self.committer.run(op)

    async def release_by_handle(self, handle_id: str) -> list[IPAddress]:
        check_handle(handle_id)

        async def op(stg: Staging) -> list[IPAddress]:
            return await release_handle(stg, handle_id)

        return await self.committer.run(op)

    async def get_allocations(self, handle_id: str) -> list[IPInterface]:
        """The handle's addresses, read fresh from the datastore."""
        check_handle(handle_id)
        found = await self.store.handle(handle_id, fresh=True)
        if found is None:
            return []
        out: list[IPInterface] = []
        for cidr_text in sorted(found.value.blocks):
            cidr = ipaddress.ip_network(cidr_text)
            block = await self.store.block(cidr, fresh=True)
            if block is None:
                continue
            for ordinal in block.value.ordinals_of_handle(handle_id):
                out.append(ipaddress.ip_interface(f"{block.value.ip_of(ordinal)}/{cidr.prefixlen}"))
        return out

    async def trim_handle(self, handle_id: str, cidr: Network, excess: int) -> int:
        """Stop a handle counting addresses its block does not hold, at most `excess` of them
        (what an `ipam check` report saw): the leak an ordered write interrupted between a
        handle and its block leaves (KUBERNETES.md). Returns how many counts were dropped."""
        check_handle(handle_id)

        async def op(stg: Staging) -> int:
            handle = await stg.get_handle(handle_id)
            if handle is None:
                return 0
            block = await stg.peek_block(cidr)
            held = len(block.ordinals_of_handle(handle_id)) if block is not None else 0
            drop = min(excess, handle.blocks.get(str(cidr), 0) - held)
            if drop <= 0:
                return 0
            handle.remove(cidr, drop)
            stg.put_handle(handle)
            return drop

        return await self.committer.run(op)

    async def list_node_handles(self, prefix: str = "") -> dict[str, list[IPInterface]]:
        """Handles (starting with `prefix`) holding addresses allocated for this node, with
        those addresses: what a CNI plugin's GC compares with the runtime's attachments.

        Read from the blocks, fresh (one list per IP version), since an allocation's `node`
        attribute lives there; borrowed addresses count for the node that asked for them."""
        found: dict[str, list[IPInterface]] = {}
        for version in (4, 6):
            for entry in await self.store.list_blocks(version):
                block = entry.value
                plen = block.cidr.prefixlen
                for alloc in block.all_allocations():
                    handle = alloc.handle_id
                    if not handle or not handle.startswith(prefix):
                        continue
                    if alloc.attributes.get(ATTR_NODE) != self.node:
                        continue
                    found.setdefault(handle, []).append(_interface(alloc.ip, plen))
        return {handle: found[handle] for handle in sorted(found)}

    # -- pools ------------------------------------------------------------------------------

    @staticmethod
    def _pool_of(ip: IPAddress, pools: list[Pool]) -> Pool | None:
        for pool in pools:
            if pool.version == ip.version and ip in pool.cidr:
                return pool
        return None

    async def _eligible_pools(self, version: int, requested: list[str]) -> list[Pool]:
        pools = [p for p in await self.cluster.pools() if p.version == version]
        if requested:
            chosen = []
            for want in requested:
                match = [p for p in pools if want in (p.name, str(p.cidr))]
                if not match:
                    raise InvalidRequestError(
                        f"requested IPv{version} pool {want!r} does not exist"
                    )
                if match[0].disabled:
                    raise InvalidRequestError(f"requested IPv{version} pool {want!r} is disabled")
                if USE_WORKLOAD not in match[0].allowed_uses:
                    raise InvalidRequestError(
                        f"requested IPv{version} pool {want!r} does not allow Workload use"
                    )
                chosen.append(match[0])
            return chosen
        # The node's labels only matter to a pool that selects nodes (one read fewer, and no
        # Node needed for the default `all()`).
        selective = any(p.node_selector.strip() != "all()" for p in pools)
        labels = await self.cluster.node_labels(self.node) if selective else {}
        eligible = [
            p
            for p in pools
            if not p.disabled and USE_WORKLOAD in p.allowed_uses and selects_node(p, labels)
        ]
        if not eligible:
            raise PoolsExhaustedError(
                f"no enabled IPv{version} pool selects node {self.node!r} for workloads"
            )
        return eligible

    # -- assignment -------------------------------------------------------------------------

    async def _add_to_handle(self, stg: Staging, handle_id: str, cidr: Network, n: int) -> None:
        handle = await stg.get_handle(handle_id, assume_new=True) or Handle(handle_id)
        handle.add(cidr, n)
        stg.put_handle(handle)

    async def _take(
        self, stg: Staging, block: Block, n: int, handle_id: str, attrs: dict[str, str]
    ) -> list[IPInterface]:
        ordinals = block.assign(n, handle_id, attrs)
        if not ordinals:
            return []
        stg.put_block(block)
        await self._add_to_handle(stg, handle_id, block.cidr, len(ordinals))
        plen = block.cidr.prefixlen
        return [_interface(block.ip_of(o), plen) for o in ordinals]

    async def _take_affine(
        self, stg: Staging, cidr: Network, n: int, handle_id: str, attrs: dict[str, str]
    ) -> list[IPInterface]:
        """Take up to n addresses from `cidr` if it is still this node's block."""
        peek = await stg.peek_block(cidr)
        if peek is None or peek.affinity != self.affinity or not peek.free_count:
            return []
        block = peek.copy()
        taken = await self._take(stg, block, n, handle_id, attrs)
        if block.free_count:
            self._hints[cidr.version] = cidr
        return taken

    async def _assign_family(
        self,
        stg: Staging,
        version: int,
        count: int,
        handle_id: str,
        attrs: dict[str, str],
        pools: list[Pool],
        config: IpamConfig,
    ) -> list[IPInterface]:
        got: list[IPInterface] = []

        def in_pools(cidr: Network) -> bool:
            return any(cidr.subnet_of(p.cidr) for p in pools)  # type: ignore[arg-type]

        # 1. Blocks affine to this node: the one used last first (it usually has room), so the
        # common case does not walk every affine block.
        hint = self._hints.get(version)
        if hint is not None and in_pools(hint):
            got += await self._take_affine(stg, hint, count, handle_id, attrs)
        if len(got) < count:
            for aff in await stg.node_affinities(self.node, version):
                if len(got) >= count:
                    break
                if not in_pools(aff.cidr):
                    continue
                settled = aff.state is AffinityState.CONFIRMED
                if not settled and not await self._settle_affinity(stg, aff):
                    continue
                got += await self._take_affine(stg, aff.cidr, count - len(got), handle_id, attrs)

        # 2. Claim new blocks.
        while len(got) < count and config.auto_allocate_blocks:
            owned = [a for a in await stg.node_affinities(self.node, version)]
            if config.max_blocks_per_host and len(owned) >= config.max_blocks_per_host:
                break
            block = await self._claim_free_block(stg, version, pools, config)
            if block is None:
                break
            got += await self._take(stg, block, count - len(got), handle_id, attrs)
            self._hints[version] = block.cidr

        # 3. Borrow single addresses from other nodes' blocks.
        if len(got) < count and not config.strict_affinity:
            for found in await self.store.list_blocks(version):
                if len(got) >= count:
                    break
                cidr = found.value.cidr
                if not in_pools(cidr) or found.value.affinity == self.affinity:
                    continue
                block = await stg.get_block(cidr)
                if block is None or not block.free_count or block.strict_affinity:
                    continue
                got += await self._take(stg, block, count - len(got), handle_id, attrs)

        if len(got) < count:
            names = ", ".join(p.name for p in pools)
            why = " (strictAffinity forbids borrowing)" if config.strict_affinity else ""
            raise PoolsExhaustedError(
                f"IPv{version} pools [{names}] exhausted for node {self.node!r}: "
                f"requested {count}, found {len(got)}{why}"
            )
        return got

    # -- block claims -----------------------------------------------------------------------

    async def _claim_free_block(
        self, stg: Staging, version: int, pools: list[Pool], config: IpamConfig
    ) -> Block | None:
        """Claim the first block no one has, scanning each pool from this node's offset.

        Blocks known to exist are skipped without asking the datastore; that knowledge may be
        stale (a block released since), so when nothing is found the set is re-read once.
        """
        known = self._known_blocks.get(version)
        for fresh in (False, True):
            if known is None or fresh:
                known = {found.value.cidr for found in await self.store.list_blocks(version)}
                self._known_blocks[version] = known
            for pool in pools:
                for cidr in pool.blocks_from(_node_offset(self.node, pool.block_count)):
                    if cidr in known:
                        continue
                    block = await self._claim_block(stg, cidr, config)
                    known.add(cidr)
                    if block is not None:
                        return block
        return None

    async def _claim_block(self, stg: Staging, cidr: Network, config: IpamConfig) -> Block | None:
        """Two-phase claim of `cidr` for this node; None when another node got it first."""
        ds = self.datastore
        aff_key = keys.affinity_key(self.node, cidr)
        blk_key = keys.block_key(cidr)
        pending = BlockAffinity(self.node, cidr, AffinityState.PENDING)
        try:
            aff_kv = await ds.create(aff_key, pending.to_bytes())
            aff = pending
        except KeyExistsError:
            # Left over from an interrupted claim (pending) or already ours (confirmed).
            aff_kv = await ds.get(aff_key)
            aff = BlockAffinity.from_bytes(self.node, cidr, aff_kv.value)
        block = Block(cidr, self.affinity, strict_affinity=config.strict_affinity)
        try:
            blk_kv = await ds.create(blk_key, block.to_bytes())
        except KeyExistsError:
            blk_kv = await ds.get(blk_key)
            block = Block.from_bytes(blk_kv.value)
            if block.affinity != self.affinity:
                # Another node owns it: withdraw our pending claim.
                with contextlib.suppress(KeyNotFoundError, RevisionConflictError):
                    await ds.delete(aff_key, revision=aff_kv.mod_revision)
                self.store.invalidate(aff_key)
                return None
        if aff.state is not AffinityState.CONFIRMED:
            confirmed = BlockAffinity(self.node, cidr, AffinityState.CONFIRMED)
            aff_kv = await ds.update(aff_key, confirmed.to_bytes(), aff_kv.mod_revision)
            aff = confirmed
        log.info("node %s claimed block %s", self.node, cidr)
        self.store.invalidate(aff_key)  # also drops the node's affinity list: re-listed next
        self.store.remember(blk_key, Versioned(block, blk_kv.mod_revision))
        stg.adopt(blk_key, block, blk_kv.mod_revision)
        stg.adopt(aff_key, aff, aff_kv.mod_revision)
        return block.copy()

    async def _settle_affinity(self, stg: Staging, aff: BlockAffinity) -> bool:
        """Finish what left one of this node's affinities pending or pendingDeletion.

        Claims and stepwise releases run one at a time in this node's one process, so such an
        affinity is what a crash between their writes left. If the block exists and is this
        node's, the affinity is confirmed again (the claim completes; the release is undone
        and happens again when the block next empties); otherwise it is withdrawn. True when
        the block is now this node's, confirmed.
        """
        key = keys.affinity_key(self.node, aff.cidr)
        block = await stg.peek_block(aff.cidr)
        found = await self.store.affinity(self.node, aff.cidr, fresh=True)
        self.store.invalidate(key)  # changed below, or stale: the node's lists are re-read
        try:
            if found is None:
                stg.adopt(key, None, None)
                return False
            if block is None or block.affinity != self.affinity:
                await self.datastore.delete(key, revision=found.revision)
                log.info("node %s withdrew its unfinished affinity to %s", self.node, aff.cidr)
                stg.adopt(key, None, None)
                return False
            confirmed = BlockAffinity(self.node, aff.cidr, AffinityState.CONFIRMED)
            if found.value.state is not AffinityState.CONFIRMED:
                kv = await self.datastore.update(key, confirmed.to_bytes(), found.revision)
                log.info("node %s confirmed its unfinished affinity to %s", self.node, aff.cidr)
                stg.adopt(key, confirmed, kv.mod_revision)
            else:
                stg.adopt(key, confirmed, found.revision)
            return True
        except CONFLICTS:
            return False  # changed meanwhile: left for the next look

    # -- release ----------------------------------------------------------------------------

    async def _find_block_cidr(self, ip: IPAddress, pools: list[Pool]) -> Network | None:
        pool = self._pool_of(ip, pools)
        if pool is not None:
            return pool.block_of(ip)
        # The pool is gone: look for a block that holds the address.
        for found in await self.store.list_blocks(ip.version):
            if ip in found.value.cidr:
                return found.value.cidr
        return None

    async def _release_one(self, stg: Staging, spec: ReleaseSpec, pools: list[Pool]) -> bool:
        cidr = await self._find_block_cidr(spec.ip, pools)
        if cidr is None:
            return False
        return await release_one(stg, cidr, spec)
