"""calico-typha: one datastore watch, fanned out to every Felix / BGP client.

Serves calico.typha.v1.Typha on TCP (optionally mutual TLS) and/or a Unix socket. Settings
come from flags or Calico's environment variables (TYPHA_*).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from libcalico.config import ConfigError, DatastoreConfig, add_datastore_arguments, node_name

DEFAULT_LISTEN = "127.0.0.1:5473"
SHUTDOWN_GRACE_S = 0.5  # streams never finish on their own; clients reconnect elsewhere


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="calico-typha", description=__doc__)
    p.add_argument(
        "--listen",
        default=env.get("TYPHA_LISTEN") or None,
        help=f"TCP host:port (TYPHA_LISTEN; default {DEFAULT_LISTEN} unless only "
        "--socket is given; port 0 picks one, see --ready-file)",
    )
    p.add_argument(
        "--socket",
        default=env.get("TYPHA_SOCKET") or None,
        help="also (or only) serve on this Unix socket (TYPHA_SOCKET)",
    )
    p.add_argument(
        "--syncer-types",
        default=env.get("TYPHA_SYNCERTYPES", "felix,bgp"),
        help="comma-separated syncer types to serve (default %(default)s)",
    )
    p.add_argument(
        "--ca-file",
        default=env.get("TYPHA_CAFILE") or None,
        help="CA for client certificates (TYPHA_CAFILE); enables mutual TLS",
    )
    p.add_argument(
        "--cert-file",
        default=env.get("TYPHA_SERVERCERTFILE") or None,
        help="Typha's certificate (TYPHA_SERVERCERTFILE)",
    )
    p.add_argument(
        "--key-file",
        default=env.get("TYPHA_SERVERKEYFILE") or None,
        help="Typha's private key (TYPHA_SERVERKEYFILE)",
    )
    p.add_argument(
        "--client-cn",
        default=env.get("TYPHA_CLIENTCN") or None,
        help="common name client certificates must carry (TYPHA_CLIENTCN)",
    )
    p.add_argument(
        "--client-uri-san",
        default=env.get("TYPHA_CLIENTURISAN") or None,
        help="or this URI SAN (TYPHA_CLIENTURISAN)",
    )
    p.add_argument(
        "--max-lag-seconds",
        type=float,
        default=_env_float("TYPHA_MAXLAGSECONDS", 60.0),
        help="drop a client whose oldest unsent update is older (default %(default)s)",
    )
    p.add_argument(
        "--max-lag-breadcrumbs",
        type=int,
        default=int(_env_float("TYPHA_MAXLAGBREADCRUMBS", 10_000)),
        help="drop a client this many batches behind (default %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=int(_env_float("TYPHA_MAXCONNECTIONSUPPERLIMIT", 10_000)),
    )
    p.add_argument(
        "--keepalive-seconds",
        type=float,
        default=_env_float("TYPHA_KEEPALIVESECONDS", 10.0),
        help="HTTP/2 keepalive ping interval (default %(default)s)",
    )
    p.add_argument(
        "--keepalive-timeout-seconds",
        type=float,
        default=_env_float("TYPHA_KEEPALIVETIMEOUTSECONDS", 20.0),
        help="drop a client not answering a ping this long (default %(default)s)",
    )
    p.add_argument("--snapshot-batch-size", type=int, default=200)
    p.add_argument("--ready-file", help="write {tcp, unix, pid} as JSON here once in sync")
    p.add_argument("--nodename", help="this node's name (NODENAME; default the hostname)")
    add_datastore_arguments(p)
    args = p.parse_args(argv)
    if args.listen is None and args.socket is None:
        args.listen = DEFAULT_LISTEN
    return args


def _write_ready_file(path: str, ready: Mapping[str, object]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(ready))
    os.replace(tmp, path)  # readers never see a half-written file


def _server_tls(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from services.typha.tls import ServerTLS

    files = [args.ca_file, args.cert_file, args.key_file]
    if not any(files):
        return None
    if not all(files):
        raise ConfigError("TLS needs --ca-file, --cert-file and --key-file together")
    return ServerTLS(
        args.ca_file, args.cert_file, args.key_file, args.client_cn, args.client_uri_san
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ds_config = DatastoreConfig.from_args(args)
        tls = _server_tls(args)
        types = [t.strip() for t in args.syncer_types.split(",") if t.strip()]
        from libcalico.syncer.selection import SYNCER_PREFIXES

        unknown = [t for t in types if t not in SYNCER_PREFIXES]
        if unknown or not types:
            raise ConfigError(f"--syncer-types: unknown {unknown}; have {sorted(SYNCER_PREFIXES)}")
    except ConfigError as exc:
        print(f"calico-typha: {exc}", file=sys.stderr)
        return 2

    from libcalico.datastore import connect
    from libcalico.runtime import ServiceRuntime, run_service
    from services.typha.cache import SyncerCache
    from services.typha.feed import DatastoreFeed
    from services.typha.server import SERVICE_NAME, Limits, TyphaServicer
    from services.typha.tls import TyphaRuntime

    keepalive_ms = int(args.keepalive_seconds * 1000)
    options = [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", int(args.keepalive_timeout_seconds * 1000)),
        # What this gRPC version actually enforces as the ping-ack deadline (verified by the
        # frozen-client test); keepalive_timeout_ms alone never fires.
        ("grpc.http2.ping_timeout_ms", int(args.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Clients ping as often as we do: never answer their pings with GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", min(keepalive_ms, 5000)),
        ("grpc.http2.max_ping_strikes", 0),
    ]
    runtime = TyphaRuntime(
        "calico-typha",
        tcp=args.listen,
        unix_socket=args.socket,
        node_name=node_name(args.nodename),
        datastore_type=ds_config.type,
        grace_period=SHUTDOWN_GRACE_S,
        options=options,
        tls=tls,
    )

    async def setup(rt: ServiceRuntime) -> None:
        datastore = await connect(ds_config)
        caches = {t: SyncerCache(t, SYNCER_PREFIXES[t], args.snapshot_batch_size) for t in types}
        feed = DatastoreFeed(datastore, list(caches.values()))
        limits = Limits(args.max_lag_seconds, args.max_lag_breadcrumbs, args.max_connections)
        servicer = TyphaServicer(caches, limits, tls, open_watches=lambda: feed.open_watches)
        rt.add(servicer, servicer.add_to_server, SERVICE_NAME)
        feed_task = asyncio.create_task(feed.run(), name="typha-feed")
        servicer.start()

        async def stop_feed() -> None:
            feed_task.cancel()
            await asyncio.gather(feed_task, return_exceptions=True)
            await feed.close()

        async def announce() -> None:
            await rt.wait_started()
            await rt.set_serving(SERVICE_NAME, False)
            for cache in caches.values():
                await cache.in_sync.wait()
            await rt.set_serving(SERVICE_NAME, True)
            if args.ready_file:
                ready = {"tcp": rt.tcp_address, "unix": rt.unix_address, "pid": os.getpid()}
                _write_ready_file(args.ready_file, ready)

        announcer = asyncio.create_task(announce(), name="typha-announce")
        rt.on_shutdown(stop_feed)
        rt.on_shutdown(servicer.close)

        def stop_announcer() -> None:
            announcer.cancel()

        rt.on_shutdown(stop_announcer)

    return run_service(runtime, setup)


if __name__ == "__main__":
    sys.exit(main())
