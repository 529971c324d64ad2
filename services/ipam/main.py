"""calico-ipamd: the per-node IPAM daemon (gRPC on a Unix socket, optionally on TCP)."""

from __future__ import annotations

import argparse
import os
import sys

from libcalico.config import ConfigError, DatastoreConfig, add_datastore_arguments, node_name

DEFAULT_SOCKET = "/var/run/calico/ipam.sock"
# Pools, IPAMConfiguration and node labels are re-read at most this often.
CLUSTER_CACHE_SECONDS = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="calico-ipamd", description=__doc__)
    parser.add_argument(
        "--socket",
        default=os.environ.get("CALICO_IPAM_SOCKET", DEFAULT_SOCKET),
        help="Unix socket to serve on (CALICO_IPAM_SOCKET; default %(default)s)",
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("CALICO_IPAM_LISTEN") or None,
        help="also serve on this TCP host:port (CALICO_IPAM_LISTEN), e.g. 127.0.0.1:5480",
    )
    parser.add_argument("--nodename", help="this node's name (NODENAME; default the hostname)")
    parser.add_argument(
        "--cluster-cache-seconds",
        type=float,
        default=CLUSTER_CACHE_SECONDS,
        help="how long pools/IPAM configuration are cached (default %(default)s)",
    )
    parser.add_argument(
        "--batch-linger-seconds",
        type=float,
        help="longest wait for concurrent requests to share a datastore transaction "
        "(0: never wait; default 0.01)",
    )
    # Hidden: write a cProfile of the whole run to this file at exit (benchmarks).
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    add_datastore_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ds_config = DatastoreConfig.from_args(args)
    except ConfigError as exc:
        print(f"calico-ipamd: {exc}", file=sys.stderr)
        return 2
    node = node_name(args.nodename)

    # Heavy imports only once the arguments are known to be good.
    from libcalico.datastore import connect
    from libcalico.runtime import ServiceRuntime, run_service
    from services.ipam.allocator import Allocator
    from services.ipam.server import SERVICE_NAME, IpamServicer, add_to_server

    socket_dir = os.path.dirname(os.path.abspath(args.socket))
    os.makedirs(socket_dir, exist_ok=True)
    runtime = ServiceRuntime(
        "calico-ipamd",
        tcp=args.listen,
        unix_socket=args.socket,
        node_name=node,
        datastore_type=ds_config.type,
    )

    async def setup(rt: ServiceRuntime) -> None:
        datastore = await connect(ds_config)
        allocator = Allocator(datastore, node, cluster_ttl=args.cluster_cache_seconds)
        if args.batch_linger_seconds is not None:
            allocator.committer.linger = args.batch_linger_seconds
        rt.add(IpamServicer(allocator), add_to_server, SERVICE_NAME)
        rt.on_shutdown(datastore.close)
        rt.on_shutdown(allocator.close)

    if not args.profile:
        return run_service(runtime, setup)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(run_service, runtime, setup)
    finally:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    sys.exit(main())
