"""A minimal rtnetlink client: links, addresses and routes over one raw netlink socket.

Why not pyroute2: it forks a helper process per namespace open (~24 ms) and costs ~190 ms to
import. Plumbing a pod needs a dozen small requests; over a raw socket they cost ~1 ms.

A socket belongs to the network namespace it was created in (see `netns.socket_in`); every
call blocks, so callers run them on a worker thread, never on the event loop. Not thread-safe:
one socket, one thread.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

# Message types.
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

# Header flags.
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1

# Link attributes.
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFF_UP = 0x1

# Address attributes.
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_F_NODAD = 0x02

# Route attributes and values.
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")
_RECV_BUFFER = 1 << 20


class NetlinkError(OSError):
    """The kernel refused a request; `errno` as the kernel gave it, plus its extended ack."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    body = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return body + b"\0" * (_align(len(body)) - len(body))


def attr_str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attributes from `offset` to the end; a repeated type keeps the last value."""
    attrs: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        attrs[kind & 0x3FFF] = data[offset + _RTATTR.size : offset + length]
        offset += _align(length)
    return attrs


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode()


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    flags: int
    mac: str
    mtu: int
    kind: str = ""

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True, slots=True)
class Address:
    index: int
    address: IPAddress
    prefix_len: int


@dataclass(frozen=True, slots=True)
class Route:
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    oif: int
    gateway: IPAddress | None
    scope: int
    table: int
    type: int


@dataclass
class NetlinkSocket:
    """One NETLINK_ROUTE socket, in the network namespace of the thread that made it."""

    sock: socket.socket = field(init=False)
    _seq: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport ----

    def _send(self, msg_type: int, flags: int, payload: bytes) -> int:
        self._seq += 1
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, flags, self._seq, 0)
        self.sock.send(header + payload)
        return self._seq

    def _messages(self, seq: int) -> Iterator[tuple[int, int, bytes]]:
        """(type, flags, payload) of every reply to `seq`, raising on NLMSG_ERROR != 0."""
        while True:
            data = self.sock.recv(_RECV_BUFFER)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, msg_type, flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    return
                payload = data[offset + _NLMSGHDR.size : offset + length]
                offset += _align(length)
                if msg_seq != seq:
                    continue  # a late reply to an earlier, abandoned request
                if msg_type == NLMSG_ERROR:
                    (code,) = _ERRNO.unpack_from(payload)
                    if code != 0:
                        raise self._error(-code, flags, payload)
                    yield msg_type, flags, payload
                    return
                if msg_type == NLMSG_DONE:
                    return
                yield msg_type, flags, payload
                if not flags & NLM_F_MULTI:
                    return  # a single answer (a lookup without NLM_F_ACK)

    @staticmethod
    def _error(code: int, flags: int, payload: bytes) -> NetlinkError:
        detail = ""
        if flags & NLM_F_ACK_TLVS:
            # errno, then the request's header (NETLINK_CAP_ACK: header only), then TLVs.
            attrs = parse_attrs(payload, _ERRNO.size + _NLMSGHDR.size)
            if NLMSGERR_ATTR_MSG in attrs:
                detail = ": " + _c_string(attrs[NLMSGERR_ATTR_MSG])
        return NetlinkError(code, os.strerror(code) + detail)

    def request(self, msg_type: int, flags: int, payload: bytes) -> None:
        """Send one request and wait for its acknowledgement."""
        seq = self._send(msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, payload)
        for _ in self._messages(seq):
            pass

    def query(self, msg_type: int, payload: bytes, *, dump: bool) -> list[bytes]:
        """Send a GET (a dump, or a single lookup) and return the answers' payloads."""
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        seq = self._send(msg_type, flags, payload)
        return [p for t, _f, p in self._messages(seq) if t != NLMSG_ERROR]

    # ---- links ----

    @staticmethod
    def _parse_link(payload: bytes) -> Link:
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
        attrs = parse_attrs(payload, _IFINFOMSG.size)
        kind = ""
        if IFLA_LINKINFO in attrs:
            info = parse_attrs(attrs[IFLA_LINKINFO])
            kind = _c_string(info.get(IFLA_INFO_KIND, b""))
        mtu = struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0
        return Link(
            index=index,
            name=_c_string(attrs.get(IFLA_IFNAME, b"")),
            flags=flags,
            mac=format_mac(attrs.get(IFLA_ADDRESS, b"")),
            mtu=mtu,
            kind=kind,
        )

    def get_link(self, name: str) -> Link | None:
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
        try:
            answers = self.query(RTM_GETLINK, payload, dump=False)
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return self._parse_link(answers[0]) if answers else None

    def links(self) -> list[Link]:
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return [self._parse_link(p) for p in self.query(RTM_GETLINK, payload, dump=True)]

    def create_veth(
        self,
        name: str,
        *,
        mac: str,
        mtu: int,
        peer_name: str,
        peer_netns_fd: int,
    ) -> None:
        """A veth pair, this end here with `mac`, the peer in the namespace of `peer_netns_fd`.

        Both ends start down. EEXIST when either name is taken in its namespace.
        """
        peer = (
            _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + attr_str(IFLA_IFNAME, peer_name)
            + attr_u32(IFLA_MTU, mtu)
            + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        )
        linkinfo = attr_str(IFLA_INFO_KIND, "veth") + attr(
            IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer)
        )
        payload = (
            _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + attr_str(IFLA_IFNAME, name)
            + attr_u32(IFLA_MTU, mtu)
            + attr(IFLA_ADDRESS, parse_mac(mac))
            + attr(IFLA_LINKINFO, linkinfo)
        )
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, payload)

    def set_up(self, index: int) -> None:
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
        self.request(RTM_NEWLINK, 0, payload)

    def set_down(self, index: int) -> None:
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, IFF_UP)
        self.request(RTM_NEWLINK, 0, payload)

    def delete_link(self, name: str) -> bool:
        """Delete a link by name; False when there was none. A veth takes its peer along."""
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
        try:
            self.request(RTM_DELLINK, 0, payload)
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        return True

    # ---- addresses ----

    def add_address(self, index: int, address: IPAddress, prefix_len: int) -> None:
        """Add an address with duplicate address detection off (IPv6), replacing a twin."""
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        flags = IFA_F_NODAD if address.version == 6 else 0
        scope = RT_SCOPE_LINK if address.is_link_local else RT_SCOPE_UNIVERSE
        payload = _IFADDRMSG.pack(family, prefix_len, flags, scope, index)
        payload += attr(IFA_ADDRESS, address.packed)
        if address.version == 4:
            payload += attr(IFA_LOCAL, address.packed)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, payload)

    def addresses(self, index: int | None = None) -> list[Address]:
        found: list[Address] = []
        for payload in self.query(RTM_GETADDR, _IFADDRMSG.pack(0, 0, 0, 0, 0), dump=True):
            family, prefix_len, _flags, _scope, if_index = _IFADDRMSG.unpack_from(payload)
            if index is not None and if_index != index:
                continue
            attrs = parse_attrs(payload, _IFADDRMSG.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            found.append(Address(if_index, ipaddress.ip_address(raw), prefix_len))
        return found

    # ---- routes ----

    @staticmethod
    def _route_payload(
        dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
        oif: int,
        gateway: IPAddress | None,
        scope: int,
    ) -> bytes:
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        payload = _RTMSG.pack(
            family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0
        )
        if dst.prefixlen:
            payload += attr(RTA_DST, dst.network_address.packed)
        payload += attr_u32(RTA_OIF, oif)
        if gateway is not None:
            payload += attr(RTA_GATEWAY, gateway.packed)
        return payload

    def replace_route(
        self,
        dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
        oif: int,
        gateway: IPAddress | None = None,
    ) -> None:
        """Create or replace a main-table route: a link route without gateway, else via it."""
        scope = RT_SCOPE_LINK if gateway is None else RT_SCOPE_UNIVERSE
        payload = self._route_payload(dst, oif, gateway, scope)
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, payload)

    def delete_route(self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network, oif: int) -> bool:
        payload = self._route_payload(dst, oif, None, RT_SCOPE_UNIVERSE)
        try:
            self.request(RTM_DELROUTE, 0, payload)
        except NetlinkError as exc:
            if exc.errno == errno.ESRCH:
                return False
            raise
        return True

    def routes(self, version: int) -> list[Route]:
        """The main table's routes of one IP version."""
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        request = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        found: list[Route] = []
        for payload in self.query(RTM_GETROUTE, request, dump=True):
            fam, dst_len, _src, _tos, table, _proto, scope, rtype, _flags = _RTMSG.unpack_from(
                payload
            )
            attrs = parse_attrs(payload, _RTMSG.size)
            if RTA_TABLE in attrs:
                table = struct.unpack("=I", attrs[RTA_TABLE])[0]
            if table != RT_TABLE_MAIN or fam != family:
                continue
            zero = b"\0" * (4 if version == 4 else 16)
            dst = ipaddress.ip_network((attrs.get(RTA_DST, zero), dst_len), strict=False)
            gateway = ipaddress.ip_address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
            oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
            found.append(Route(dst, oif, gateway, scope, table, rtype))
        return found
