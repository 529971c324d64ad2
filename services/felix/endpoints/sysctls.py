"""The per-interface sysctls Calico sets on both ends of a pod's veth.

Host side: answer ARP for anything routed elsewhere (so the pod's 169.254.1.1 gateway is
answered by the host), without the proxy delay, and forward. IPv6: no router advertisements
accepted, no automatic link-local (Felix adds the fixed one derived from ee:ee:ee:ee:ee:ee).
Pod side: IPv6 enabled and duplicate address detection off, so addresses work at once.

Writes go to /proc/sys/net of the calling thread's namespace (see netns.entered).
"""

from __future__ import annotations

from collections.abc import Iterable

PROC_SYS_NET = "/proc/sys/net"


def host_sysctls(interface: str, ipv6: bool) -> list[tuple[str, str]]:
    settings = [
        (f"ipv4/conf/{interface}/proxy_arp", "1"),
        (f"ipv4/neigh/{interface}/proxy_delay", "0"),
        (f"ipv4/conf/{interface}/forwarding", "1"),
    ]
    if ipv6:
        settings += [
            (f"ipv6/conf/{interface}/accept_ra", "0"),
            (f"ipv6/conf/{interface}/forwarding", "1"),
            # 1 = none: no kernel-made link-local; Felix adds the well-known one itself.
            (f"ipv6/conf/{interface}/addr_gen_mode", "1"),
        ]
    return settings


def pod_sysctls(interface: str, ipv6: bool) -> list[tuple[str, str]]:
    if not ipv6:
        return []
    return [
        ("ipv6/conf/all/disable_ipv6", "0"),
        ("ipv6/conf/default/disable_ipv6", "0"),
        ("ipv6/conf/lo/disable_ipv6", "0"),
        (f"ipv6/conf/{interface}/disable_ipv6", "0"),
        (f"ipv6/conf/{interface}/accept_dad", "0"),
    ]


def write_sysctls(settings: Iterable[tuple[str, str]]) -> None:
    for path, value in settings:
        with open(f"{PROC_SYS_NET}/{path}", "w") as f:
            f.write(value)


def read_sysctl(path: str) -> str:
    with open(f"{PROC_SYS_NET}/{path}") as f:
        return f.read().strip()
