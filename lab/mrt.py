"""A minimal MRT TABLE_DUMP_V2 writer (RFC 6396): locally originated IPv4 routes in the form
`gobgp mrt inject global FILE` reads.

Why: the GoBGP CLI adds one route per exec (~9 ms each, 90 s for 10,000 prefixes); MRT
injection streams a whole file over one gRPC call. Only what that needs is written: one peer
index table with a single all-zero peer (GoBGP then treats the paths as its own, so they go out
with next hop self and `rib del all` removes them), and one RIB entry per prefix carrying
ORIGIN IGP, an empty AS_PATH and NEXT_HOP 0.0.0.0.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Sequence

MRT_TABLE_DUMP_V2 = 13
SUBTYPE_PEER_INDEX_TABLE = 1
SUBTYPE_RIB_IPV4_UNICAST = 2
PEER_TYPE_AS4 = 0x02  # IPv4 peer address, 4-byte AS number
ATTR_FLAG_TRANSITIVE = 0x40
ATTR_ORIGIN = 1
ATTR_AS_PATH = 2
ATTR_NEXT_HOP = 3
ORIGIN_IGP = 0

# ORIGIN IGP, AS_PATH empty (GoBGP prepends its own AS towards eBGP peers), NEXT_HOP 0.0.0.0.
_LOCAL_ATTRIBUTES = (
    bytes([ATTR_FLAG_TRANSITIVE, ATTR_ORIGIN, 1, ORIGIN_IGP])
    + bytes([ATTR_FLAG_TRANSITIVE, ATTR_AS_PATH, 0])
    + bytes([ATTR_FLAG_TRANSITIVE, ATTR_NEXT_HOP, 4])
    + bytes(4)
)


def _record(subtype: int, body: bytes, timestamp: int) -> bytes:
    return struct.pack("!IHHI", timestamp, MRT_TABLE_DUMP_V2, subtype, len(body)) + body


def _peer_index_table(timestamp: int) -> bytes:
    collector_id = bytes(4)
    view_name = b""
    peer = struct.pack("!B4s4sI", PEER_TYPE_AS4, bytes(4), bytes(4), 0)
    body = struct.pack("!4sH", collector_id, len(view_name)) + view_name
    body += struct.pack("!H", 1) + peer
    return _record(SUBTYPE_PEER_INDEX_TABLE, body, timestamp)


def _rib_entry(sequence: int, network: ipaddress.IPv4Network, timestamp: int) -> bytes:
    prefix_bytes = network.network_address.packed[: (network.prefixlen + 7) // 8]
    body = struct.pack("!IB", sequence, network.prefixlen) + prefix_bytes
    body += struct.pack("!H", 1)  # one entry: peer 0
    body += struct.pack("!HIH", 0, timestamp, len(_LOCAL_ATTRIBUTES)) + _LOCAL_ATTRIBUTES
    return _record(SUBTYPE_RIB_IPV4_UNICAST, body, timestamp)


def local_routes_dump(networks: Sequence[ipaddress.IPv4Network], padding: int = 0) -> bytes:
    """The dump for `networks`, then `padding` repeats of the first one's entry.

    The padding is there because `gobgp mrt inject` exits without closing its gRPC stream, so
    the last ~64 KiB it queued never reach gobgpd; re-adding an identical path is harmless."""
    if not networks:
        raise ValueError("networks: at least one prefix is needed")
    timestamp = int(time.time())
    parts = [_peer_index_table(timestamp)]
    parts.extend(_rib_entry(i, net, timestamp) for i, net in enumerate(networks))
    if padding:
        parts.extend([_rib_entry(len(networks), networks[0], timestamp)] * padding)
    return b"".join(parts)
