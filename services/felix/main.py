"""calico-felix: the per-node agent: pod endpoint plumbing and the policy engine.

    calico-felix [--socket PATH] [--nodename NAME] [--mtu N] [--dataplane KIND]
                 [--refresh-interval S] [--datastore-type ...]

It serves the endpoint API, its status and health on a Unix socket, and programs policy with
the nftables (default), iptables or iptables-legacy dataplane (FELIX_DATAPLANE), repairing
drift every --refresh-interval seconds (FELIX_REFRESHINTERVAL, default 30); `none` runs the
endpoint plumbing alone. Updates come from Typha when TYPHA_ADDR is set, else the datastore.

CALICO_FELIX_SOCKET (default /var/run/calico/felix.sock), CALICO_IPAM_SOCKET (this node's
calico-ipamd, asked for the tunnel addresses), NODENAME, FELIX_VETHMTU (0: the overlay's or
the detected MTU, see DESIGN.md), FELIX_POLICYTIMEOUT (seconds, default 10),
FELIX_PROCSYSNETPATH (where /proc/sys/net is writable, default /proc/sys/net; in an
unprivileged container the host's /proc/sys/net mounted at e.g. /host/proc/sys/net) and the
datastore variables (DATASTORE_TYPE, ETCD_ENDPOINTS, CALICO_DATASTORE_PATH) configure it.
"""

from __future__ import annotations

import argparse
import os
import sys

from libcalico.config import ConfigError, DatastoreConfig, add_datastore_arguments, node_name
from services.felix.endpoints.sysctls import PROC_SYS_NET, SysctlDirError, check_sysctl_dir

DEFAULT_SOCKET = "/var/run/calico/felix.sock"
DEFAULT_IPAM_SOCKET = "/var/run/calico/ipam.sock"
DEFAULT_POLICY_TIMEOUT = 10.0
DEFAULT_REFRESH_INTERVAL = 30.0
DATAPLANES = ("nftables", "iptables", "iptables-legacy", "none")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None


CAP_NET_RAW = 13  # linux/capability.h


def _has_effective_capability(bit: int) -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return True  # no capability line: not Linux as we know it; let the dataplane say


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="calico-felix", description=__doc__)
    parser.add_argument(
        "--socket",
        default=os.environ.get("CALICO_FELIX_SOCKET", DEFAULT_SOCKET),
        help="Unix socket of the endpoint API (CALICO_FELIX_SOCKET; default %(default)s)",
    )
    parser.add_argument(
        "--ipam-socket",
        default=os.environ.get("CALICO_IPAM_SOCKET", DEFAULT_IPAM_SOCKET),
        help="this node's calico-ipamd, for the VXLAN tunnel address "
        "(CALICO_IPAM_SOCKET; default %(default)s)",
    )
    parser.add_argument("--nodename", help="this node's name (NODENAME; default the hostname)")
    parser.add_argument(
        "--mtu", type=int, help="veth MTU (FELIX_VETHMTU; default: the overlay's or detected)"
    )
    parser.add_argument(
        "--policy-timeout",
        type=float,
        help="seconds an ADD waits for policy (FELIX_POLICYTIMEOUT; default 10)",
    )
    parser.add_argument(
        "--dataplane",
        choices=DATAPLANES,
        default=os.environ.get("FELIX_DATAPLANE", "nftables"),
        help="policy dataplane (FELIX_DATAPLANE; default %(default)s)",
    )
    parser.add_argument(
        "--refresh-interval",
        type=float,
        help="seconds between drift checks of the kernel (FELIX_REFRESHINTERVAL; default 30)",
    )
    parser.add_argument(
        "--proc-sys-net",
        default=os.environ.get("FELIX_PROCSYSNETPATH", "").strip() or PROC_SYS_NET,
        help="a writable view of /proc/sys/net, for the per-veth sysctls "
        "(FELIX_PROCSYSNETPATH; default %(default)s)",
    )
    add_datastore_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ds_config = DatastoreConfig.from_args(args)
        mtu = args.mtu if args.mtu is not None else int(_env_number("FELIX_VETHMTU", 0))
        policy_timeout = (
            args.policy_timeout
            if args.policy_timeout is not None
            else _env_number("FELIX_POLICYTIMEOUT", DEFAULT_POLICY_TIMEOUT)
        )
        refresh_interval = (
            args.refresh_interval
            if args.refresh_interval is not None
            else _env_number("FELIX_REFRESHINTERVAL", DEFAULT_REFRESH_INTERVAL)
        )
        if args.dataplane not in DATAPLANES:
            raise ConfigError(f"FELIX_DATAPLANE: {args.dataplane!r} is not one of {DATAPLANES}")
        if mtu < 0 or policy_timeout <= 0 or refresh_interval <= 0:
            raise ConfigError("--mtu must be >= 0, --policy-timeout and --refresh-interval > 0")
        if args.dataplane == "iptables-legacy" and not _has_effective_capability(CAP_NET_RAW):
            # libiptc talks to the kernel over a raw socket (iptables-nft and nft: netlink).
            raise ConfigError(
                "FELIX_DATAPLANE: iptables-legacy needs CAP_NET_RAW (add it to the container's "
                "capabilities, or use nftables or iptables)"
            )
        try:
            check_sysctl_dir(args.proc_sys_net)
        except SysctlDirError as exc:
            raise ConfigError(f"FELIX_PROCSYSNETPATH: {exc}") from None
    except ConfigError as exc:
        print(f"calico-felix: {exc}", file=sys.stderr)
        return 2
    node = node_name(args.nodename)

    # Heavy imports only once the arguments are known to be good.
    from libcalico.runtime import ServiceRuntime, run_service
    from services.felix.daemon import build_felix

    os.makedirs(os.path.dirname(os.path.abspath(args.socket)), exist_ok=True)
    runtime = ServiceRuntime(
        "calico-felix",
        tcp=None,
        unix_socket=args.socket,
        node_name=node,
        datastore_type=ds_config.type,
    )

    async def setup(rt: ServiceRuntime) -> None:
        await build_felix(
            rt,
            ds_config,
            node=node,
            ipam_socket=args.ipam_socket,
            mtu=mtu,
            policy_timeout=policy_timeout,
            policy_dataplane=None if args.dataplane == "none" else args.dataplane,
            refresh_interval=refresh_interval,
            sysctl_dir=args.proc_sys_net,
        )

    return run_service(runtime, setup)


if __name__ == "__main__":
    sys.exit(main())
