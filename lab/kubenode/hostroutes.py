"""The node's own address on a link of its own, and unreachable routes for its ranges.

Both are recorded in the state as they are made and removed by `remove`, which is idempotent
(gone already is fine): a crash of `up` leaves a record that `down` undoes.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterable, Sequence


class HostRoutesError(RuntimeError):
    pass


def _ip(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise HostRoutesError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def link_exists(name: str) -> bool:
    return _ip(["link", "show", "dev", name], check=False).returncode == 0


def add_node_link(name: str, address: str) -> None:
    """A link of its own holding `address`/32 (global scope: pods reach it).

    A bridge without ports: the kernel here has no `dummy` link type, and a bridge's address
    is local and served whether or not it has ports (as docker0's is).
    """
    if link_exists(name):
        raise HostRoutesError(
            f"link {name} already exists: another node is up (calico-lab kube down)"
        )
    _ip(["link", "add", name, "type", "bridge"])
    _ip(["addr", "add", f"{address}/32", "dev", name])
    _ip(["link", "set", name, "up"])


def remove_link(name: str) -> None:
    if link_exists(name):
        _ip(["link", "delete", name])


def _family(cidr: str) -> str:
    return "-6" if ipaddress.ip_network(cidr, strict=False).version == 6 else "-4"


def add_unreachable(cidr: str) -> bool:
    """An unreachable route for `cidr`; False when one was already there (not ours)."""
    proc = _ip([_family(cidr), "route", "add", "unreachable", cidr], check=False)
    if proc.returncode == 0:
        return True
    if "File exists" in proc.stderr:
        return False
    raise HostRoutesError(f"unreachable route {cidr}: {proc.stderr.strip()}")


def remove_unreachable(cidrs: Iterable[str]) -> list[str]:
    """Remove the unreachable routes made for `cidrs`; problems (gone already is none)."""
    problems = []
    for cidr in cidrs:
        proc = _ip([_family(cidr), "route", "delete", "unreachable", cidr], check=False)
        if proc.returncode != 0 and "No such process" not in proc.stderr:
            problems.append(f"unreachable {cidr}: {proc.stderr.strip()}")
    return problems
