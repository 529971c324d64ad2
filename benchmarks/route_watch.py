"""Watching one namespace's kernel routing table as it changes, with the time of each change.

A raw rtnetlink socket subscribed to IPv4 route events (RTMGRP_IPV4_ROUTE), opened inside the
namespace (a socket keeps the namespace it was created in), read by one thread that stamps
every message on arrival. Parsing takes only what a convergence benchmark needs: the prefix, the
table and the metric of each route added or deleted. No pyroute2: it forks a helper per
namespace and parses every attribute, far too slow for 10,000 routes arriving in ~0.1 s.

Initial contents are not dumped: a watcher sees what changes after it starts.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from lab import netns

NETLINK_ROUTE = 0
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
NLMSG_HDR = struct.Struct("=IHHII")
RTMSG = struct.Struct("=BBBBBBBBI")
RTATTR = struct.Struct("=HH")
RTA_DST = 1
RTA_PRIORITY = 6
RTA_TABLE = 15
RT_TABLE_MAIN = 254
AF_INET = socket.AF_INET
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 64 << 20  # 10,000 routes in one burst must never overflow it


class RouteWatchError(RuntimeError):
    pass


def _align(n: int) -> int:
    return (n + 3) & ~3


class RouteWatcher:
    """The main table's IPv4 routes of one namespace: which prefixes are present now and when
    each last appeared or went."""

    def __init__(self, namespace: str | Path) -> None:
        path = Path(namespace) if "/" in str(namespace) else netns.netns_path(str(namespace))
        with netns.inside(path):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        self._sock.bind((0, RTMGRP_IPV4_ROUTE))
        self._sock.settimeout(0.2)
        self._cond = threading.Condition()
        self._routes: dict[str, set[int]] = {}  # prefix -> metrics of its routes
        self.changed: dict[str, float] = {}  # prefix -> perf_counter() of its last change
        self.error: str = ""
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"routes-{path.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> RouteWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        buf = bytearray(1 << 20)
        while not self._stop:
            try:
                n = self._sock.recv_into(buf)
            except TimeoutError:
                continue
            except OSError as exc:
                with self._cond:
                    if exc.errno == errno.ENOBUFS:
                        self.error = "netlink receive buffer overflowed: events were lost"
                    else:
                        self.error = f"netlink: {exc}"
                    self._cond.notify_all()
                return
            stamp = time.perf_counter()
            changes = list(_parse(memoryview(buf)[:n]))
            if not changes:
                continue
            with self._cond:
                for added, prefix, metric in changes:
                    metrics = self._routes.setdefault(prefix, set())
                    if added:
                        metrics.add(metric)
                    else:
                        metrics.discard(metric)
                        if not metrics:
                            del self._routes[prefix]
                    self.changed[prefix] = stamp
                self._cond.notify_all()

    def present(self, prefix: str) -> bool:
        with self._cond:
            return prefix in self._routes

    def wait(self, prefixes: Iterable[str], present: bool, timeout: float) -> float:
        """Block until every one of `prefixes` is present (or absent); returns the arrival time
        (perf_counter) of the event that completed it. RouteWatchError on timeout."""
        wanted = list(prefixes)
        pending = wanted
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.error:
                    raise RouteWatchError(self.error)
                # Rescan only what was still pending (10,000 prefixes, hundreds of wake-ups),
                # then the whole set once, in case something flapped back meanwhile.
                pending = [p for p in pending if (p in self._routes) != present]
                if not pending:
                    pending = [p for p in wanted if (p in self._routes) != present]
                if not pending:
                    return max((self.changed.get(p, 0.0) for p in wanted), default=0.0)
                left = deadline - time.monotonic()
                if left <= 0:
                    state = "present" if present else "absent"
                    raise RouteWatchError(
                        f"{len(pending)} of {len(wanted)} prefixes not {state} after "
                        f"{timeout:.0f} s (first: {pending[0]})"
                    )
                self._cond.wait(min(left, 0.5))


def _parse(data: memoryview) -> Iterable[tuple[bool, str, int]]:
    """(added, prefix, metric) for each IPv4 main-table route message in a netlink batch."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            break
        if kind in (RTM_NEWROUTE, RTM_DELROUTE):
            body = offset + NLMSG_HDR.size
            family, dst_len, _src_len, _tos, table, _proto, _scope, _type, _flags2 = (
                RTMSG.unpack_from(data, body)
            )
            if family == AF_INET:
                dst = b"\0\0\0\0"
                metric = 0
                attr = body + RTMSG.size
                end = offset + length
                while attr + RTATTR.size <= end:
                    attr_len, attr_type = RTATTR.unpack_from(data, attr)
                    if attr_len < RTATTR.size:
                        break
                    value = data[attr + RTATTR.size : attr + attr_len]
                    if attr_type == RTA_DST:
                        dst = bytes(value)
                    elif attr_type == RTA_TABLE:
                        table = struct.unpack("=I", value)[0]
                    elif attr_type == RTA_PRIORITY:
                        metric = struct.unpack("=I", value)[0]
                    attr += _align(attr_len)
                if table == RT_TABLE_MAIN:
                    prefix = f"{ipaddress.IPv4Address(dst)}/{dst_len}"
                    yield kind == RTM_NEWROUTE, prefix, metric
        offset += _align(length)
