"""Traffic probes run inside a namespace (`ip netns exec NS python3 netprobe.py ...`).

The test machine has no ping binary, so ICMP echo is sent over a raw socket here.

    netprobe.py ping ADDR          exit 0 when an echo reply arrives within 2 s
    netprobe.py serve ADDR PORT    accept one TCP connection, echo the bytes reversed
    netprobe.py connect ADDR PORT  send "olleh", print the answer
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
import time


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def ping(addr: str, timeout: float = 2.0) -> bool:
    ip = ipaddress.ip_address(addr)
    ident = os.getpid() & 0xFFFF
    if ip.version == 4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        echo, reply = 8, 0
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        echo, reply = 128, 129  # the kernel fills in the ICMPv6 checksum
    payload = b"felix-probe"
    header = struct.pack("!BBHHH", echo, 0, 0, ident, 1)
    csum = _checksum(header + payload) if ip.version == 4 else 0
    packet = struct.pack("!BBHHH", echo, 0, csum, ident, 1) + payload
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    sock.sendto(packet, (addr, 0))
    while time.monotonic() < deadline:
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            return False
        icmp = data[(data[0] & 0x0F) * 4 :] if ip.version == 4 else data
        kind, _code, _sum, rid, _seq = struct.unpack("!BBHHH", icmp[:8])
        if kind == reply and rid == ident:
            return True
    return False


def serve(addr: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen()
    print("listening", flush=True)
    conn, _ = srv.accept()
    conn.sendall(conn.recv(64)[::-1])
    conn.close()


def connect(addr: str, port: int) -> None:
    with socket.create_connection((addr, port), timeout=5) as s:
        s.sendall(b"olleh")
        sys.stdout.write(s.recv(64).decode())


def main() -> int:
    cmd, addr, *rest = sys.argv[1:]
    if cmd == "ping":
        return 0 if ping(addr) else 1
    if cmd == "serve":
        serve(addr, int(rest[0]))
        return 0
    if cmd == "connect":
        connect(addr, int(rest[0]))
        return 0
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())
