"""Parsing BIRD's `show protocols all` text (as birdc prints it) into per-protocol facts.

    Name       Proto      Table      State  Since         Info
    Mesh_10_66_0_12 BGP        ---        up     16:18:02.379  Established
      Description:    node-to-node mesh
      BGP state:          Established
        ...
        Last error:       Socket: Connection refused
      Channel ipv4
        ...
        Routes:         1 imported, 1 exported, 1 preferred

A summary line starts at column 0; detail lines are indented. Only the fields calico-bgpd
reports are read; anything else is skipped, so a newer BIRD adding lines does not break it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ROUTES_RE = re.compile(r"(\d+) (imported|filtered|exported|preferred)")


@dataclass(slots=True)
class ProtocolStatus:
    name: str
    proto: str  # "BGP", "Kernel", ...
    table: str
    state: str  # BIRD's protocol state: up, start, down, ...
    since: str
    info: str  # the info column, whitespace collapsed
    bgp_state: str = ""  # "BGP state:" (Established, Active, ...)
    last_error: str = ""
    neighbor_address: str = ""
    neighbor_port: int = 179
    neighbor_as: int = 0
    description: str = ""
    routes_imported: int = 0
    routes_exported: int = 0


def parse_show_protocols(text: str) -> dict[str, ProtocolStatus]:
    """Protocol name -> status, for every protocol in the listing."""
    found: dict[str, ProtocolStatus] = {}
    current: ProtocolStatus | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            fields = line.split()
            if fields[0] == "Name" or len(fields) < 5 or fields[0].startswith("BIRD"):
                current = None  # the header, or birdc's greeting
                continue
            name, proto, table, state, since, *info = fields
            current = ProtocolStatus(name, proto, table, state, since, " ".join(info))
            found[name] = current
            continue
        if current is None:
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        value = value.strip()
        if key == "BGP state":
            current.bgp_state = value
        elif key == "Last error":
            current.last_error = value
        elif key == "Neighbor address":
            current.neighbor_address = value
        elif key == "Neighbor port" and value.isdigit():
            current.neighbor_port = int(value)
        elif key == "Neighbor AS" and value.isdigit():
            current.neighbor_as = int(value)
        elif key == "Description":
            current.description = value
        elif key == "Routes":
            counts = {kind: int(n) for n, kind in _ROUTES_RE.findall(value)}
            current.routes_imported += counts.get("imported", 0)
            current.routes_exported += counts.get("exported", 0)
    return found
