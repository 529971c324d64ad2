"""A TyphaSyncer in its own process (for tests that freeze a client): prints "in-sync" once
the snapshot arrived, then consumes until killed."""

from __future__ import annotations

import asyncio
import sys

from libcalico.syncer.api import InSync
from libcalico.syncer.typha import TyphaSyncer


async def run(address: str, node: str) -> None:
    syncer = TyphaSyncer(address, node, "felix", tracing=False)
    async for batch in syncer.updates():
        if any(isinstance(u, InSync) for u in batch):
            print("in-sync", flush=True)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2]))
