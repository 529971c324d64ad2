"""The lab's top-of-rack router: a BIRD or a GoBGP in the lab network's namespace, peered over
eBGP with every node, as an on-prem data centre's ToR is.

`start_tor` must be called from a thread already inside that namespace (the daemon inherits it).
Everything else goes through the daemon's control socket, a Unix socket under state_dir/tor, so
it works from any namespace: `birdc -s tor/bird.ctl` and `gobgp --target unix://tor/gobgp.sock`
(GoBGP's API on a Unix socket instead of a loopback port: no port to pick or collide, and no
need to enter the namespace to ask it anything).

The prefixes the ToR originates are kept in tor/announced.txt (one a line), the one source both
kinds render from. BIRD originates them from a static protocol included from tor/announced.conf
and picks changes up with `birdc configure`; GoBGP gets them by MRT injection (lab/mrt.py).
BIRD installs the routes it learns into the namespace's kernel; GoBGP keeps them in its RIB.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.mrt import local_routes_dump
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop

TOR_KINDS = ("bird", "gobgp")
BIRD = os.environ.get("CALICO_LAB_BIRD", "/usr/sbin/bird")
BIRDC = os.environ.get("CALICO_LAB_BIRDC", "/usr/sbin/birdc")
GOBGPD = os.environ.get("CALICO_LAB_GOBGPD", "/usr/bin/gobgpd")
GOBGP = os.environ.get("CALICO_LAB_GOBGP", "/usr/bin/gobgp")

START_TIMEOUT = 15.0
COMMAND_TIMEOUT = 60.0
MAX_ASN = 4294967295

TOR_DIR = "tor"
ANNOUNCED_LIST = "announced.txt"
BIRD_CONF = "bird.conf"
BIRD_STATIC = "announced.conf"
BIRD_CTL = "bird.ctl"
BIRD_PID = "bird.pid"
BIRD_LOG = "bird.log"
GOBGP_CONF = "gobgpd.toml"
GOBGP_SOCK = "gobgp.sock"
GOBGP_LOG = "gobgpd.log"
GOBGP_MRT = "announce.mrt"

# `gobgp mrt inject` drops the tail of its stream (see lab/mrt.py): pad past it, then check.
MRT_PADDING = 3000
INJECT_ROUNDS = 5
INJECT_SETTLE = 3.0
# Partial GoBGP withdrawals run one CLI exec per prefix; a few at once hide the exec latency.
WITHDRAW_PARALLEL = 8

# One vocabulary for both kinds: BIRD's spelling of the RFC 4271 states.
SESSION_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")
# GoBGP's JSON gives its API enum (apipb.PeerState.SessionState) as a number: 1 = IDLE ...
_GOBGP_STATES = {str(i): state for i, state in enumerate(SESSION_STATES, start=1)}
_GOBGP_STATES.update({state.lower(): state for state in SESSION_STATES})


class TorError(RuntimeError):
    pass


@dataclass(frozen=True)
class Neighbor:
    address: str
    asn: int


# --- validation ---------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in TOR_KINDS:
        raise TorError(f"kind: {kind!r} is not one of {', '.join(TOR_KINDS)}")


def _check_asn(field: str, asn: object) -> int:
    if isinstance(asn, bool) or not isinstance(asn, int) or not 1 <= asn <= MAX_ASN:
        raise TorError(f"{field}: AS number {asn!r} is not in 1..{MAX_ASN}")
    return asn


def _check_ipv4(field: str, address: object) -> str:
    try:
        return str(ipaddress.IPv4Address(str(address)))
    except ValueError:
        raise TorError(f"{field}: {address!r} is not an IPv4 address") from None


def _check_neighbors(neighbors: Sequence[tuple[str, int]]) -> list[Neighbor]:
    checked: list[Neighbor] = []
    seen: set[str] = set()
    for i, entry in enumerate(neighbors):
        try:
            address, asn = entry
        except (TypeError, ValueError):
            raise TorError(f"neighbors[{i}]: {entry!r} is not an (address, asn) pair") from None
        address = _check_ipv4(f"neighbors[{i}].address", address)
        if address in seen:
            raise TorError(f"neighbors[{i}].address: {address} is listed twice")
        seen.add(address)
        checked.append(Neighbor(address, _check_asn(f"neighbors[{i}].asn", asn)))
    return checked


def _check_prefixes(prefixes: Sequence[str]) -> list[ipaddress.IPv4Network]:
    if isinstance(prefixes, str):
        raise TorError("prefixes: expected a sequence of prefixes, got one string")
    networks = []
    for i, prefix in enumerate(prefixes):
        try:
            networks.append(ipaddress.IPv4Network(str(prefix)))
        except ValueError as exc:
            raise TorError(f"prefixes[{i}]: {prefix!r} is not an IPv4 prefix ({exc})") from None
    return networks


# --- files and commands ---------------------------------------------------------------------


def tor_dir(state_dir: Path) -> Path:
    return Path(state_dir) / TOR_DIR


def _write_atomic(path: Path, text: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


def _read_announced(state_dir: Path) -> list[ipaddress.IPv4Network]:
    path = tor_dir(state_dir) / ANNOUNCED_LIST
    if not path.exists():
        return []
    return [ipaddress.IPv4Network(line) for line in path.read_text().split()]


def _write_announced(state_dir: Path, networks: Iterable[ipaddress.IPv4Network]) -> None:
    ordered = sorted(set(networks), key=lambda n: (int(n.network_address), n.prefixlen))
    _write_atomic(tor_dir(state_dir) / ANNOUNCED_LIST, "".join(f"{n}\n" for n in ordered))


def _run(argv: Sequence[str], what: str) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise TorError(f"{what}: {' '.join(argv)} timed out") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise TorError(f"{what}: {' '.join(argv)} exited {proc.returncode}: {detail}")
    return proc.stdout


def _wait_until_answering(record: ProcessRecord, answers: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if answers():
            return
        if not is_alive(record):
            break
        time.sleep(0.05)
    stop(record)
    raise TorError(f"{what} did not answer on its control socket:\n{log_tail(record.log)}")


# --- BIRD ---------------------------------------------------------------------------------------


def _bird_protocol_name(address: str) -> str:
    return "tor_" + address.replace(".", "_")


def render_bird_config(
    directory: Path, asn: int, router_id: str, neighbors: Sequence[Neighbor]
) -> str:
    lines = [
        "# The lab's top-of-rack router (lab/tor.py). Rendered; edits are overwritten.",
        f"router id {router_id};",
        "log stderr all;",
        "",
        "# Interfaces: BGP needs them to see its directly connected neighbours.",
        "protocol device { scan time 10; }",
        "",
        "# Routes learned from the nodes go into this namespace's kernel, so the ToR forwards.",
        "protocol kernel {",
        "  ipv4 { import none; export filter { if source = RTS_BGP then accept; reject; }; };",
        "  merge paths on;",
        "  graceful restart on;",
        "}",
        "",
        "# What announce() originates; the include is rewritten and picked up by `configure`.",
        "protocol static tor_originated {",
        "  ipv4;",
        f'  include "{directory / BIRD_STATIC}";',
        "}",
        "",
        "# eBGP needs explicit filters (RFC 8212): a ToR takes and gives everything.",
        "filter tor_import { accept; }",
        "filter tor_export { accept; }",
        "",
        "template bgp tor_peer {",
        f"  local as {asn};",
        "  ipv4 { import filter tor_import; export filter tor_export; };",
        "  graceful restart on;",
        "  # Come up (and come back) fast: the lab waits for these sessions.",
        "  connect delay time 1;",
        "  connect retry time 1;",
        "  error wait time 1, 10;",
        "}",
        "",
    ]
    for neighbor in neighbors:
        name = _bird_protocol_name(neighbor.address)
        peer = f"neighbor {neighbor.address} as {neighbor.asn};"
        lines.append(f"protocol bgp {name} from tor_peer {{ {peer} }}")
    return "\n".join(lines) + "\n"


def render_bird_static(networks: Iterable[ipaddress.IPv4Network]) -> str:
    # Blackholes: the ToR originates these prefixes; the kernel protocol never installs them.
    return "".join(f"route {net} blackhole;\n" for net in networks)


def _birdc(state_dir: Path, *command: str) -> str:
    return _run([BIRDC, "-s", str(tor_dir(state_dir) / BIRD_CTL), *command], "birdc")


def _bird_answers(state_dir: Path) -> bool:
    try:
        return "Daemon is up and running" in _birdc(state_dir, "show", "status")
    except TorError:
        return False


def _start_bird(
    directory: Path, state_dir: Path, asn: int, router_id: str, neighbors: list[Neighbor]
) -> ProcessRecord:
    conf = directory / BIRD_CONF
    _write_atomic(directory / BIRD_STATIC, render_bird_static(_read_announced(state_dir)))
    _write_atomic(conf, render_bird_config(directory, asn, router_id, neighbors))
    _run([BIRD, "-p", "-c", str(conf)], "bird -p (config check)")
    ctl = directory / BIRD_CTL
    with contextlib.suppress(FileNotFoundError):
        ctl.unlink()  # a stale socket from a crashed run would look like a live BIRD
    argv = [BIRD, "-f", "-c", str(conf), "-s", str(ctl), "-P", str(directory / BIRD_PID)]
    record = start_detached("tor-bird", argv, directory / BIRD_LOG)
    _wait_until_answering(record, lambda: _bird_answers(state_dir), "ToR BIRD")
    return record


def _bird_apply(state_dir: Path, networks: list[ipaddress.IPv4Network]) -> None:
    """Render the static include for `networks` and reconfigure; on rejection put back the old
    include so file and running config agree."""
    directory = tor_dir(state_dir)
    static = directory / BIRD_STATIC
    previous = static.read_text() if static.exists() else ""
    _write_atomic(static, render_bird_static(networks))
    try:
        out = _birdc(state_dir, "configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise TorError(f"birdc configure: {out.strip()}")
    except TorError:
        _write_atomic(static, previous)
        raise
    _write_announced(state_dir, networks)


def parse_bird_sessions(out: str) -> dict[str, str]:
    """`show protocols all` output -> neighbour address -> BGP state."""
    result: dict[str, str] = {}
    state = ""
    for line in out.splitlines():
        stripped = line.strip()
        if line and not line[0].isspace():
            state = ""  # a new protocol's header line
        elif stripped.startswith("BGP state:"):
            state = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("Neighbor address:"):
            result[stripped.split(":", 1)[1].strip()] = state or "Idle"
    return result


def _bird_sessions(state_dir: Path) -> dict[str, str]:
    return parse_bird_sessions(_birdc(state_dir, "show", "protocols", "all"))


def parse_bird_routes(out: str) -> dict[str, list[str]]:
    """`show route` output -> prefix -> next hops (every route of the prefix, all its vias)."""
    routes: dict[str, set[str]] = {}
    prefix = ""
    for line in out.splitlines():
        if not line.strip() or line.startswith("Table "):
            continue
        fields = line.split()
        if not line[0].isspace() and "/" in fields[0]:
            prefix = fields[0]
            routes.setdefault(prefix, set())
        elif fields[0] == "via" and prefix:
            routes[prefix].add(fields[1])
    return {p: sorted(hops, key=ipaddress.IPv4Address) for p, hops in routes.items()}


def _bird_learned(state_dir: Path) -> dict[str, list[str]]:
    return parse_bird_routes(_birdc(state_dir, "show", "route", "where", "source", "=", "RTS_BGP"))


# --- GoBGP --------------------------------------------------------------------------------------


def render_gobgp_config(asn: int, router_id: str, neighbors: Sequence[Neighbor]) -> str:
    lines = [
        "# The lab's top-of-rack router (lab/tor.py). Rendered; edits are overwritten.",
        "[global.config]",
        f"  as = {asn}",
        f'  router-id = "{router_id}"',
    ]
    for neighbor in neighbors:
        lines += [
            "",
            "[[neighbors]]",
            "  [neighbors.config]",
            f'    neighbor-address = "{neighbor.address}"',
            f"    peer-as = {neighbor.asn}",
            "  # Retry fast: the lab waits for these sessions.",
            "  [neighbors.timers.config]",
            "    connect-retry = 1",
            "  [neighbors.graceful-restart.config]",
            "    enabled = true",
            "    restart-time = 120",
            "  [[neighbors.afi-safis]]",
            "    [neighbors.afi-safis.config]",
            '      afi-safi-name = "ipv4-unicast"',
            "    [neighbors.afi-safis.mp-graceful-restart.config]",
            "      enabled = true",
        ]
    return "\n".join(lines) + "\n"


def _gobgp(state_dir: Path, *command: str) -> str:
    target = f"unix://{tor_dir(state_dir) / GOBGP_SOCK}"
    return _run([GOBGP, "--target", target, *command], "gobgp")


def _gobgp_answers(state_dir: Path) -> bool:
    try:
        return "asn" in json.loads(_gobgp(state_dir, "global", "-j"))
    except (TorError, ValueError):
        return False


def _start_gobgp(
    directory: Path, state_dir: Path, asn: int, router_id: str, neighbors: list[Neighbor]
) -> ProcessRecord:
    conf = directory / GOBGP_CONF
    _write_atomic(conf, render_gobgp_config(asn, router_id, neighbors))
    _run([GOBGPD, "--dry-run", "-f", str(conf)], "gobgpd --dry-run (config check)")
    sock = directory / GOBGP_SOCK
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # gobgpd refuses to start on a leftover socket
    argv = [
        GOBGPD,
        "-f",
        str(conf),
        "--api-hosts",
        f"unix://{sock}",
        "--pprof-disable",  # else every gobgpd wants localhost:6060
        "--log-plain",
    ]
    record = start_detached("tor-gobgp", argv, directory / GOBGP_LOG)
    _wait_until_answering(record, lambda: _gobgp_answers(state_dir), "ToR gobgpd")
    announced = _read_announced(state_dir)
    if announced:  # a restarted ToR originates what it did before
        _gobgp_inject(state_dir, announced)
    return record


def _gobgp_rib(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    rib: dict[str, list[dict[str, Any]]] = json.loads(
        _gobgp(state_dir, "global", "rib", "-a", "ipv4", "-j") or "{}"
    )
    return rib


def _is_local(path: dict[str, Any]) -> bool:
    # Paths GoBGP originated carry no neighbour; learned ones name the peer they came from.
    return not path.get("neighbor-ip") or path.get("neighbor-ip") in ("<nil>", "0.0.0.0")


def _gobgp_local_prefixes(state_dir: Path) -> set[str]:
    return {p for p, paths in _gobgp_rib(state_dir).items() if any(map(_is_local, paths))}


def _gobgp_inject(state_dir: Path, networks: list[ipaddress.IPv4Network]) -> None:
    """Add `networks` to GoBGP's global RIB through `gobgp mrt inject`, until all are there."""
    dump = tor_dir(state_dir) / GOBGP_MRT
    missing = list(networks)
    for _ in range(INJECT_ROUNDS):
        _write_atomic(dump, local_routes_dump(missing, padding=MRT_PADDING))
        _gobgp(state_dir, "mrt", "inject", "global", str(dump))
        # The CLI returns before gobgpd has taken everything in: wait for it to settle.
        deadline = time.monotonic() + INJECT_SETTLE
        while True:
            present = _gobgp_local_prefixes(state_dir)
            missing = [n for n in missing if str(n) not in present]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not missing:
            dump.unlink(missing_ok=True)
            return
    raise TorError(
        f"gobgp mrt inject: {len(missing)} prefixes still missing after {INJECT_ROUNDS} rounds"
        f" (first: {missing[0]})"
    )


def _gobgp_delete(state_dir: Path, networks: list[ipaddress.IPv4Network]) -> None:
    def delete(net: ipaddress.IPv4Network) -> None:
        _gobgp(state_dir, "global", "rib", "del", "-a", "ipv4", str(net))

    with ThreadPoolExecutor(WITHDRAW_PARALLEL) as pool:
        list(pool.map(delete, networks))


def parse_gobgp_sessions(peers: list[dict[str, Any]]) -> dict[str, str]:
    """`gobgp neighbor -j` -> neighbour address -> BGP state in BIRD's spelling."""
    result: dict[str, str] = {}
    for peer in peers:
        address = peer.get("conf", {}).get("neighbor_address") or peer.get("state", {}).get(
            "neighbor_address", ""
        )
        raw = str(peer.get("state", {}).get("session_state", "idle"))
        result[address] = _GOBGP_STATES.get(raw.lower().removeprefix("bgp_fsm_"), raw)
    return result


def _gobgp_sessions(state_dir: Path) -> dict[str, str]:
    return parse_gobgp_sessions(json.loads(_gobgp(state_dir, "neighbor", "-j") or "[]"))


def parse_gobgp_learned(rib: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """`gobgp global rib -j` -> prefix -> next hops of the paths learned from peers."""
    learned: dict[str, list[str]] = {}
    for prefix, paths in rib.items():
        hops = set()
        for path in paths:
            if _is_local(path):
                continue
            for attr in path.get("attrs", []):
                if "nexthop" in attr:
                    hops.add(str(attr["nexthop"]))
        if hops:
            learned[prefix] = sorted(hops, key=ipaddress.IPv4Address)
    return learned


def _gobgp_learned(state_dir: Path) -> dict[str, list[str]]:
    return parse_gobgp_learned(_gobgp_rib(state_dir))


# --- the interface ------------------------------------------------------------------------------


def start_tor(
    kind: str,
    state_dir: Path,
    asn: int,
    router_id: str,
    neighbors: Sequence[tuple[str, int]],
) -> ProcessRecord:
    """Start the ToR of `kind` with eBGP sessions to `neighbors` ((address, AS) pairs) and wait
    until it answers on its control socket. The calling thread must be in the namespace the
    router is to live in."""
    _check_kind(kind)
    asn = _check_asn("asn", asn)
    router_id = _check_ipv4("router_id", router_id)
    checked = _check_neighbors(neighbors)
    directory = tor_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "bird":
        return _start_bird(directory, Path(state_dir), asn, router_id, checked)
    return _start_gobgp(directory, Path(state_dir), asn, router_id, checked)


def sessions(kind: str, state_dir: Path) -> dict[str, str]:
    """Neighbour address -> BGP session state (Idle, Connect, Active, OpenSent, OpenConfirm,
    Established)."""
    _check_kind(kind)
    return _bird_sessions(state_dir) if kind == "bird" else _gobgp_sessions(state_dir)


def learned(kind: str, state_dir: Path) -> dict[str, list[str]]:
    """Prefix -> next hops of the routes learned from neighbours."""
    _check_kind(kind)
    return _bird_learned(state_dir) if kind == "bird" else _gobgp_learned(state_dir)


def announced(state_dir: Path) -> list[str]:
    """The prefixes the ToR originates."""
    return [str(n) for n in _read_announced(state_dir)]


def announce(kind: str, state_dir: Path, prefixes: Sequence[str]) -> None:
    """Originate `prefixes` (next hop self) besides what is already announced."""
    _check_kind(kind)
    networks = _check_prefixes(prefixes)
    current = _read_announced(state_dir)
    if kind == "bird":
        _bird_apply(state_dir, sorted(set(current) | set(networks)))
        return
    known = set(current)
    new = list(dict.fromkeys(n for n in networks if n not in known))
    if new:
        _gobgp_inject(state_dir, new)
    _write_announced(state_dir, [*current, *new])


def withdraw(kind: str, state_dir: Path, prefixes: Sequence[str]) -> None:
    """Stop originating `prefixes` (ones not announced are ignored)."""
    _check_kind(kind)
    gone = set(_check_prefixes(prefixes))
    current = _read_announced(state_dir)
    remaining = [n for n in current if n not in gone]
    if kind == "bird":
        _bird_apply(state_dir, remaining)
        return
    if remaining:
        _gobgp_delete(state_dir, [n for n in current if n in gone])
    elif current:
        # Everything goes: one call removes every path GoBGP originated (learned ones stay).
        _gobgp(state_dir, "global", "rib", "del", "all", "-a", "ipv4")
    _write_announced(state_dir, remaining)


def stop_tor(record: ProcessRecord) -> bool:
    """Stop the ToR by its recorded PID; True once it is gone. BIRD withdraws the kernel routes
    it installed as it exits."""
    return stop(record)
