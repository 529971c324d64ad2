"""Fast reachability probes between lab pods, all from this one process.

For each source pod the calling thread briefly enters the pod's namespace, creates one socket
per destination and returns; the sockets stay in the pod's namespace, so connecting them from
the event loop sends real traffic from the pod. Every pair of a table runs concurrently:
a 72-pair table costs about one timeout, not 72 process starts.

TCP/SCTP: allowed when the connect completes. UDP: allowed when the echo comes back (the
datagram is re-sent a few times within the timeout, in case the first is lost to ARP).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lab.netns import inside

PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_TIMEOUT = 1.0
UDP_SENDS = 3
SCTP_UNSUPPORTED = "SCTP is not supported by this kernel (EPROTONOSUPPORT)"


class ProbeUnsupportedError(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoint:
    key: str  # "ns/name"
    netns_path: str
    ip: str


def sctp_supported() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT):
            return False
        raise
    return True


def _new_socket(protocol: str, ip: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    if protocol == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
    elif protocol == "sctp":
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def _close_abortively(sock: socket.socket) -> None:
    # RST instead of FIN: thousands of probes must not pile up TIME_WAIT entries.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _stream_probe(sock: socket.socket, ip: str, port: int, wait: float) -> bool:
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), wait)
    except (TimeoutError, OSError):
        return False
    finally:
        _close_abortively(sock)
    return True


async def _udp_probe(sock: socket.socket, ip: str, port: int, wait: float) -> bool:
    loop = asyncio.get_running_loop()
    payload = b"calico-lab-probe"
    try:
        sock.connect((ip, port))
        for _ in range(UDP_SENDS):
            sock.send(payload)
            try:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 2048), wait / UDP_SENDS)
            except TimeoutError:
                continue
            if reply == payload:
                return True
        return False
    except OSError:  # ICMP port unreachable shows up as ECONNREFUSED
        return False
    finally:
        sock.close()


async def probe_pairs(
    pairs: Sequence[tuple[Endpoint, Endpoint]],
    port: int,
    protocol: str,
    wait: float = DEFAULT_TIMEOUT,
) -> dict[tuple[str, str], bool]:
    """Probe every (source, destination) pair at once, each given `wait` seconds;
    {(from, to): connected}."""
    protocol = protocol.lower()
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if protocol == "sctp" and not sctp_supported():
        raise ProbeUnsupportedError(SCTP_UNSUPPORTED)
    sockets: list[tuple[tuple[str, str], socket.socket, str]] = []
    try:
        by_source: dict[str, list[tuple[Endpoint, Endpoint]]] = {}
        for src, dst in pairs:
            by_source.setdefault(src.netns_path, []).append((src, dst))
        for path, group in by_source.items():
            with inside(path):
                for src, dst in group:
                    sockets.append(((src.key, dst.key), _new_socket(protocol, dst.ip), dst.ip))
    except BaseException:
        for _, sock, _ip in sockets:
            sock.close()
        raise
    probe = _udp_probe if protocol == "udp" else _stream_probe
    results = await asyncio.gather(*(probe(sock, ip, port, wait) for _, sock, ip in sockets))
    return {pair: ok for (pair, _, _), ok in zip(sockets, results, strict=True)}


def all_pairs(endpoints: Iterable[Endpoint]) -> list[tuple[Endpoint, Endpoint]]:
    """Every ordered pair of distinct endpoints."""
    items = list(endpoints)
    return [(a, b) for a in items for b in items if a.key != b.key]
