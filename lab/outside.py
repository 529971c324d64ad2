"""The outside host's server (`calico-lab up --internet`): on TCP and UDP port 80 of
198.51.100.1 it answers each connection or datagram with the source address it saw, which is
what a natOutgoing test wants to know (the node's address when masqueraded).

    python -m lab.outside --netns /run/netns/OUTSIDE --port 80 --ready FILE

`start` runs it detached inside the outside namespace (the namespace itself is
`network.attach_outside`); its record goes in the state's infra, so `down` stops it.
Kept to the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import cast

from lab.lab import LabError
from lab.netns import enter
from lab.podserver import write_ready
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop

SERVER = "outside-server"  # its key in state.infra
PORT = 80
READY_TIMEOUT = 15.0


class UdpWhoami(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(f"{addr[0]}\n".encode(), addr)


async def tcp_whoami(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    try:
        writer.write(f"{peer[0]}\n".encode())
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(port: int, ready: str | None) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    server = await asyncio.start_server(tcp_whoami, "0.0.0.0", port, reuse_address=True)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    await loop.create_datagram_endpoint(UdpWhoami, sock=udp)
    if ready:
        write_ready(ready, {"pid": os.getpid(), "port": port})
    await done.wait()
    server.close()


def start(state_dir: Path, outside_ns_path: Path, port: int = PORT) -> ProcessRecord:
    """Start the server in the outside namespace; returns once it listens."""
    ready = state_dir / "outside.ready"
    ready.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "lab.outside",
        "--netns",
        str(outside_ns_path),
        "--port",
        str(port),
        "--ready",
        str(ready),
    ]
    record = start_detached(SERVER, argv, state_dir / "outside.log")
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready.exists():
        if not is_alive(record) or time.monotonic() > deadline:
            stop(record)
            raise LabError(f"the outside server did not start:\n{log_tail(record.log)}")
        time.sleep(0.05)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.outside")
    parser.add_argument("--netns", required=True, help="path of the outside namespace")
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--ready", help="file written once the port is bound")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port: expected 1..65535, got {args.port}")
    enter(args.netns)
    asyncio.run(serve(args.port, args.ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
