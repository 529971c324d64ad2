"""The per-interface sysctls Calico sets on both ends of a pod's veth.

Host side: answer ARP for anything routed elsewhere (so the pod's 169.254.1.1 gateway is
answered by the host), without the proxy delay, and forward. IPv6: no router advertisements
accepted, no automatic link-local (Felix adds the fixed one derived from ee:ee:ee:ee:ee:ee).
Pod side: IPv6 enabled and duplicate address detection off, so addresses work at once.

Writes go to the `net` sysctls of the calling thread's namespace (see netns.entered): the
kernel resolves every name under /proc/sys/net in the namespace of the task that looks it
up, whichever procfs mount the path goes through. So the directory is configurable
(FELIX_PROCSYSNETPATH): in an unprivileged container, where the runtime mounts /proc/sys
read-only, the host's /proc/sys/net mounted writable elsewhere (/host/proc/sys/net) reaches
the node's and every pod's namespace alike, without a privileged container and without
exposing the host's other sysctls (kernel.*, vm.*).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

PROC_SYS_NET = "/proc/sys/net"
# Present in every network namespace (IPv6 may be disabled): probed at start-up.
_PROBE = "ipv4/conf/default/forwarding"


class SysctlDirError(ValueError):
    """The sysctl directory is not a writable /proc/sys/net."""


def check_sysctl_dir(root: str) -> None:
    """Fail at start-up, not on every pod's ADD, when `root` cannot take the writes."""
    probe = os.path.join(root, _PROBE)
    if not os.path.isfile(probe):
        raise SysctlDirError(f"{root} is not a /proc/sys/net directory (no {_PROBE})")
    if not os.access(probe, os.W_OK):
        # EROFS: the runtime's read-only /proc/sys of an unprivileged container.
        ro = os.statvfs(root).f_flag & os.ST_RDONLY
        why = "is mounted read-only" if ro else f"is not writable ({os.strerror(errno.EACCES)})"
        raise SysctlDirError(
            f"{root} {why}: mount the host's /proc/sys/net writable elsewhere "
            "(e.g. /host/proc/sys/net) and point FELIX_PROCSYSNETPATH at it"
        )


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


def write_sysctls(root: str, settings: Iterable[tuple[str, str]]) -> None:
    """Write each (path under `root`, value); `root` stands for /proc/sys/net."""
    for path, value in settings:
        with open(f"{root}/{path}", "w") as f:
            f.write(value)


def read_sysctl(root: str, path: str) -> str:
    with open(f"{root}/{path}") as f:
        return f.read().strip()
