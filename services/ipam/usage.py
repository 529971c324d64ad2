"""`calicoctl ipam show`: pools with their size and use, and optionally every block."""

from __future__ import annotations

from typing import Any

from libcalico.datastore import Datastore
from libcalico.ipam.model import Block
from libcalico.ipam.store import IpamStore
from services.ipam.cluster import ClusterView


def _block_json(block: Block, pool: str | None) -> dict[str, Any]:
    return {
        "cidr": str(block.cidr),
        "pool": pool,
        "affinity": block.affinity,
        "size": block.cidr.num_addresses,
        "inUse": block.in_use,
        "free": block.free_count,
        "allocations": [
            {
                "ip": str(a.ip),
                "handle": a.handle_id,
                "attributes": a.attributes,
                "sequenceNumber": a.sequence_number,
            }
            for a in block.all_allocations()
        ],
    }


async def ipam_usage(ds: Datastore, show_blocks: bool) -> dict[str, Any]:
    pools = await ClusterView(ds).pools()
    store = IpamStore(ds, cache=False)
    blocks = [b.value for v in (4, 6) for b in await store.list_blocks(v)]
    pool_rows = []
    for pool in pools:
        mine = [b for b in blocks if b.cidr.version == pool.version and b.cidr.subnet_of(pool.cidr)]  # type: ignore[arg-type]
        pool_rows.append(
            {
                "name": pool.name,
                "cidr": str(pool.cidr),
                "blockSize": pool.block_size,
                "disabled": pool.disabled,
                "size": pool.cidr.num_addresses,
                "inUse": sum(b.in_use for b in mine),
                "blocks": len(mine),
            }
        )
    out: dict[str, Any] = {"pools": pool_rows}
    if show_blocks:
        rows = []
        for block in sorted(blocks, key=lambda b: (b.cidr.version, int(b.cidr.network_address))):
            pool_name = next(
                (
                    p.name
                    for p in pools
                    if p.version == block.cidr.version and block.cidr.subnet_of(p.cidr)  # type: ignore[arg-type]
                ),
                None,
            )
            rows.append(_block_json(block, pool_name))
        out["blocks"] = rows
    return out
