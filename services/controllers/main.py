"""calico-kube-controllers: Kubernetes objects -> Calico's datastore, and garbage collection.

Runs any number of replicas; the one holding the Lease `calico-kube-controllers` acts. Reads
the Kubernetes API through KUBECONFIG; writes the Calico datastore named by DATASTORE_TYPE
(etcdv3 or kubernetes) and ETCD_ENDPOINTS. Serves gRPC health and
calico.controllers.v1.KubeControllers on a Unix socket and/or TCP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import sys

from libcalico.config import ConfigError, DatastoreConfig, add_datastore_arguments

DEFAULT_SOCKET = "/var/run/calico/kube-controllers.sock"
DATASTORE_TYPES = ("etcdv3", "kubernetes")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None


def default_identity() -> str:
    """Unique per process, readable in the Lease: <hostname>_<pid>_<random>."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(3)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="calico-kube-controllers", description=__doc__)
    p.add_argument(
        "--socket",
        default=env.get("CALICO_KUBE_CONTROLLERS_SOCKET") or None,
        help=f"Unix socket to serve on (CALICO_KUBE_CONTROLLERS_SOCKET; default {DEFAULT_SOCKET}"
        " unless only --listen is given)",
    )
    p.add_argument(
        "--listen",
        default=env.get("CALICO_KUBE_CONTROLLERS_LISTEN") or None,
        help="also (or only) serve on this TCP host:port (CALICO_KUBE_CONTROLLERS_LISTEN)",
    )
    p.add_argument(
        "--kubeconfig",
        default=env.get("KUBECONFIG") or None,
        help="kubeconfig of the API server to read (KUBECONFIG; default ~/.kube/config)",
    )
    p.add_argument(
        "--enabled-controllers",
        default=env.get("ENABLED_CONTROLLERS") or None,
        help="comma-separated controllers to run, overriding KubeControllersConfiguration "
        "(ENABLED_CONTROLLERS): node,policy,namespace,serviceaccount,workloadendpoint",
    )
    p.add_argument(
        "--identity",
        default=env.get("CALICO_LEADER_IDENTITY") or None,
        help="this replica's name in the Lease (default <hostname>_<pid>_<random>)",
    )
    p.add_argument(
        "--lease-namespace",
        default=env.get("CALICO_LEASE_NAMESPACE") or "kube-system",
        help="namespace of the Lease calico-kube-controllers (CALICO_LEASE_NAMESPACE; "
        "default %(default)s)",
    )
    p.add_argument("--lease-duration", type=float, default=None, help="seconds (default 15)")
    p.add_argument("--renew-deadline", type=float, default=None, help="seconds (default 10)")
    p.add_argument("--retry-period", type=float, default=None, help="seconds (default 2)")
    add_datastore_arguments(p)
    args = p.parse_args(argv)
    if args.socket is None and args.listen is None:
        args.socket = DEFAULT_SOCKET
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from services.controllers import run_config
    from services.controllers.leader import LeaseTimings

    try:
        ds_config = DatastoreConfig.from_args(args)
        if ds_config.type not in DATASTORE_TYPES:
            raise ConfigError(
                f"DATASTORE_TYPE: calico-kube-controllers needs etcdv3 or kubernetes, not "
                f"{ds_config.type!r}"
            )
        enabled = run_config.parse_enabled_controllers(args.enabled_controllers)
        timings = LeaseTimings(
            lease_duration=args.lease_duration or _env_float("CALICO_LEASE_DURATION", 15.0),
            renew_deadline=args.renew_deadline or _env_float("CALICO_RENEW_DEADLINE", 10.0),
            retry_period=args.retry_period or _env_float("CALICO_RETRY_PERIOD", 2.0),
        )
        try:
            timings.check()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        print(f"calico-kube-controllers: {exc}", file=sys.stderr)
        return 2
    identity = args.identity or default_identity()

    from libcalico.datastore import connect
    from libcalico.datastore.kube_client import KubeClient
    from libcalico.runtime import ServiceRuntime, run_service
    from services.controllers.guarded import GuardedDatastore
    from services.controllers.leader import LeaderElector
    from services.controllers.manager import ControllerManager
    from services.controllers.status_api import StatusServicer, serve_status

    if args.socket:
        os.makedirs(os.path.dirname(os.path.abspath(args.socket)), exist_ok=True)
    runtime = ServiceRuntime(
        "calico-kube-controllers",
        tcp=args.listen,
        unix_socket=args.socket,
        datastore_type=ds_config.type,
    )

    async def setup(rt: ServiceRuntime) -> None:
        # Two clients: lease renewals never queue behind the informers' requests.
        lease_client = KubeClient(args.kubeconfig)
        kube = KubeClient(args.kubeconfig)
        elector = LeaderElector(
            lease_client, identity, namespace=args.lease_namespace, timings=timings
        )
        datastore = GuardedDatastore(await connect(ds_config), elector.leadership)
        manager = ControllerManager(kube, datastore, ds_config.type, enabled)
        servicer = StatusServicer(elector, manager, datastore, ds_config.type)
        serve_status(rt, servicer, elector)
        election = asyncio.create_task(elector.run(manager.lead), name="election")

        async def close_clients() -> None:
            await kube.close()
            await lease_client.close()

        async def stop_election() -> None:
            elector.leadership.revoke()  # no write from here on
            election.cancel()
            await asyncio.gather(election, return_exceptions=True)
            await elector.release()

        rt.on_shutdown(datastore.close)
        rt.on_shutdown(close_clients)
        rt.on_shutdown(stop_election)

    return run_service(runtime, setup)


if __name__ == "__main__":
    sys.exit(main())
