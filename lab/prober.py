"""Reachability probes from lab namespaces, all from this one process.

For each source the calling thread briefly enters the source's namespace, creates one socket
per flow and returns; the sockets stay in that namespace, so connecting them from the event
loop sends real traffic from there. Every flow runs concurrently: a 72-pair table costs about
one timeout, not 72 process starts.

A flow has one of three outcomes (shared/conformance/services/FORMAT.md, "Tries"):
- `connected`: the server's answer arrived (lab/podserver.py's identity line: the serving pod
  and the client address it saw);
- `refused`: an active rejection came first: a TCP RST, or an ICMP error (ECONNREFUSED,
  EHOSTUNREACH, ENETUNREACH, ...);
- `no-answer`: nothing within the timeout; a TCP connection that opens but brings no answer
  counts here too.

UDP flows use a connect()ed socket so ICMP errors reach it; the datagram is re-sent a few
times within the timeout, in case the first is lost to ARP. `probe_pairs` is the netpol view:
pod-to-pod pairs, connected or not.
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
from lab.podserver import parse_identity

PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_TIMEOUT = 1.0
UDP_SENDS = 3
SCTP_UNSUPPORTED = "SCTP is not supported by this kernel (EPROTONOSUPPORT)"
PROBE_PAYLOAD = b"calico-lab-probe"

CONNECTED = "connected"
REFUSED = "refused"
NO_ANSWER = "no-answer"
OUTCOMES = (CONNECTED, REFUSED, NO_ANSWER)


class ProbeUnsupportedError(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoint:
    key: str  # "ns/name", or "@outside"
    netns_path: str
    ip: str
    # Bind the socket to `ip` before connecting: for a source with several addresses (the
    # lab network's namespace is a router), so the server sees the one the probe names.
    bind: bool = False


@dataclass(frozen=True)
class Flow:
    """One try: a new socket from `source`'s namespace to `ip`:`port`."""

    source: Endpoint
    ip: str


@dataclass(frozen=True)
class Observation:
    outcome: str  # CONNECTED, REFUSED or NO_ANSWER
    served_by: str | None = None  # the serving pod's "ns/name"
    client_seen: str | None = None  # the source address the server saw

    def to_json(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome,
            "served_by": self.served_by,
            "client_seen": self.client_seen,
        }


def sctp_supported() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT):
            return False
        raise
    return True


def _new_socket(protocol: str, ip: str, bind: str = "") -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    if protocol == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
    elif protocol == "sctp":
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if bind:
            sock.bind((bind, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _close_abortively(sock: socket.socket) -> None:
    # RST instead of FIN: thousands of probes must not pile up TIME_WAIT entries.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _answer(data: bytes) -> Observation | None:
    fields = parse_identity(data)
    if fields is None:
        return None
    client = fields.get("client")
    return Observation(CONNECTED, str(fields["pod"]), str(client) if client else None)


async def _stream_try(sock: socket.socket, ip: str, port: int, wait: float) -> Observation:
    """Connect, then read the server's identity line, all within `wait`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), wait)
        except TimeoutError:
            return Observation(NO_ANSWER)
        except OSError:  # RST (ECONNREFUSED) or an ICMP error (EHOSTUNREACH, ...)
            return Observation(REFUSED)
        got = b""
        while b"\n" not in got:
            left = deadline - loop.time()
            if left <= 0:
                return Observation(NO_ANSWER)
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
            except (TimeoutError, OSError):
                return Observation(NO_ANSWER)  # opened, but no answer
            if not chunk:
                return Observation(NO_ANSWER)
            got += chunk
        return _answer(got) or Observation(NO_ANSWER)
    finally:
        _close_abortively(sock)


async def _udp_try(sock: socket.socket, ip: str, port: int, wait: float) -> Observation:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        sock.connect((ip, port))
        for send in range(UDP_SENDS):
            sock.send(PROBE_PAYLOAD)
            resend_at = loop.time() + wait / UDP_SENDS if send < UDP_SENDS - 1 else deadline
            while (left := min(resend_at, deadline) - loop.time()) > 0:
                try:
                    reply = await asyncio.wait_for(loop.sock_recv(sock, 2048), left)
                except TimeoutError:
                    break
                answer = _answer(reply)
                if answer is not None:
                    return answer
        return Observation(NO_ANSWER)
    except OSError:  # ICMP port/host unreachable shows up as ECONNREFUSED, EHOSTUNREACH, ...
        return Observation(REFUSED)
    finally:
        sock.close()


def _check_protocol(protocol: str) -> str:
    protocol = protocol.lower()
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if protocol == "sctp" and not sctp_supported():
        raise ProbeUnsupportedError(SCTP_UNSUPPORTED)
    return protocol


async def observe(
    flows: Sequence[Flow], port: int, protocol: str, wait: float = DEFAULT_TIMEOUT
) -> list[Observation]:
    """Run every flow at once, each a new socket given `wait` seconds; outcomes in order."""
    protocol = _check_protocol(protocol)
    sockets: list[socket.socket | None] = [None] * len(flows)
    try:
        by_source: dict[str, list[int]] = {}
        for index, flow in enumerate(flows):
            by_source.setdefault(flow.source.netns_path, []).append(index)
        for path, indexes in by_source.items():
            with inside(path):
                for index in indexes:
                    flow = flows[index]
                    bind = flow.source.ip if flow.source.bind else ""
                    sockets[index] = _new_socket(protocol, flow.ip, bind)
    except BaseException:
        for sock in sockets:
            if sock is not None:
                sock.close()
        raise
    one_try = _udp_try if protocol == "udp" else _stream_try
    return list(
        await asyncio.gather(
            *(
                one_try(sock, flow.ip, port, wait)
                for sock, flow in zip(sockets, flows, strict=True)
                if sock is not None
            )
        )
    )


async def probe_pairs(
    pairs: Sequence[tuple[Endpoint, Endpoint]],
    port: int,
    protocol: str,
    wait: float = DEFAULT_TIMEOUT,
) -> dict[tuple[str, str], bool]:
    """Probe every (source, destination) pair at once, each given `wait` seconds;
    {(from, to): connected}."""
    flows = [Flow(src, dst.ip) for src, dst in pairs]
    seen = await observe(flows, port, protocol, wait)
    return {
        (src.key, dst.key): obs.outcome == CONNECTED
        for (src, dst), obs in zip(pairs, seen, strict=True)
    }


def all_pairs(endpoints: Iterable[Endpoint]) -> list[tuple[Endpoint, Endpoint]]:
    """Every ordered pair of distinct endpoints."""
    items = list(endpoints)
    return [(a, b) for a in items for b in items if a.key != b.key]
