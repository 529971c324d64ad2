"""Running the policy engine against a datastore: the piece Felix's main starts.

``start_policy_engine`` wires a syncer (Typha's or the datastore's) -> PolicyEngine ->
dataplane and returns the running engine. ``python -m services.felix.policy.agent`` runs
just that (used by the restart tests and the benchmark); ``--status-file`` gets the engine
status as JSON after every change, for whoever wants to wait for readiness without gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
from pathlib import Path

from libcalico.config import DatastoreConfig, add_datastore_arguments
from libcalico.datastore import Datastore, connect
from libcalico.syncer import Syncer
from libcalico.syncer.selection import create_syncer
from services.felix.dataplane import make_dataplane
from services.felix.policy.engine import DEFAULT_REFRESH_INTERVAL_S, PolicyEngine


async def start_policy_engine(
    datastore: Datastore,
    nodename: str,
    dataplane: str = "nftables",
    netns: str | None = None,
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL_S,
    syncer: Syncer | None = None,
) -> PolicyEngine:
    """Start the engine; updates come from ``syncer``, by default Typha when configured
    (TYPHA_ADDR) or else the datastore directly (``create_syncer``)."""
    if syncer is None:
        syncer = create_syncer(datastore, nodename, "felix")
    engine = PolicyEngine(syncer, nodename, make_dataplane(dataplane, netns), refresh_interval)
    await engine.start()
    return engine


def _write_status(engine: PolicyEngine, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(engine.status())))
    os.replace(tmp, path)


async def _run(args: argparse.Namespace) -> None:
    datastore = await connect(DatastoreConfig.from_args(args))
    engine = await start_policy_engine(
        datastore, args.nodename, args.dataplane, args.netns, args.refresh_interval
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    status_path = Path(args.status_file) if args.status_file else None
    try:
        while not stop.is_set():
            if status_path is not None:
                _write_status(engine, status_path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await engine.stop()
        await datastore.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Felix's policy engine on its own")
    add_datastore_arguments(parser)
    parser.add_argument("--nodename", required=True)
    parser.add_argument("--dataplane", default="nftables")
    parser.add_argument("--netns", help="program this network namespace (name or path)")
    parser.add_argument("--refresh-interval", type=float, default=DEFAULT_REFRESH_INTERVAL_S)
    parser.add_argument("--status-file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
