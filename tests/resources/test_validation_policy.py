"""Calico policy validation: NetworkPolicy, GlobalNetworkPolicy, Profile and their rules."""

from __future__ import annotations

from typing import Any

import pytest

from libcalico.resources.validation import validate
from tests.resources.builders import (
    CONFORMANCE_DIR,
    assert_invalid,
    calico,
    conformance_objects,
    gnp,
    np,
)

CONFORMANCE = list(conformance_objects())


def test_conformance_files_hold_objects() -> None:
    assert CONFORMANCE_DIR.is_dir()
    assert len(CONFORMANCE) >= 40


@pytest.mark.parametrize(("case", "obj"), CONFORMANCE, ids=[c for c, _ in CONFORMANCE])
def test_every_conformance_object_validates(case: str, obj: dict[str, Any]) -> None:
    if "__pending__" in obj:
        pytest.skip(f"{case}: {obj['__pending__']}")
    out = validate(obj)
    assert out["metadata"]["name"] == obj["metadata"]["name"]
    assert out["kind"] == obj["kind"]
    # Normalizing is idempotent: a stored object validates to itself.
    assert validate(out) == out


def test_validate_returns_a_new_object() -> None:
    obj = gnp({"selector": "all()", "ingress": [{"action": "Allow"}]})
    before = repr(obj)
    out = validate(obj)
    assert repr(obj) == before
    assert out is not obj


def test_policy_defaults() -> None:
    out = validate(np({"selector": "pod == 'a'", "ingress": [{"action": "Allow"}]}))
    spec = out["spec"]
    assert spec["tier"] == "default"
    assert spec["types"] == ["Ingress"]
    assert spec["ingress"] == [{"action": "Allow", "source": {}, "destination": {}}]
    assert "order" not in spec


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, ["Ingress"]),
        ({"ingress": [{"action": "Allow"}]}, ["Ingress"]),
        ({"egress": [{"action": "Allow"}]}, ["Egress"]),
        ({"ingress": [{"action": "Deny"}], "egress": [{"action": "Allow"}]}, ["Ingress", "Egress"]),
        ({"egress": [{"action": "Allow"}], "types": ["Ingress"]}, ["Ingress"]),
        ({"types": ["Egress", "Ingress"]}, ["Egress", "Ingress"]),
    ],
)
def test_types_default_from_rules_present(spec: dict[str, Any], types: list[str]) -> None:
    assert validate(gnp(spec))["spec"]["types"] == types


@pytest.mark.parametrize("order", [100, 2.5, 0, -1])
def test_order_kept_as_number(order: float) -> None:
    assert validate(gnp({"order": order}))["spec"]["order"] == order


def test_rule_normalization() -> None:
    rule = {
        "action": "Allow",
        "protocol": "TCP",
        "source": {"nets": ["10.0.0.1"], "selector": ""},
        "destination": {"ports": [80, "81", "1000:2000", "3000:3000", "serve-80-tcp"]},
    }
    out = validate(gnp({"ingress": [rule]}))["spec"]["ingress"][0]
    assert out["source"] == {"nets": ["10.0.0.1/32"]}
    assert out["destination"]["ports"] == [80, 81, "1000:2000", 3000, "serve-80-tcp"]


def test_protocol_numbers_and_names() -> None:
    out = validate(gnp({"ingress": [{"action": "Deny", "protocol": "17", "notProtocol": 1}]}))
    rule = out["spec"]["ingress"][0]
    assert (rule["protocol"], rule["notProtocol"]) == (17, 1)


def test_full_rule_accepted() -> None:
    rule = {
        "action": "Allow",
        "ipVersion": 4,
        "protocol": "ICMP",
        "icmp": {"type": 8, "code": 0},
        "notICMP": {"type": 3},
        "source": {
            "nets": ["10.0.0.0/8"],
            "notNets": ["10.1.0.0/16"],
            "selector": "role == 'client'",
            "notSelector": "has(blocked)",
            "namespaceSelector": "ns == 'x'",
            "serviceAccounts": {"names": ["sa1"], "selector": "team == 'a'"},
        },
        "destination": {"namespaceSelector": "global()"},
        "metadata": {"annotations": {"note": "hello"}},
    }
    out = validate(gnp({"ingress": [rule]}))
    assert out["spec"]["ingress"][0]["icmp"] == {"type": 8, "code": 0}


def test_gnp_special_flags() -> None:
    out = validate(gnp({"preDNAT": True, "applyOnForward": True, "ingress": [{"action": "Deny"}]}))
    assert out["spec"]["preDNAT"] is True
    out = validate(gnp({"doNotTrack": True, "applyOnForward": True}))
    assert out["spec"]["doNotTrack"] is True


def test_policy_names() -> None:
    assert validate(np({}, name="tier1.my-policy"))["metadata"]["name"] == "tier1.my-policy"
    assert validate(np({}, name="knp.default.a.b.c"))["metadata"]["name"] == "knp.default.a.b.c"


def test_profile_validates_rules_and_labels() -> None:
    out = validate(
        calico(
            "Profile",
            "kns.x",
            {"ingress": [{"action": "Allow"}], "labelsToApply": {"ns": "x"}},
        )
    )
    assert out["spec"]["labelsToApply"] == {"ns": "x"}


def _ingress(rule: dict[str, Any]) -> dict[str, Any]:
    return gnp({"ingress": [{"action": "Allow"}, rule]})


BAD_POLICIES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no action", _ingress({}), "spec.ingress[1].action", "required"),
    ("bad action", _ingress({"action": "allow"}), "spec.ingress[1].action", "not one of"),
    (
        "unknown rule field",
        _ingress({"action": "Allow", "port": 80}),
        "spec.ingress[1].port",
        "unknown field",
    ),
    (
        "unknown spec field",
        gnp({"selectr": "all()"}),
        "spec.selectr",
        "unknown field",
    ),
    (
        "unknown entity field",
        _ingress({"action": "Allow", "source": {"net": ["10.0.0.0/8"]}}),
        "spec.ingress[1].source.net",
        "unknown field",
    ),
    (
        "port out of range",
        _ingress({"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, 70000]}}),
        "spec.ingress[1].destination.ports[1]",
        "between 1 and 65535",
    ),
    (
        "port zero",
        _ingress({"action": "Allow", "protocol": "TCP", "destination": {"ports": [0]}}),
        "spec.ingress[1].destination.ports[0]",
        "between 1 and 65535",
    ),
    (
        "reversed range",
        _ingress({"action": "Allow", "protocol": "UDP", "source": {"notPorts": ["90:80"]}}),
        "spec.ingress[1].source.notPorts[0]",
        "greater than",
    ),
    (
        "bad port name",
        _ingress({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["Bad_Name"]}}),
        "spec.ingress[1].destination.ports[0]",
        "not a valid port name",
    ),
    (
        "boolean port",
        _ingress({"action": "Allow", "protocol": "TCP", "destination": {"ports": [True]}}),
        "spec.ingress[1].destination.ports[0]",
        "boolean",
    ),
    (
        "ports without protocol",
        _ingress({"action": "Allow", "destination": {"ports": [80]}}),
        "spec.ingress[1].destination.ports",
        "must set protocol to TCP or UDP or SCTP",
    ),
    (
        "ports with ICMP",
        _ingress({"action": "Allow", "protocol": "ICMP", "source": {"ports": [80]}}),
        "spec.ingress[1].source.ports",
        "must set protocol",
    ),
    (
        "lower-case protocol",
        _ingress({"action": "Allow", "protocol": "tcp"}),
        "spec.ingress[1].protocol",
        "protocol name 'tcp' is invalid",
    ),
    (
        "protocol zero",
        _ingress({"action": "Allow", "protocol": 0}),
        "spec.ingress[1].protocol",
        "1-255",
    ),
    (
        "protocol 256",
        _ingress({"action": "Allow", "notProtocol": 256}),
        "spec.ingress[1].notProtocol",
        "1-255",
    ),
    (
        "icmp without protocol",
        _ingress({"action": "Allow", "icmp": {"type": 8}}),
        "spec.ingress[1].icmp",
        "ICMP",
    ),
    (
        "icmp with TCP",
        _ingress({"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}),
        "spec.ingress[1].icmp",
        "ICMP",
    ),
    (
        "icmp type 255",
        _ingress({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 255}}),
        "spec.ingress[1].icmp.type",
        "between 0 and 254",
    ),
    (
        "icmp code 256",
        _ingress({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 3, "code": 256}}),
        "spec.ingress[1].icmp.code",
        "between 0 and 255",
    ),
    (
        "icmp code without type",
        _ingress({"action": "Allow", "protocol": "ICMPv6", "icmp": {"code": 1}}),
        "spec.ingress[1].icmp.code",
        "without an ICMP type",
    ),
    (
        "ICMP with ipVersion 6",
        _ingress({"action": "Allow", "protocol": "ICMP", "ipVersion": 6}),
        "spec.ingress[1].ipVersion",
        "must be 4",
    ),
    (
        "ipVersion 5",
        _ingress({"action": "Allow", "ipVersion": 5}),
        "spec.ingress[1].ipVersion",
        "4 or 6",
    ),
    (
        "net with host bits",
        _ingress({"action": "Allow", "source": {"nets": ["10.0.0.0/8", "10.0.0.1/24"]}}),
        "spec.ingress[1].source.nets[1]",
        "host bits",
    ),
    (
        "garbage net",
        _ingress({"action": "Allow", "destination": {"notNets": ["10.0.0.0/33"]}}),
        "spec.ingress[1].destination.notNets[0]",
        "not a valid CIDR",
    ),
    (
        "mixed families",
        _ingress(
            {
                "action": "Allow",
                "source": {"nets": ["10.0.0.0/8"]},
                "destination": {"nets": ["fd00::/64"]},
            }
        ),
        "spec.ingress[1].destination.nets",
        "both IPv4 and IPv6",
    ),
    (
        "nets against ipVersion",
        _ingress({"action": "Allow", "ipVersion": 6, "source": {"nets": ["10.0.0.0/8"]}}),
        "spec.ingress[1].source.nets",
        "IP version",
    ),
    (
        "bad selector",
        _ingress({"action": "Allow", "source": {"selector": "pod == "}}),
        "spec.ingress[1].source.selector",
        "position",
    ),
    (
        "global() in selector",
        _ingress({"action": "Allow", "source": {"selector": "global()"}}),
        "spec.ingress[1].source.selector",
        "namespaceSelector",
    ),
    (
        "global() combined",
        _ingress({"action": "Allow", "source": {"namespaceSelector": "global() && a == 'b'"}}),
        "spec.ingress[1].source.namespaceSelector",
        "cannot be combined",
    ),
    (
        "bad policy selector",
        gnp({"selector": "pod in {'a'"}),
        "spec.selector",
        "invalid selector",
    ),
    (
        "global() policy selector",
        gnp({"selector": "global()"}),
        "spec.selector",
        "namespaceSelector",
    ),
    (
        "bad service account selector",
        _ingress({"action": "Allow", "source": {"serviceAccounts": {"selector": "=="}}}),
        "spec.ingress[1].source.serviceAccounts.selector",
        "invalid selector",
    ),
    (
        "service account names not strings",
        _ingress({"action": "Allow", "source": {"serviceAccounts": {"names": [1]}}}),
        "spec.ingress[1].source.serviceAccounts.names[0]",
        "string",
    ),
    (
        "services on ingress destination",
        _ingress({"action": "Allow", "destination": {"services": {"name": "s", "namespace": "x"}}}),
        "spec.ingress[1].destination.services",
        "not allowed in ingress rule destination",
    ),
    (
        "services with selector",
        _ingress(
            {
                "action": "Allow",
                "source": {"services": {"name": "s", "namespace": "x"}, "selector": "a == 'b'"},
            }
        ),
        "spec.ingress[1].source.services",
        "Selector",
    ),
    (
        "GNP service without namespace",
        _ingress({"action": "Allow", "source": {"services": {"name": "s"}}}),
        "spec.ingress[1].source.services.namespace",
        "namespace",
    ),
    (
        "http on deny",
        _ingress({"action": "Deny", "http": {"methods": ["GET"]}}),
        "spec.ingress[1].http",
        "only valid for Allow",
    ),
    (
        "duplicate types",
        gnp({"types": ["Ingress", "Ingress"]}),
        "spec.types[1]",
        "more than once",
    ),
    ("bad type", gnp({"types": ["ingress"]}), "spec.types[0]", "not one of"),
    ("order string", gnp({"order": "10"}), "spec.order", "number"),
    ("order bool", gnp({"order": True}), "spec.order", "number"),
    (
        "preDNAT with doNotTrack",
        gnp({"preDNAT": True, "doNotTrack": True, "applyOnForward": True}),
        "spec.preDNAT",
        "cannot both be true",
    ),
    (
        "preDNAT with egress rules",
        gnp({"preDNAT": True, "applyOnForward": True, "egress": [{"action": "Allow"}]}),
        "spec.egress",
        "Egress rules",
    ),
    (
        "preDNAT with Egress type",
        gnp({"preDNAT": True, "applyOnForward": True, "types": ["Egress"]}),
        "spec.types",
        "Egress",
    ),
    (
        "doNotTrack without applyOnForward",
        gnp({"doNotTrack": True}),
        "spec.applyOnForward",
        "must be true",
    ),
    ("flag not bool", gnp({"doNotTrack": "yes"}), "spec.doNotTrack", "true or false"),
    (
        "NetworkPolicy has no doNotTrack",
        np({"doNotTrack": True}),
        "spec.doNotTrack",
        "unknown field",
    ),
    (
        "too many rules",
        gnp({"egress": [{"action": "Allow"}] * 1025}),
        "spec.egress",
        "at most 1024",
    ),
    ("rules not a list", gnp({"ingress": {"action": "Allow"}}), "spec.ingress", "list"),
    ("rule not an object", gnp({"ingress": ["Allow"]}), "spec.ingress[0]", "object"),
    (
        "GNP with namespace",
        calico("GlobalNetworkPolicy", "p", {}, "x"),
        "metadata.namespace",
        "not namespaced",
    ),
    ("NP without namespace", calico("NetworkPolicy", "p", {}), "metadata.namespace", "required"),
    ("NP name with two dots", np({}, name="a.b.c"), "metadata.name", "lower case"),
    ("GNP upper-case name", gnp({}, name="Deny"), "metadata.name", "lower case"),
    ("bad tier", gnp({"tier": "Not_Valid"}), "spec.tier", "tier"),
]


@pytest.mark.parametrize(
    ("obj", "path", "message"),
    [(obj, path, message) for _, obj, path, message in BAD_POLICIES],
    ids=[case[0] for case in BAD_POLICIES],
)
def test_bad_policies_rejected_at_path(obj: dict[str, Any], path: str, message: str) -> None:
    assert_invalid(obj, path, message)
