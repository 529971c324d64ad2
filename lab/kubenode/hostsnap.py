"""What a real kubelet, containerd and Calico on the host change, and putting it back.

`take()` records, before anything starts, every host setting the node may change: the sysctls
the kubelet sets (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1, ...) and the
forwarding switches Felix turns on; iptables rules and chains of the families the kubelet and
Calico own (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, cali-*), the nftables tables;
the files in /etc/cni/net.d and /opt/cni/bin; the CNI network namespaces; links and routes of
the kinds the node makes; the directories the kubelet and containerd create (/var/lib/kubelet,
/var/lib/containerd, /run/containerd, /var/log/pods, Calico's host paths; /var/lib/cni when
empty); the
`kubepods` cgroups. `restore()` undoes what differs, touching only those families: other
programs on the host (podman, other tests in their own namespaces) may change their own rules,
netns and routes meanwhile. `differences()` compares two snapshots over the same families,
which is what a test asserts after `down`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Forwarding is shared: Felix turns it on, and so do podman's networks. It is put back only
# while no other user of it has a link on the host.
SHARED_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
OTHER_FORWARDERS = re.compile(r"^(cni-podman|podman|docker|br-)")
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
)
# Chains whose rules and jumps belong to the node: the kubelet's and Calico's. Not CNI-*:
# podman's networks (other work on this host) make CNI-FORWARD, CNI-ADMIN and per-container
# chains with the same plugins; the node's own (portmap's) go with each pod's CNI DEL.
OWNED_CHAIN = re.compile(r"^(KUBE-|cali-)")
# nftables tables the node may create: iptables-nft's own (left empty behind) and Felix's.
OWNED_TABLE = re.compile(r"^(filter|nat|mangle|raw|security|calico.*)$")
CNI_CONF_DIR = Path("/etc/cni/net.d")
# What Calico's install (and a test by hand) writes there; podman's networks (other work on
# this host, e.g. compose) add and remove their own `<network>.conflist` files meanwhile.
OWNED_CNI_CONF = re.compile(r"^(\d+-calico.*\.conflist|calico-kubeconfig|calico-tls)$")
CNI_BIN_DIR = Path("/opt/cni/bin")
DIRECTORIES = (
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/run/containerd",
    "/opt/containerd",
    "/run/nri",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/calico",
    "/run/calico",
    "/var/log/calico",
    "/opt/cni/bin",
    "/opt/cni",
    "/etc/cni/net.d",
)
# Shared with podman's CNI networks (libcni's result cache, host-local's leases): removed
# only when empty (each pod's CNI DEL removes its own cache entry).
SHARED_DIRECTORIES = ("/var/lib/cni/results", "/var/lib/cni/networks", "/var/lib/cni")
MOUNT_PREFIXES = ("/var/lib/kubelet", "/run/containerd", "/var/lib/containerd", "/run/netns/cni-")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("kubepods", "kubepods.slice", "k8s.io")
# Links the node makes: pods' host ends (Calico), Calico's tunnels, the node's own address.
OWNED_LINK = re.compile(r"^(cali|vxlan\.calico|tunl0|kubelab)")


def _run(argv: Sequence[str]) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def _iptables(family: str) -> dict[str, list[str]]:
    """table -> owned chain declarations and rules (`-N X`, `-A CHAIN ...`), sorted."""
    tables: dict[str, list[str]] = {}
    for table in ("filter", "nat", "mangle", "raw"):
        lines = []
        program = "iptables" if family == "ip" else "ip6tables"
        for line in _run([program, "-w", "-t", table, "-S"]).splitlines():
            words = line.split()
            if len(words) < 2:
                continue
            declares = words[0] == "-N" and OWNED_CHAIN.match(words[1])
            rule = words[0] == "-A" and (
                OWNED_CHAIN.match(words[1]) or ("-j" in words and _jumps_owned(words))
            )
            if declares or rule:
                lines.append(line)
        tables[table] = sorted(lines)
    return tables


def _jumps_owned(words: list[str]) -> bool:
    at = words.index("-j") + 1
    return at < len(words) and bool(OWNED_CHAIN.match(words[at]))


def _nft_tables() -> list[str]:
    """Felix's tables and the empty ones iptables-nft leaves behind (not others' with rules)."""
    tables = [
        line.removeprefix("table ").strip()
        for line in _run(["nft", "list", "tables"]).splitlines()
        if line.startswith("table ")
    ]
    return sorted(t for t in tables if t.split(" ")[-1].startswith("calico") or _nft_empty(t))


def _nft_empty(table: str) -> bool:
    family, _, name = table.partition(" ")
    listing = _run(["nft", "list", "table", family, name])
    return not re.search(r"^\s+(ip|ip6|meta|counter|jump|goto|accept|drop|ct)\b", listing, re.M)


def _other_forwarders() -> bool:
    out = _run(["ip", "-j", "link", "show"])
    return any(OTHER_FORWARDERS.match(str(link["ifname"])) for link in json.loads(out or "[]"))


def _listing(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _cni_netns() -> list[str]:
    return sorted(n for n in _listing(Path("/run/netns")) if n.startswith("cni-"))


def _links() -> list[str]:
    out = _run(["ip", "-j", "link", "show"])
    names = [str(link["ifname"]) for link in json.loads(out)] if out else []
    return sorted(n for n in names if OWNED_LINK.match(n))


def _routes(ranges: Iterable[str]) -> list[str]:
    """Routes (every table, both families) into the node's ranges or over its links."""
    nets = [ipaddress.ip_network(r, strict=False) for r in ranges]
    found = []
    for family in ("-4", "-6"):
        out = _run(["ip", "-j", family, "route", "show", "table", "all"])
        for route in json.loads(out) if out else []:
            dst = str(route.get("dst", ""))
            dev = str(route.get("dev", ""))
            owned = bool(dev) and bool(OWNED_LINK.match(dev))
            # In the ranges, only routes that go nowhere (the node's unreachable routes,
            # ipamd's blackholes): others' connected routes there (podman's) are theirs.
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(dst, strict=False)
                owned = owned or (
                    route.get("type") in NOWHERE
                    and any(
                        net.version == n.version and net.subnet_of(n)  # type: ignore[arg-type]
                        for n in nets
                    )
                )
            if owned and route.get("table") != "local":
                found.append(_route_text(route))
    return sorted(found)


NOWHERE = ("unreachable", "blackhole", "prohibit")


def _route_text(route: Mapping[str, Any]) -> str:
    parts = [str(route.get("type", "unicast")), str(route.get("dst", ""))]
    for key in ("gateway", "dev", "table", "protocol", "metric"):
        if key in route:
            parts.append(f"{key} {route[key]}")
    return " ".join(parts)


def _cgroups() -> list[str]:
    return sorted(
        str(CGROUP_ROOT / controller / name)
        for controller in _listing(CGROUP_ROOT)
        for name in CGROUP_NAMES
        if (CGROUP_ROOT / controller / name).is_dir()
    ) + sorted(str(CGROUP_ROOT / n) for n in CGROUP_NAMES if (CGROUP_ROOT / n).is_dir())


def _mounts() -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return sorted(p for p in points if p.startswith(MOUNT_PREFIXES))


def take(ranges: Iterable[str] = ()) -> dict[str, Any]:
    """The host as it is now, over every family the node may change."""
    return {
        "sysctls": _sysctls(),
        "iptables": {"ip": _iptables("ip"), "ip6": _iptables("ip6")},
        "nft_tables": _nft_tables(),
        "cni_conf": [n for n in _listing(CNI_CONF_DIR) if OWNED_CNI_CONF.match(n)],
        "cni_bin": _listing(CNI_BIN_DIR),
        "netns": _cni_netns(),
        "links": _links(),
        "ranges": list(ranges),
        "routes": _routes(ranges),
        # Shared ones only while empty: with others' files in them they are not the node's.
        "directories": sorted(
            [d for d in DIRECTORIES if os.path.lexists(d)]
            + [d for d in SHARED_DIRECTORIES if os.path.isdir(d) and not _listing(Path(d))]
        ),
        "cgroups": _cgroups(),
        "mounts": _mounts(),
    }


def differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What differs between two snapshots, one line per difference (empty: the same)."""
    found = []
    shared_in_use = _other_forwarders()
    for key in before:
        if key == "ranges":
            continue
        a, b = before[key], after.get(key)
        if key == "sysctls" and shared_in_use:
            a = {k: v for k, v in a.items() if k not in SHARED_SYSCTLS}
            b = {k: v for k, v in (b or {}).items() if k not in SHARED_SYSCTLS}
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            gone = sorted(set(a) - set(b))
            new = sorted(set(b) - set(a))
            if key == "nft_tables":
                # An empty table someone else fills (podman's) drops out of the family; only
                # new ones can be the node's leftovers.
                gone = []
            if new or gone:
                found.append(f"{key}: new {new}, gone {gone}")
        else:
            found.append(f"{key}: before {a}, now {b}")
    return found


def restore(snapshot: Mapping[str, Any]) -> list[str]:
    """Put the host back as `snapshot` recorded it, over the node's families; what failed."""
    problems: list[str] = []
    _unmount(set(snapshot.get("mounts", [])), problems)
    for name in set(_cni_netns()) - set(snapshot.get("netns", [])):
        _try(["ip", "netns", "delete", name], problems)
    for link in set(_links()) - set(snapshot.get("links", [])):
        _try(["ip", "link", "delete", link], problems)
    _restore_iptables(snapshot.get("iptables", {}), problems)
    _restore_nft(set(snapshot.get("nft_tables", [])), problems)
    _restore_routes(snapshot, problems)
    _restore_files(CNI_CONF_DIR, set(snapshot.get("cni_conf", [])), problems, OWNED_CNI_CONF)
    _restore_files(CNI_BIN_DIR, set(snapshot.get("cni_bin", [])), problems)
    _remove_cgroups(set(snapshot.get("cgroups", [])), problems)
    existed = set(snapshot.get("directories", []))
    for directory in DIRECTORIES:  # deepest first: /opt/cni/bin before /opt/cni
        if directory not in existed and os.path.lexists(directory):
            shutil.rmtree(directory, ignore_errors=True)
            if os.path.lexists(directory):
                problems.append(f"{directory} remains")
    for directory in SHARED_DIRECTORIES:  # deepest first
        if directory not in existed:
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only when empty
    shared_in_use = _other_forwarders()
    for name, value in snapshot.get("sysctls", {}).items():
        if name in SHARED_SYSCTLS and shared_in_use:
            continue
        try:
            if _sysctl_path(name).read_text().strip() != value:
                _sysctl_path(name).write_text(value)
        except OSError as exc:
            problems.append(f"sysctl {name}={value}: {exc}")
    return problems


def _try(argv: Sequence[str], problems: list[str]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        problems.append(f"{' '.join(argv)}: {proc.stderr.strip()}")


def _unmount(keep: set[str], problems: list[str]) -> None:
    for point in sorted(set(_mounts()) - keep, reverse=True):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            _try(["umount", "-l", point], problems)


def _restore_iptables(saved: Mapping[str, Mapping[str, list[str]]], problems: list[str]) -> None:
    for family, program in (("ip", "iptables"), ("ip6", "ip6tables")):
        now = _iptables(family)
        for table, lines in now.items():
            keep = set(saved.get(family, {}).get(table, []))
            # Jumps first (a chain in use cannot go), then flush and delete the chains.
            for line in lines:
                words = line.split()
                if line not in keep and words[0] == "-A" and not OWNED_CHAIN.match(words[1]):
                    _try([program, "-w", "-t", table, "-D", *words[1:]], problems)
            chains = [line.split()[1] for line in lines if line.startswith("-N ")]
            new = [c for c in chains if f"-N {c}" not in keep]
            for chain in new:
                _try([program, "-w", "-t", table, "-F", chain], problems)
            for chain in new:
                _try([program, "-w", "-t", table, "-X", chain], problems)


def _restore_nft(keep: set[str], problems: list[str]) -> None:
    """Delete tables made since the snapshot: Felix's always; iptables-nft's when empty."""
    for entry in set(_nft_tables()) - keep:
        family, _, name = entry.partition(" ")
        if not OWNED_TABLE.match(name):
            continue
        if not name.startswith("calico") and not _nft_empty(entry):
            continue  # rules someone else put there
        _try(["nft", "delete", "table", family, name], problems)


def _restore_routes(snapshot: Mapping[str, Any], problems: list[str]) -> None:
    keep = set(snapshot.get("routes", []))
    owned = set(_routes(snapshot.get("ranges", [])))
    for family in ("-4", "-6"):
        out = _run(["ip", "-j", family, "route", "show", "table", "all"])
        for route in json.loads(out) if out else []:
            text = _route_text(route)
            if text in keep or text not in owned:
                continue
            argv = ["ip", family, "route", "delete", str(route.get("type", "unicast"))]
            argv.append(str(route["dst"]))
            for key in ("dev", "table", "metric"):
                if key in route:
                    argv += [key, str(route[key])]
            _try(argv, problems)


def _restore_files(
    directory: Path, keep: set[str], problems: list[str], owned: re.Pattern[str] | None = None
) -> None:
    for name in set(_listing(directory)) - keep:
        if owned is not None and not owned.match(name):
            continue
        try:
            path = directory / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            problems.append(f"{directory / name}: {exc}")


def _remove_cgroups(keep: set[str], problems: list[str]) -> None:
    for top in set(_cgroups()) - keep:
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if os.path.isdir(top):
            problems.append(f"cgroup {top} remains (processes still in it?)")


def cgroup_pids(keep: Iterable[str]) -> list[int]:
    """Processes in the node's cgroups made since the snapshot (pods, shims left behind)."""
    pids: set[int] = set()
    for top in set(_cgroups()) - set(keep):
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    text = Path(dirpath, "cgroup.procs").read_text()
                    pids.update(int(p) for p in text.split())
    return sorted(pids)
