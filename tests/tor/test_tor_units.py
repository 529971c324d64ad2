"""lab/tor.py without namespaces: input validation, rendered configs accepted by the real
daemons' own checkers, parsers on the daemons' real output, the MRT writer."""

from __future__ import annotations

import ipaddress
import re
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lab import mrt, tor

NEIGHBORS = [("10.66.0.11", 64512), ("10.66.0.12", 64512), ("10.66.0.13", 64513)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "frr"}, "kind"),
        ({"asn": 0}, "asn"),
        ({"asn": 4294967296}, "asn"),
        ({"asn": True}, "asn"),
        ({"router_id": "10.66.0.300"}, "router_id"),
        ({"neighbors": [("10.66.0.11", 64512), ("nope", 1)]}, "neighbors[1].address"),
        ({"neighbors": [("10.66.0.11", 0)]}, "neighbors[0].asn"),
        ({"neighbors": [("10.66.0.11", 64512), ("10.66.0.11", 64513)]}, "neighbors[1].address"),
        ({"neighbors": ["10.66.0.11"]}, "neighbors[0]"),
    ],
)
def test_start_tor_rejects_bad_input_before_doing_anything(
    tmp_path: Path, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {
        "kind": "bird",
        "state_dir": tmp_path,
        "asn": 65000,
        "router_id": "10.66.0.1",
        "neighbors": NEIGHBORS,
    }
    args.update(kwargs)
    with pytest.raises(tor.TorError, match="^" + re.escape(field) + ":"):
        tor.start_tor(**args)  # type: ignore[arg-type]
    assert not (tmp_path / "tor").exists()


@pytest.mark.parametrize("kind", tor.TOR_KINDS)
def test_bad_prefix_changes_nothing(tmp_path: Path, kind: str) -> None:
    (tmp_path / "tor").mkdir()
    (tmp_path / "tor" / tor.ANNOUNCED_LIST).write_text("10.1.0.0/24\n")
    with pytest.raises(tor.TorError, match=r"^prefixes\[1\]: '10.2.0.1/24'"):
        tor.announce(kind, tmp_path, ["10.3.0.0/24", "10.2.0.1/24"])
    with pytest.raises(tor.TorError, match=r"^prefixes: expected a sequence"):
        tor.withdraw(kind, tmp_path, "10.1.0.0/24")
    assert tor.announced(tmp_path) == ["10.1.0.0/24"]


def test_bird_config_passes_birds_own_check(tmp_path: Path) -> None:
    neighbors = [tor.Neighbor(a, asn) for a, asn in NEIGHBORS]
    (tmp_path / tor.BIRD_STATIC).write_text(
        tor.render_bird_static([ipaddress.IPv4Network("10.200.0.0/24")])
    )
    conf = tmp_path / tor.BIRD_CONF
    conf.write_text(tor.render_bird_config(tmp_path, 65000, "10.66.0.1", neighbors))
    proc = subprocess.run([tor.BIRD, "-p", "-c", str(conf)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = conf.read_text()
    for address, asn in NEIGHBORS:
        assert f"neighbor {address} as {asn};" in text


def test_gobgp_config_passes_gobgpds_own_check(tmp_path: Path) -> None:
    neighbors = [tor.Neighbor(a, asn) for a, asn in NEIGHBORS]
    conf = tmp_path / tor.GOBGP_CONF
    conf.write_text(tor.render_gobgp_config(65000, "10.66.0.1", neighbors))
    proc = subprocess.run(
        [tor.GOBGPD, "--dry-run", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert conf.read_text().count("[[neighbors]]") == 3


BIRD_PROTOCOLS = """\
BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     16:17:05.193

tor_10_66_0_11 BGP        ---        up     16:17:05.973  Established
  BGP state:          Established
    Neighbor address: 10.66.0.11
    Neighbor AS:      64512
  Channel ipv4
    State:          UP

tor_10_66_0_12 BGP        ---        start  16:17:05.973  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 10.66.0.12
    Neighbor AS:      64512
    Connect delay:    0.512/1
"""

BIRD_ROUTES = """\
BIRD 2.0.12 ready.
Table master4:
10.65.1.0/26         unicast [tor_10_66_0_12 16:17:06.730] * (100) [AS64512i]
\tvia 10.66.0.12 on br0
                     unicast [tor_10_66_0_13 16:17:06.731] (100) [AS64512i]
\tvia 10.66.0.13 on br0
10.96.0.10/32        unicast [tor_10_66_0_11 16:17:06.730] * (100) [AS64512i]
\tvia 10.66.0.11 on br0 weight 1
\tvia 10.66.0.12 on br0 weight 1
"""


def test_bird_parsers() -> None:
    assert tor.parse_bird_sessions(BIRD_PROTOCOLS) == {
        "10.66.0.11": "Established",
        "10.66.0.12": "Active",
    }
    assert tor.parse_bird_routes(BIRD_ROUTES) == {
        "10.65.1.0/26": ["10.66.0.12", "10.66.0.13"],
        "10.96.0.10/32": ["10.66.0.11", "10.66.0.12"],
    }


def test_gobgp_parsers() -> None:
    peers: list[dict[str, Any]] = [
        {"conf": {"neighbor_address": "10.66.0.11"}, "state": {"session_state": 6}},
        {"conf": {"neighbor_address": "10.66.0.12"}, "state": {"session_state": 3}},
        {"conf": {"neighbor_address": "10.66.0.13"}, "state": {}},
    ]
    assert tor.parse_gobgp_sessions(peers) == {
        "10.66.0.11": "Established",
        "10.66.0.12": "Active",
        "10.66.0.13": "Idle",
    }
    rib: dict[str, list[dict[str, Any]]] = {
        "10.201.0.0/24": [
            {
                "attrs": [{"type": 1, "value": 0}, {"type": 3, "nexthop": "10.66.0.11"}],
                "neighbor-ip": "10.66.0.11",
            }
        ],
        "10.202.0.0/24": [{"attrs": [{"type": 3, "nexthop": "0.0.0.0"}]}],  # our own
    }
    assert tor.parse_gobgp_learned(rib) == {"10.201.0.0/24": ["10.66.0.11"]}


def test_mrt_dump_layout() -> None:
    networks = [ipaddress.IPv4Network("10.1.0.0/24"), ipaddress.IPv4Network("10.2.3.4/32")]
    data = mrt.local_routes_dump(networks, padding=2)
    records = []
    offset = 0
    while offset < len(data):
        _ts, mrt_type, subtype, length = struct.unpack_from("!IHHI", data, offset)
        records.append((mrt_type, subtype, data[offset + 12 : offset + 12 + length]))
        offset += 12 + length
    assert offset == len(data)
    assert [(t, s) for t, s, _ in records] == [(13, 1)] + [(13, 2)] * 4
    prefixes = []
    for _, _, body in records[1:]:
        length = body[4]
        octets = body[5 : 5 + (length + 7) // 8]
        address = ipaddress.IPv4Address(octets.ljust(4, bytes(1)))
        prefixes.append(f"{address}/{length}")
    assert prefixes == ["10.1.0.0/24", "10.2.3.4/32", "10.1.0.0/24", "10.1.0.0/24"]
    with pytest.raises(ValueError, match="networks"):
        mrt.local_routes_dump([])
