"""calico-bgpd: this node's BGP. Follows the datastore, drives and supervises BIRD.

    calico-bgpd [--socket PATH] [--nodename NAME] [--bird-dir DIR] [--bird PATH]
                [--birdc PATH] [--datastore-type ...]

Run it inside the node's network namespace: BIRD, its child, peers from there. It keeps
DIR/bird.conf (what BIRD runs), bird.ctl (BIRD's control socket), bird.pid and bird.log, and
serves calico.bgp.v1.BGPStatus, health and reflection on the Unix socket. BIRD outlives it:
SIGTERM stops calico-bgpd only, and a restarted calico-bgpd adopts the running BIRD.

Environment: CALICO_BGPD_SOCKET (default /var/run/calico/bgpd.sock), NODENAME,
CALICO_BIRD_DIR (default /var/run/calico/bird), TYPHA_ADDR (follow Typha instead of the
datastore), DATASTORE_TYPE / ETCD_ENDPOINTS / CALICO_DATASTORE_PATH,
CALICO_BGP_CONNECT_RETRY (seconds for BIRD's connect delay/retry and error wait; default
BIRD's own), CALICO_BGPD_EXTRA_CONFIG_FILE (a file appended verbatim to the rendered BIRD
configuration on every apply; SIGHUP re-reads it: an operator and test hook).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from libcalico.config import ConfigError, DatastoreConfig, add_datastore_arguments, node_name

DEFAULT_SOCKET = "/var/run/calico/bgpd.sock"
DEFAULT_BIRD_DIR = "/var/run/calico/bird"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="calico-bgpd", description=__doc__)
    parser.add_argument(
        "--socket",
        default=env.get("CALICO_BGPD_SOCKET") or DEFAULT_SOCKET,
        help="Unix socket of the status API (CALICO_BGPD_SOCKET; default %(default)s)",
    )
    parser.add_argument("--nodename", help="this node's name (NODENAME; default the hostname)")
    parser.add_argument(
        "--bird-dir",
        default=env.get("CALICO_BIRD_DIR") or DEFAULT_BIRD_DIR,
        help="BIRD's configuration, socket, PID and log (CALICO_BIRD_DIR; default %(default)s)",
    )
    parser.add_argument("--bird", default="bird", help="the BIRD 2 daemon (default %(default)s)")
    parser.add_argument(
        "--birdc",
        default="birdc",
        help="accepted for compatibility: calico-bgpd speaks BIRD's control socket itself",
    )
    add_datastore_arguments(parser)
    return parser.parse_args(argv)


def _connect_retry() -> float | None:
    raw = os.environ.get("CALICO_BGP_CONNECT_RETRY", "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"CALICO_BGP_CONNECT_RETRY: {raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError("CALICO_BGP_CONNECT_RETRY: must be > 0 seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ds_config = DatastoreConfig.from_args(args)
        connect_retry = _connect_retry()
    except ConfigError as exc:
        print(f"calico-bgpd: {exc}", file=sys.stderr)
        return 2
    node = node_name(args.nodename)
    extra = os.environ.get("CALICO_BGPD_EXTRA_CONFIG_FILE", "").strip()

    # Heavy imports only once the arguments are known to be good.
    from libcalico.runtime import ServiceRuntime, run_service
    from libcalico.syncer.selection import create_syncer
    from services.bgp.daemon import BGPDaemon, DaemonSettings
    from services.bgp.status_api import SERVICE_NAME, BGPStatusServicer, add_to_server

    os.makedirs(os.path.dirname(os.path.abspath(args.socket)), exist_ok=True)
    runtime = ServiceRuntime(
        "calico-bgpd",
        tcp=None,
        unix_socket=args.socket,
        node_name=node,
        datastore_type=ds_config.type,
        grace_period=0.5,
    )
    settings = DaemonSettings(
        node=node,
        bird_dir=Path(args.bird_dir).absolute(),
        bird=args.bird,
        connect_retry=connect_retry,
        extra_config_file=Path(extra) if extra else None,
    )

    async def setup(rt: ServiceRuntime) -> None:
        health: asyncio.Queue[bool] = asyncio.Queue()
        syncer = create_syncer(ds_config, node, "bgp")
        daemon = BGPDaemon(settings, syncer, on_health=health.put_nowait)
        rt.add(BGPStatusServicer(daemon), add_to_server, SERVICE_NAME)

        async def follow_health() -> None:
            # The runtime marks every service SERVING when it starts; ours is not until BIRD
            # runs a configuration we applied.
            await rt.wait_started()
            await rt.set_serving(SERVICE_NAME, False)
            while True:
                await rt.set_serving(SERVICE_NAME, await health.get())

        health_task = asyncio.create_task(follow_health(), name="bgpd-health")
        await daemon.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, daemon.request_apply)

        async def stop() -> None:
            loop.remove_signal_handler(signal.SIGHUP)
            health_task.cancel()
            await daemon.stop()

        rt.on_shutdown(stop)

    return run_service(runtime, setup)


if __name__ == "__main__":
    sys.exit(main())
