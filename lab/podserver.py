"""The one process serving a lab pod: TCP, UDP (and SCTP when the kernel has it).

    python -m lab.podserver --netns /run/netns/POD --name NS/NAME --serve tcp:80,udp:80 --ready FILE

It moves into the pod's namespace before opening anything, binds every port, then writes
`--ready` (a JSON list of the ports it serves and those it could not) so the lab knows it can
probe. Kept to the standard library: nine of these start per conformance case.

The wire format (the lab's own; `lab/prober.py` reads it): every answer names the serving pod
and the client address the server saw (the packet's source as it arrived in the pod), so a
probe through a Service can tell which backend answered and whether the source was kept.

- TCP: on accept the server sends one line, `IDENTITY`, then echoes whatever it receives.
- UDP: every datagram is answered with two datagrams: `IDENTITY` (without the newline), then
  the datagram's own payload (the echo, unchanged: MTU tests compare its size).

`IDENTITY` is `calico-lab-pod {"pod": "ns/name", "client": "10.65.0.5", "port": 80}` and a
newline: a fixed prefix, then one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import json
import os
import signal
import socket
import sys
from typing import cast

from lab.netns import enter

PROTOCOLS = ("tcp", "udp", "sctp")
IDENTITY_PREFIX = b"calico-lab-pod "


def identity(pod: str, client: str, port: int) -> bytes:
    """The answer line naming the serving pod and the client address it saw."""
    body = json.dumps({"pod": pod, "client": client, "port": port}, separators=(",", ":"))
    return IDENTITY_PREFIX + body.encode() + b"\n"


def parse_identity(data: bytes) -> dict[str, object] | None:
    """An identity line's fields ({"pod", "client", "port"}); None when `data` is not one."""
    line = data.split(b"\n", 1)[0]
    if not line.startswith(IDENTITY_PREFIX):
        return None
    try:
        fields = json.loads(line[len(IDENTITY_PREFIX) :])
    except ValueError:
        return None
    return fields if isinstance(fields, dict) and "pod" in fields else None


def parse_serve(text: str) -> list[tuple[str, int]]:
    """ "tcp:80,udp:81" -> [("tcp", 80), ("udp", 81)]; ValueError names the bad entry."""
    out: list[tuple[str, int]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        proto, sep, port_text = entry.partition(":")
        proto = proto.strip().lower()
        if not sep or proto not in PROTOCOLS or not port_text.strip().isdigit():
            raise ValueError(f"{entry!r}: expected <tcp|udp|sctp>:<port>")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"{entry!r}: port must be 1-65535")
        if (proto, port) not in out:
            out.append((proto, port))
    return out


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, pod: str, port: int) -> None:
        self.pod = pod
        self.port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(identity(self.pod, addr[0], self.port).rstrip(b"\n"), addr)
        self.transport.sendto(data, addr)


async def echo_stream(
    pod: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        peer = writer.get_extra_info("peername")
        writer.write(identity(pod, str(peer[0]) if peer else "", port))
        await writer.drain()
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def listening_socket(proto: str, port: int) -> socket.socket:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    number = socket.IPPROTO_SCTP if proto == "sctp" else 0
    sock = socket.socket(socket.AF_INET, kind, number)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def write_ready(path: str, content: dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as out:
        json.dump(content, out)
    os.replace(tmp, path)


async def serve(ports: list[tuple[str, int]], ready: str | None, pod: str = "") -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    served: list[str] = []
    unavailable: dict[str, str] = {}
    for proto, port in ports:
        name = f"{proto}:{port}"
        try:
            sock = listening_socket(proto, port)
        except OSError as exc:
            if proto == "sctp" and exc.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
                unavailable[name] = "SCTP is not supported by this kernel (EPROTONOSUPPORT)"
                continue
            raise
        if proto == "udp":
            await loop.create_datagram_endpoint(functools.partial(UdpEcho, pod, port), sock=sock)
        else:
            await asyncio.start_server(functools.partial(echo_stream, pod, port), sock=sock)
        served.append(name)
    if ready:
        write_ready(ready, {"pid": os.getpid(), "served": served, "unavailable": unavailable})
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.podserver")
    parser.add_argument("--netns", required=True, help="path of the pod's network namespace")
    parser.add_argument("--name", default="", help="the pod's ns/name, given in every answer")
    parser.add_argument("--serve", default="", help="tcp:80,udp:80,...")
    parser.add_argument("--ready", help="file written once every port is bound")
    args = parser.parse_args(argv)
    try:
        ports = parse_serve(args.serve)
    except ValueError as exc:
        parser.error(str(exc))
    enter(args.netns)
    asyncio.run(serve(ports, args.ready, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
