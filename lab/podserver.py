"""The one process serving a lab pod: TCP, UDP (and SCTP when the kernel has it) echo.

    python -m lab.podserver --netns /run/netns/POD --serve tcp:80,udp:80 --ready FILE

It moves into the pod's namespace before opening anything, binds every port, then writes
`--ready` (a JSON list of the ports it serves and those it could not) so the lab knows it can
probe. Kept to the standard library: nine of these start per conformance case.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import signal
import socket
import sys
from typing import cast

from lab.netns import enter

PROTOCOLS = ("tcp", "udp", "sctp")


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
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
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


async def serve(ports: list[tuple[str, int]], ready: str | None) -> None:
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
            await loop.create_datagram_endpoint(UdpEcho, sock=sock)
        else:
            await asyncio.start_server(echo_stream, sock=sock)
        served.append(name)
    if ready:
        write_ready(ready, {"pid": os.getpid(), "served": served, "unavailable": unavailable})
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.podserver")
    parser.add_argument("--netns", required=True, help="path of the pod's network namespace")
    parser.add_argument("--serve", default="", help="tcp:80,udp:80,...")
    parser.add_argument("--ready", help="file written once every port is bound")
    args = parser.parse_args(argv)
    try:
        ports = parse_serve(args.serve)
    except ValueError as exc:
        parser.error(str(exc))
    enter(args.netns)
    asyncio.run(serve(ports, args.ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
