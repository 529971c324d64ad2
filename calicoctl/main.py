"""calicoctl: manage Calico resources, IPAM and node status.

Exit 0 on success, 1 on any error (the error on stderr). The datastore is chosen like the
services choose it: DATASTORE_TYPE, ETCD_ENDPOINTS, CALICO_DATASTORE_PATH, or the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from calicoctl import resource_commands
from calicoctl.context import fail
from libcalico.config import add_datastore_arguments
from libcalico.datastore import DatastoreError


class _CommandParser(argparse.ArgumentParser):
    """A (sub)command parser that also takes the datastore flags, so they may follow it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: a flag absent here must not overwrite one given before the command.
        add_datastore_arguments(self, default=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calicoctl", description=__doc__.splitlines()[0])
    add_datastore_arguments(parser)
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser
    )
    resource_commands.register(subparsers)
    try:
        from calicoctl import ipam
    except ImportError:  # the IPAM commands arrive with the IPAM service
        pass
    else:
        ipam.register(subparsers)
    from calicoctl import node

    node.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except (ValueError, DatastoreError, OSError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
