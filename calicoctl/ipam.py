"""`calicoctl ipam ...`: show, check, release, configure. Talks directly to the datastore.

ipam show [--show-blocks] [-o json]       pools with size and use (and every block)
ipam check [-o json] [--report FILE]      consistency report (leaks, orphan blocks, ...)
ipam release --ip IP | --from-report FILE release one address, or a report's leaks (and
                                          trim its leaked handle counts)
ipam configure [--strictaffinity=true|false] [--max-blocks-per-host=N]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, DatastoreError, connect

Handler = Callable[[argparse.Namespace], int]
# calicoctl is not a node: its allocator only releases, which needs no node identity.
CALICOCTL_NODE = "calicoctl"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _run(work: Callable[[Datastore, argparse.Namespace], Awaitable[int]]) -> Handler:
    """Wrap an async command body: connect, run, close, map errors to exit status 1."""

    def handler(args: argparse.Namespace) -> int:
        async def body() -> int:
            datastore = await connect(DatastoreConfig.from_args(args))
            try:
                return await work(datastore, args)
            finally:
                await datastore.close()

        try:
            return asyncio.run(body())
        except (ValueError, DatastoreError, OSError) as exc:
            return _fail(str(exc))

    return handler


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# -- show -----------------------------------------------------------------------------------


async def _show(ds: Datastore, args: argparse.Namespace) -> int:
    from services.ipam.usage import ipam_usage

    usage = await ipam_usage(ds, args.show_blocks)
    if args.output == "json":
        _print_json(usage)
        return 0
    print(f"{'POOL':<20} {'CIDR':<22} {'SIZE':>10} {'IN USE':>8} {'FREE':>10} {'BLOCKS':>6}")
    for p in usage["pools"]:
        free = p["size"] - p["inUse"]
        line = f"{p['name']:<20} {p['cidr']:<22} {p['size']:>10} {p['inUse']:>8} {free:>10}"
        print(f"{line} {p['blocks']:>6}{'  (disabled)' if p['disabled'] else ''}")
    if args.show_blocks:
        print()
        print(f"{'BLOCK':<26} {'AFFINITY':<24} {'SIZE':>6} {'IN USE':>7}")
        for b in usage["blocks"]:
            affinity = b["affinity"] or "-"
            print(f"{b['cidr']:<26} {affinity:<24} {b['size']:>6} {b['inUse']:>7}")
            for a in b["allocations"]:
                attrs = ",".join(f"{k}={v}" for k, v in sorted(a["attributes"].items()))
                print(f"    {a['ip']:<22} {a['handle'] or '-'}  {attrs}")
    return 0


# -- check ----------------------------------------------------------------------------------


async def _check(ds: Datastore, args: argparse.Namespace) -> int:
    from services.ipam.check import run_check

    report = (await run_check(ds)).to_json()
    if args.report:
        text = json.dumps(report, indent=2, sort_keys=True) + "\n"
        await asyncio.to_thread(Path(args.report).write_text, text)
    if args.output == "json":
        _print_json(report)
        return 0
    s = report["summary"]
    print(
        f"checked {s['blocks']} blocks, {s['allocations']} allocations, "
        f"{s['handles']} handles, {s['nodes']} nodes: {s['problems']} problem(s)"
    )
    for leak in report["leaks"]:
        print(f"leak: {leak['ip']} (handle {leak['handle']}) has no live workload endpoint")
    for item in report["missingNodeBlocks"]:
        print(f"orphan block: {item['block']} is affine to missing node {item['node']}")
    for item in report["duplicates"]:
        print(f"duplicate: {item['ip']} allocated in blocks {', '.join(item['blocks'])}")
    for item in report["outOfBlock"]:
        print(f"bad record in block {item['block']}: {item.get('ip', '')} {item['problem']}")
    for item in report["handleMismatches"]:
        where = f" block {item['block']}" if "block" in item else ""
        detail = item.get("problem") or (
            f"handle counts {item['handleCount']}, block holds {item['blockCount']}"
        )
        print(f"handle mismatch: {item['handle']}{where}: {detail}")
    for item in report["leakedHandles"]:
        print(
            f"leaked handle: {item['handle']} counts {item['handleCount']} in block "
            f"{item['block']}, which holds {item['blockCount']}"
        )
    if args.report:
        print(f"report written to {args.report}")
    return 0


# -- release --------------------------------------------------------------------------------


def _handle_trims(args: argparse.Namespace) -> list[tuple[str, Any, int]]:
    """(handle, block, excess) for each leaked handle of the report."""
    if not args.from_report:
        return []
    try:
        report = json.loads(Path(args.from_report).read_text())
        return [
            (
                str(item["handle"]),
                ipaddress.ip_network(item["block"]),
                int(item["handleCount"]) - int(item["blockCount"]),
            )
            for item in report.get("leakedHandles", [])
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{args.from_report}: not an ipam check report ({exc})") from None


def _release_specs(args: argparse.Namespace) -> list[Any]:
    from libcalico.ipam.release import ReleaseSpec
    from services.ipam.allocator import parse_ip
    from services.ipam.errors import InvalidRequestError

    try:
        if args.ip:
            return [ReleaseSpec(parse_ip(args.ip))]
        report = json.loads(Path(args.from_report).read_text())
        return [
            ReleaseSpec(
                parse_ip(leak["ip"]),
                handle_id=leak.get("handle") or None,
                sequence_number=leak.get("sequenceNumber"),
            )
            for leak in report.get("leaks", [])
        ]
    except InvalidRequestError as exc:
        raise ValueError(str(exc)) from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{args.from_report}: not an ipam check report ({exc})") from None


async def _release(ds: Datastore, args: argparse.Namespace) -> int:
    from services.ipam.allocator import Allocator

    specs = _release_specs(args)
    trims = _handle_trims(args)
    allocator = Allocator(ds, CALICOCTL_NODE, cache=False)
    trimmed = 0
    try:
        result = await allocator.release_ips(specs)
        for handle_id, block, excess in trims:
            trimmed += bool(await allocator.trim_handle(handle_id, block, excess))
    finally:
        await allocator.close()
    for ip in result.released:
        print(f"released {ip}")
    if args.ip:
        if result.unallocated:
            return _fail(f"{args.ip} is not assigned")
        return 0
    for ip in result.unallocated:
        print(f"skipped {ip}: no longer allocated as reported (released or reassigned since)")
    print(f"released {len(result.released)} of {len(specs)} reported leak(s)")
    if trims:
        print(f"trimmed {trimmed} of {len(trims)} reported leaked handle count(s)")
    return 0


# -- configure ------------------------------------------------------------------------------


def _bool_arg(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


async def _configure(ds: Datastore, args: argparse.Namespace) -> int:
    from libcalico.resources import ResourceClient
    from libcalico.resources.client import ResourceNotFoundError

    client = ResourceClient(ds)
    try:
        current = await client.get("IPAMConfiguration", "default")
        spec = dict(current.get("spec") or {})
    except ResourceNotFoundError:
        spec = {}
    changed = []
    if args.strictaffinity is not None:
        spec["strictAffinity"] = args.strictaffinity
        changed.append(f"strictAffinity={str(args.strictaffinity).lower()}")
    if args.max_blocks_per_host is not None:
        spec["maxBlocksPerHost"] = args.max_blocks_per_host  # validated (>= 0) by apply
        changed.append(f"maxBlocksPerHost={args.max_blocks_per_host}")
    if not changed:
        print(
            "calicoctl ipam configure: give --strictaffinity and/or --max-blocks-per-host",
            file=sys.stderr,
        )
        return 1
    await client.apply(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPAMConfiguration",
            "metadata": {"name": "default"},
            "spec": spec,
        }
    )
    print(f"IPAM configuration updated: {', '.join(changed)}")
    return 0


# -- registration ---------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ipam = subparsers.add_parser(
        "ipam",
        help="IP address management",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = ipam.add_subparsers(dest="ipam_command", metavar="SUBCOMMAND", required=True)

    show = commands.add_parser("show", help="pools with their use (and blocks)")
    show.add_argument("--show-blocks", action="store_true", help="list every block")
    show.add_argument("-o", "--output", choices=("table", "json"), default="table")
    show.set_defaults(func=_run(_show))

    check = commands.add_parser("check", help="consistency report")
    check.add_argument("-o", "--output", choices=("table", "json"), default="table")
    check.add_argument("--report", metavar="FILE", help="also write the JSON report to FILE")
    check.set_defaults(func=_run(_check))

    release = commands.add_parser("release", help="release an address or a report's leaks")
    which = release.add_mutually_exclusive_group(required=True)
    which.add_argument("--ip", help="the address to release")
    which.add_argument("--from-report", metavar="FILE", help="release the leaks of a report")
    release.set_defaults(func=_run(_release))

    configure = commands.add_parser("configure", help="change the IPAM configuration")
    configure.add_argument("--strictaffinity", type=_bool_arg, metavar="true|false")
    configure.add_argument(
        "--max-blocks-per-host", type=int, metavar="N", help="blocks a node may claim (0: no limit)"
    )
    configure.set_defaults(func=_run(_configure))
