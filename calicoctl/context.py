"""What every calicoctl command shares: the datastore connection and error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from libcalico.config import DatastoreConfig
from libcalico.datastore import connect
from libcalico.resources import ResourceClient


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


@asynccontextmanager
async def connected_client(args: argparse.Namespace) -> AsyncIterator[ResourceClient]:
    datastore = await connect(DatastoreConfig.from_args(args))
    try:
        yield ResourceClient(datastore)
    finally:
        await datastore.close()
