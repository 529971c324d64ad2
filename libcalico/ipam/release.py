"""Releasing IPAM data inside a staged batch: allocations, a handle, a node's block affinity.

Shared by calico-ipamd (its release RPCs, run by its group committer) and
calico-kube-controllers (leak garbage collection and the cleanup of nodes that are gone, run
by `transact.run_staged`). These functions only stage changes; the caller commits them in one
compare-and-swap transaction. A release decided on a block that changed meanwhile (a daemon
allocated from it) therefore fails the commit and is re-run on fresh data: nothing is ever
released on a stale view.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from dataclasses import dataclass

from libcalico.datastore import DatastoreError, KeyNotFoundError, RevisionConflictError
from libcalico.ipam import keys
from libcalico.ipam.keys import Network
from libcalico.ipam.model import AffinityState, Block, BlockAffinity, IPAddress
from libcalico.ipam.staging import Staging
from libcalico.ipam.store import IpamStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReleaseSpec:
    ip: IPAddress
    # When set, release only an allocation that still has this handle / sequence number, so a
    # release decided on an old observation skips an address reassigned since.
    handle_id: str | None = None
    sequence_number: int | None = None


async def _allocated_ordinal(stg: Staging, cidr: Network, spec: ReleaseSpec) -> int | None:
    """The spec's ordinal in block `cidr` if its allocation still matches the spec's guards."""
    block = await stg.peek_block(cidr)
    if block is None or spec.ip not in block.cidr:
        return None
    ordinal = block.ordinal_of(spec.ip)
    alloc = block.allocation(ordinal)
    if alloc is None:
        return None
    if spec.handle_id is not None and alloc.handle_id != spec.handle_id:
        return None
    if spec.sequence_number is not None and alloc.sequence_number != spec.sequence_number:
        return None
    return ordinal


async def release_one(stg: Staging, cidr: Network, spec: ReleaseSpec) -> bool:
    """Free the spec's address in block `cidr` and count it off its handle; False when it is
    not allocated (or no longer matches the spec's guards)."""
    ordinal = await _allocated_ordinal(stg, cidr, spec)
    if ordinal is None:
        return False
    block = await stg.get_block(cidr)
    assert block is not None
    alloc = block.allocation(ordinal)
    assert alloc is not None
    block.release([ordinal])
    stg.put_block(block)
    if alloc.handle_id:
        handle = await stg.get_handle(alloc.handle_id)
        if handle is not None:
            handle.remove(cidr, 1)
            stg.put_handle(handle)
    await release_block_if_spare(stg, block)
    return True


async def release_all_or_none(stg: Staging, specs: list[tuple[Network, ReleaseSpec]]) -> bool:
    """Release every (block, spec) pair, or none of them when any no longer matches its
    guards: a handle's addresses go together (Calico's GC rule), or wait for the next look."""
    for cidr, spec in specs:
        if await _allocated_ordinal(stg, cidr, spec) is None:
            return False
    for cidr, spec in specs:
        released = await release_one(stg, cidr, spec)
        assert released, f"{spec.ip} vanished from a staged block"
    return True


async def release_handle(stg: Staging, handle_id: str) -> list[IPAddress]:
    """Free every address of a handle and delete the handle; the addresses freed."""
    handle = await stg.get_handle(handle_id)
    if handle is None:
        return []
    released: list[IPAddress] = []
    for cidr_text in sorted(handle.blocks):
        cidr = ipaddress.ip_network(cidr_text)
        block = await stg.get_block(cidr)
        if block is None:
            continue
        ordinals = block.ordinals_of_handle(handle_id)
        released.extend(block.ip_of(o) for o in ordinals)
        block.release(ordinals)
        stg.put_block(block)
        await release_block_if_spare(stg, block)
    handle.blocks.clear()
    stg.put_handle(handle)
    return released


async def release_block_if_spare(stg: Staging, block: Block) -> None:
    """Give an empty block back to its pool, unless it is its node's last one.

    An empty block no node claims (its node was removed while it still held others' addresses)
    goes back too: no one would ever allocate from it again otherwise.
    """
    if not block.is_empty:
        return
    node = block.affine_node
    if node is None:
        stg.delete_block(block.cidr)
        log.info("unclaimed block %s is empty: released", block.cidr)
        return
    others = [
        a
        for a in await stg.node_affinities(node, block.cidr.version)
        if a.cidr != block.cidr and a.state is AffinityState.CONFIRMED
    ]
    if not others:
        return
    if not stg.store.datastore.atomic_txn:
        # Writes land one by one there: deleting block and affinity in the batch could leave
        # an affinity with no block, or a block claimed by no one, at a crash. Calico's steps
        # run once the batch that emptied the block is written.
        store, cidr = stg.store, block.cidr
        stg.after_commit(lambda: release_block_in_steps(store, node, cidr))
        return
    if await stg.get_affinity(node, block.cidr) is not None:
        stg.delete_affinity(node, block.cidr)
    stg.delete_block(block.cidr)
    log.info("block %s is empty: released from node %s", block.cidr, node)


async def release_block_in_steps(store: IpamStore, node: str, cidr: Network) -> None:
    """Calico's release of an empty block where a txn is not atomic, after the batch that
    emptied it is written: the affinity becomes pendingDeletion (no longer owned), the block
    is deleted at the revision that batch wrote (an address taken from it since keeps it, and
    the affinity is confirmed again), then the affinity is deleted. A crash between the steps
    leaves a pendingDeletion affinity, settled by the node's next assignment; never a block
    two nodes allocate from.
    """
    ds = store.datastore
    aff_key, blk_key = keys.affinity_key(node, cidr), keys.block_key(cidr)
    block = await store.block(cidr)
    if block is None or not block.value.is_empty or block.value.affine_node != node:
        return
    aff = await store.affinity(node, cidr, fresh=True)
    try:
        marked = None
        if aff is not None:
            leaving = BlockAffinity(node, cidr, AffinityState.PENDING_DELETION)
            marked = await ds.update(aff_key, leaving.to_bytes(), aff.revision)
        try:
            await ds.delete(blk_key, revision=block.revision)
        except KeyNotFoundError:
            pass  # already gone: only the affinity is left to delete
        except RevisionConflictError:
            if marked is not None:  # in use again: it stays this node's
                back = BlockAffinity(node, cidr, AffinityState.CONFIRMED)
                await ds.update(aff_key, back.to_bytes(), marked.mod_revision)
            return
        if marked is not None:
            await ds.delete(aff_key, revision=marked.mod_revision)
        log.info("block %s is empty: released from node %s", cidr, node)
    except DatastoreError as error:
        log.warning("releasing empty block %s of node %s stopped: %s", cidr, node, error)
    finally:
        store.invalidate(aff_key)
        store.invalidate(blk_key)


class AffinityRelease(enum.Enum):
    BLOCK_DELETED = "block deleted"  # the block was empty: block and affinity gone
    BLOCK_UNCLAIMED = "block unclaimed"  # others' addresses remain: the block stays, unclaimed
    AFFINITY_ONLY = "affinity only"  # the block was not this node's (or absent)
    NOTHING = "nothing"


async def release_affinity(stg: Staging, node: str, cidr: Network) -> AffinityRelease:
    """Take block `cidr` away from `node` (a node that is gone): delete the affinity, and the
    block when it is empty; a block still holding addresses stays, claimed by no node, so the
    addresses of pods that live on keep working and other nodes may borrow from it."""
    affinity = await stg.get_affinity(node, cidr)
    block = await stg.get_block(cidr)
    outcome = AffinityRelease.NOTHING
    if affinity is not None:
        stg.delete_affinity(node, cidr)
        outcome = AffinityRelease.AFFINITY_ONLY
    if block is not None and block.affine_node == node:
        if block.is_empty:
            stg.delete_block(cidr)
            outcome = AffinityRelease.BLOCK_DELETED
        else:
            block.affinity = None
            stg.put_block(block)
            outcome = AffinityRelease.BLOCK_UNCLAIMED
    return outcome
