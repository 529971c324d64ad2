"""BGPFilter, BGPPeer and BGPConfiguration: bad input names the field at fault."""

from __future__ import annotations

from typing import Any

import pytest

from libcalico.resources.kinds import lookup_kind
from libcalico.resources.validation import validate
from libcalico.resources.validation.config import duration_seconds, parse_community
from tests.resources.builders import assert_invalid, calico, with_field


def bgp_filter(**spec: Any) -> dict[str, Any]:
    return calico("BGPFilter", "my-filter", spec)


GOOD_FILTER = bgp_filter(
    exportV4=[
        {"action": "Accept", "matchOperator": "In", "cidr": "77.0.0.0/16", "source": "RemotePeers"},
        {"action": "Reject", "interface": "*.calico"},
    ],
    importV4=[
        {
            "action": "Accept",
            "matchOperator": "In",
            "cidr": "55.0.0.0/16",
            "prefixLength": {"min": 30},
        },
        {"action": "Reject", "matchOperator": "NotIn", "cidr": "44.0.0.0/16"},
    ],
    exportV6=[{"action": "Reject", "source": "RemotePeers"}],
    importV6=[
        {"action": "Accept", "matchOperator": "Equal", "cidr": "5000::/64"},
        {"action": "Reject"},
    ],
)


def test_bgp_filter_kind_is_registered() -> None:
    info = lookup_kind("bgpfilters")
    assert (info.kind, info.plural, info.namespaced) == ("BGPFilter", "bgpfilters", False)
    assert lookup_kind("BGPFilter.projectcalico.org") is info


def test_good_filter_validates_normalised() -> None:
    out = validate(GOOD_FILTER)["spec"]
    assert out["importV4"][0] == {
        "action": "Accept",
        "matchOperator": "In",
        "cidr": "55.0.0.0/16",
        "prefixLength": {"min": 30},
    }
    assert out["importV6"][0]["cidr"] == "5000::/64"
    assert validate(bgp_filter())["spec"] == {}


V4_RULE = "spec.importV4[0]"
BAD_FILTERS = [
    ("bad cidr", "spec.importV4.0.cidr", "10.0.0.0/33", f"{V4_RULE}.cidr", "not a valid CIDR"),
    ("host bits", "spec.importV4.0.cidr", "55.0.0.1/16", f"{V4_RULE}.cidr", "host bits"),
    ("v6 in v4", "spec.importV4.0.cidr", "fd00::/64", f"{V4_RULE}.cidr", "IPv4"),
    ("v4 in v6", "spec.importV6.0.cidr", "10.0.0.0/8", "spec.importV6[0].cidr", "IPv6"),
    ("operator", "spec.importV4.0.matchOperator", "Like", f"{V4_RULE}.matchOperator", "one of"),
    ("action", "spec.exportV4.1.action", "Drop", "spec.exportV4[1].action", "not one of"),
    ("no action", "spec.exportV4.1", {"interface": "eth0"}, "spec.exportV4[1].action", "required"),
    (
        "cidr alone",
        "spec.exportV4.1",
        {"action": "Reject", "cidr": "1.0.0.0/8"},
        "spec.exportV4[1].matchOperator",
        "required when cidr",
    ),
    (
        "operator alone",
        "spec.exportV4.1",
        {"action": "Reject", "matchOperator": "In"},
        "spec.exportV4[1].cidr",
        "required when matchOperator",
    ),
    (
        "length v4",
        "spec.importV4.0.prefixLength",
        {"min": 33},
        f"{V4_RULE}.prefixLength.min",
        "between 0 and 32",
    ),
    (
        "length v6",
        "spec.importV6.0",
        {
            "action": "Accept",
            "matchOperator": "In",
            "cidr": "fd00::/8",
            "prefixLength": {"max": 129},
        },
        "spec.importV6[0].prefixLength.max",
        "between 0 and 128",
    ),
    (
        "min > max",
        "spec.importV4.0.prefixLength",
        {"min": 30, "max": 20},
        f"{V4_RULE}.prefixLength.min",
        "greater",
    ),
    (
        "length with Equal",
        "spec.importV4.1",
        {"action": "Accept", "matchOperator": "Equal", "cidr": "1.0.0.0/8", "prefixLength": {}},
        "spec.importV4[1].prefixLength",
        "In or NotIn",
    ),
    ("source", "spec.exportV4.0.source", "Everyone", "spec.exportV4[0].source", "not one of"),
    ("interface", "spec.exportV4.1.interface", 'eth0"; x', "spec.exportV4[1].interface", "glob"),
    ("unknown field", "spec.exportV4.1.nextHop", "x", "spec.exportV4[1].nextHop", "unknown field"),
    ("unknown list", "spec.exportV5", [], "spec.exportV5", "unknown field"),
    ("not a list", "spec.importV4", {"action": "Accept"}, "spec.importV4", "must be a list"),
]


@pytest.mark.parametrize(
    ("what", "path", "value", "at", "message"), BAD_FILTERS, ids=[b[0] for b in BAD_FILTERS]
)
def test_bad_filters_name_the_field(
    what: str, path: str, value: Any, at: str, message: str
) -> None:
    assert_invalid(with_field(GOOD_FILTER, path, value), at, message)


PEER = calico("BGPPeer", "tor", {"peerIP": "10.66.0.1", "asNumber": 65000})


def test_good_peer() -> None:
    spec = {
        "nodeSelector": "all()",
        "peerSelector": "route-reflector == 'true'",
        "filters": ["my-filter", "other"],
        "maxRestartTime": "120s",
        "keepOriginalNextHop": True,
        "reversePeering": "Manual",
    }
    out = validate(calico("BGPPeer", "rr", spec))["spec"]
    assert out["filters"] == ["my-filter", "other"] and out["maxRestartTime"] == "120s"
    assert (
        validate(with_field(PEER, "spec.peerIP", "10.66.0.1:1790"))["spec"]["peerIP"]
        == "10.66.0.1:1790"
    )
    assert validate(with_field(PEER, "spec.asNumber", "1.10"))["spec"]["asNumber"] == 65546
    assert validate(with_field(PEER, "spec.asNumber", 4294967295))["spec"]["asNumber"] == 4294967295


BAD_PEERS = [
    ("not an ip", "spec.peerIP", "not an IP", "spec.peerIP", "not a valid IP address"),
    ("bad port", "spec.peerIP", "10.0.0.1:70000", "spec.peerIP", "invalid port"),
    ("as zero", "spec.asNumber", 0, "spec.asNumber", "between 1 and 4294967295"),
    ("as too big", "spec.asNumber", 4294967296, "spec.asNumber", "between 1 and 4294967295"),
    ("as text", "spec.asNumber", "sixty", "spec.asNumber", "integer"),
    ("asdot", "spec.asNumber", "70000.1", "spec.asNumber", "not a valid AS number"),
    ("filters not a list", "spec.filters", "my-filter", "spec.filters", "must be a list"),
    ("filter name", "spec.filters", ["ok", "Bad_Name"], "spec.filters[1]", "lower case"),
    ("restart time", "spec.maxRestartTime", "120", "spec.maxRestartTime", "not a duration"),
    ("restart type", "spec.maxRestartTime", 120, "spec.maxRestartTime", "must be a string"),
    ("ttl", "spec.ttlSecurity", 300, "spec.ttlSecurity", "between 0 and 255"),
    ("source address", "spec.sourceAddress", "Mine", "spec.sourceAddress", "not one of"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "path", "value", "at", "message"), BAD_PEERS, ids=[b[0] for b in BAD_PEERS]
)
def test_bad_peers_name_the_field(what: str, path: str, value: Any, at: str, message: str) -> None:
    assert_invalid(with_field(PEER, path, value), at, message)


def test_peer_exclusive_fields() -> None:
    assert_invalid(
        calico("BGPPeer", "p", {"node": "a", "nodeSelector": "all()"}), "spec.node", "NodeSelector"
    )
    assert_invalid(with_field(PEER, "spec.peerSelector", "all()"), "spec.peerIP", "PeerSelector")
    assert_invalid(
        calico("BGPPeer", "p", {"nodeSelector": "a ==", "peerIP": "1.2.3.4"}),
        "spec.nodeSelector",
        "selector",
    )
    assert_invalid(calico("Node", "n", {"bgp": {"asNumber": 0}}), "spec.bgp.asNumber", "between 1")


CONFIG = calico(
    "BGPConfiguration",
    "default",
    {
        "communities": [{"name": "rack", "value": "65000:100"}, {"name": "big", "value": "1:2:3"}],
        "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["rack", "big", "65001:1"]}],
        "nodeMeshMaxRestartTime": "90s",
        "ignoredInterfaces": ["docker*"],
    },
)


def test_configuration_communities() -> None:
    out = validate(CONFIG)["spec"]
    assert out["prefixAdvertisements"][0]["communities"] == ["rack", "big", "65001:1"]
    assert_invalid(
        with_field(CONFIG, "spec.communities.0.value", "65536:1"),
        "spec.communities[0].value",
        "community",
    )
    assert_invalid(
        with_field(CONFIG, "spec.communities.1.value", "1:2:3:4"),
        "spec.communities[1].value",
        "community",
    )
    assert_invalid(
        with_field(CONFIG, "spec.communities.1.name", "rack"), "spec.communities[1].name", "twice"
    )
    assert_invalid(
        with_field(CONFIG, "spec.prefixAdvertisements.0.communities", ["nope"]),
        "spec.prefixAdvertisements[0].communities[0]",
        "neither",
    )
    assert_invalid(
        with_field(CONFIG, "spec.prefixAdvertisements.0.cidr", "x"),
        "spec.prefixAdvertisements[0].cidr",
        "CIDR",
    )
    assert_invalid(
        with_field(CONFIG, "spec.nodeMeshMaxRestartTime", "soon"),
        "spec.nodeMeshMaxRestartTime",
        "duration",
    )


def test_helpers() -> None:
    assert duration_seconds("1m30s") == 90 and duration_seconds("0") == 0
    with pytest.raises(ValueError):
        duration_seconds("90")
    assert parse_community("65535:65535") == (65535, 65535)
    assert parse_community("4294967295:0:1") == (4294967295, 0, 1)
    assert parse_community("65536:1") is None and parse_community("a:b") is None
