"""`calicoctl ipam check`: a consistency report over a snapshot of the IPAM data.

Problems found:
  leaks              allocations whose handle has no live WorkloadEndpoint (tunnel addresses,
                     attribute `type` ending in TunnelAddress, are checked against their node)
  missing_node_blocks blocks affine to a node that has no Node resource
  duplicates         one address allocated in more than one block
  out_of_block       allocation records that do not fit their block (bad ordinal/attribute,
                     an ordinal both free and allocated, or neither)
  leaked_handles     a handle counting more addresses in a block than the block holds for it:
                     what a write interrupted between a handle and its block leaves where a
                     txn is ordered writes (kubernetes datastore; handles grow first)
  handle_mismatches  a block holding more of a handle's addresses than the handle counts, or
                     an allocation whose handle object is missing
Each leak carries the block, handle and sequence number, so `ipam release --from-report`
releases exactly what was observed and nothing reassigned since; each leaked handle carries
the counts seen, and the release drops at most that excess.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from libcalico.datastore import Datastore
from libcalico.datastore.keys import GROUP_CALICO, resource_prefix
from libcalico.ipam.model import (
    ATTR_NAMESPACE,
    ATTR_NODE,
    ATTR_POD,
    TUNNEL_TYPE_SUFFIX,
    Block,
)
from libcalico.ipam.store import IpamStore


@dataclass
class Report:
    leaks: list[dict[str, Any]] = field(default_factory=list)
    missing_node_blocks: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    out_of_block: list[dict[str, Any]] = field(default_factory=list)
    handle_mismatches: list[dict[str, Any]] = field(default_factory=list)
    leaked_handles: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)

    @property
    def problem_count(self) -> int:
        return (
            len(self.leaks)
            + len(self.missing_node_blocks)
            + len(self.duplicates)
            + len(self.out_of_block)
            + len(self.handle_mismatches)
            + len(self.leaked_handles)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": {**self.summary, "problems": self.problem_count},
            "leaks": self.leaks,
            "missingNodeBlocks": self.missing_node_blocks,
            "duplicates": self.duplicates,
            "outOfBlock": self.out_of_block,
            "handleMismatches": self.handle_mismatches,
            "leakedHandles": self.leaked_handles,
        }


@dataclass
class _LiveWorkloads:
    container_ids: set[str] = field(default_factory=set)
    pods: set[tuple[str, str]] = field(default_factory=set)
    ips: set[str] = field(default_factory=set)

    def holds(self, ip: str, handle_id: str | None, attrs: dict[str, str]) -> bool:
        if handle_id and handle_id.rsplit(".", 1)[-1] in self.container_ids:
            return True
        pod = (attrs.get(ATTR_NAMESPACE, ""), attrs.get(ATTR_POD, ""))
        if pod[1] and pod in self.pods:
            return True
        return ip in self.ips


async def _list_objects(ds: Datastore, plural: str) -> list[dict[str, Any]]:
    result = await ds.list(resource_prefix(GROUP_CALICO, plural))
    out = []
    for kv in result.items:
        try:
            out.append(json.loads(kv.value))
        except ValueError:
            continue
    return out


async def _live_workloads(ds: Datastore) -> _LiveWorkloads:
    live = _LiveWorkloads()
    for wep in await _list_objects(ds, "workloadendpoints"):
        spec = wep.get("spec") or {}
        meta = wep.get("metadata") or {}
        if spec.get("containerID"):
            live.container_ids.add(str(spec["containerID"]))
        if spec.get("pod"):
            live.pods.add((str(meta.get("namespace", "")), str(spec["pod"])))
        for net in spec.get("ipNetworks") or []:
            live.ips.add(str(net).split("/")[0])
    return live


def _check_block_records(block: Block, report: Report) -> None:
    size = block.cidr.num_addresses
    cidr = str(block.cidr)
    if len(block.allocations) != size:
        report.out_of_block.append(
            {"block": cidr, "problem": f"{len(block.allocations)} allocation slots for {size}"}
        )
    free = set(block.unallocated)
    for ordinal in free:
        if not 0 <= ordinal < size:
            report.out_of_block.append(
                {"block": cidr, "problem": f"free ordinal {ordinal} outside the block"}
            )
    for ordinal, index in enumerate(block.allocations[:size]):
        if index is None:
            if ordinal not in free:
                report.out_of_block.append(
                    {
                        "block": cidr,
                        "ip": str(block.ip_of(ordinal)),
                        "problem": "neither free nor allocated",
                    }
                )
            continue
        if not 0 <= index < len(block.attributes):
            report.out_of_block.append(
                {
                    "block": cidr,
                    "ip": str(block.ip_of(ordinal)),
                    "problem": f"attribute index {index} out of range",
                }
            )
        if ordinal in free:
            report.out_of_block.append(
                {
                    "block": cidr,
                    "ip": str(block.ip_of(ordinal)),
                    "problem": "both free and allocated",
                }
            )


async def run_check(ds: Datastore) -> Report:
    store = IpamStore(ds, cache=False)
    report = Report()
    blocks = [b.value for v in (4, 6) for b in await store.list_blocks(v)]
    handles = {h.value.handle_id: h.value for h in await store.list_handles()}
    nodes = {str((n.get("metadata") or {}).get("name")) for n in await _list_objects(ds, "nodes")}
    live = await _live_workloads(ds)

    owners: dict[str, list[str]] = defaultdict(list)
    # handle -> block -> count, as the blocks say.
    counted: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    allocations = 0
    for block in blocks:
        cidr = str(block.cidr)
        node = block.affine_node
        if node is not None and node not in nodes:
            report.missing_node_blocks.append({"block": cidr, "node": node})
        _check_block_records(block, report)
        for alloc in _safe_allocations(block):
            allocations += 1
            ip = str(alloc.ip)
            owners[ip].append(cidr)
            if alloc.handle_id:
                counted[alloc.handle_id][cidr] += 1
            kind = alloc.attributes.get("type", "")
            if kind.endswith(TUNNEL_TYPE_SUFFIX):
                alive = alloc.attributes.get(ATTR_NODE, node or "") in nodes
            else:
                alive = live.holds(ip, alloc.handle_id, alloc.attributes)
            if not alive:
                report.leaks.append(
                    {
                        "ip": ip,
                        "block": cidr,
                        "handle": alloc.handle_id,
                        "attributes": alloc.attributes,
                        "sequenceNumber": alloc.sequence_number,
                    }
                )
    for ip, cidrs in sorted(owners.items()):
        if len(cidrs) > 1:
            report.duplicates.append({"ip": ip, "blocks": cidrs})
    for handle_id in sorted(set(counted) | set(handles)):
        in_blocks = counted.get(handle_id, {})
        handle = handles.get(handle_id)
        if handle is None:
            report.handle_mismatches.append(
                {"handle": handle_id, "problem": "allocations exist but the handle does not"}
            )
            continue
        for cidr in sorted(set(in_blocks) | set(handle.blocks)):
            held, counted_by_handle = in_blocks.get(cidr, 0), handle.blocks.get(cidr, 0)
            if held == counted_by_handle:
                continue
            item = {
                "handle": handle_id,
                "block": cidr,
                "handleCount": counted_by_handle,
                "blockCount": held,
            }
            if counted_by_handle > held:
                report.leaked_handles.append(item)
            else:
                report.handle_mismatches.append(item)
    report.summary = {
        "blocks": len(blocks),
        "allocations": allocations,
        "handles": len(handles),
        "nodes": len(nodes),
    }
    return report


def _safe_allocations(block: Block) -> list[Any]:
    out = []
    for ordinal, index in enumerate(block.allocations[: block.cidr.num_addresses]):
        if index is not None and 0 <= index < len(block.attributes):
            alloc = block.allocation(ordinal)
            if alloc is not None:
                out.append(alloc)
    return out
