"""IPPool and IPAMConfiguration validation and defaults."""

from __future__ import annotations

from typing import Any

import pytest

from libcalico.resources.validation import ValidationError, check_update, validate
from tests.resources.builders import assert_invalid, calico, pool


def test_ipv4_pool_defaults() -> None:
    spec = validate(pool({"cidr": "10.244.0.0/16"}))["spec"]
    assert spec == {
        "cidr": "10.244.0.0/16",
        "blockSize": 26,
        "ipipMode": "Never",
        "vxlanMode": "Never",
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
    }


def test_ipv6_pool_defaults_and_normalized_cidr() -> None:
    spec = validate(pool({"cidr": "FD00:0:0::/48"}))["spec"]
    assert spec["cidr"] == "fd00::/48"
    assert spec["blockSize"] == 122


def test_pool_explicit_settings_kept() -> None:
    spec = validate(
        pool(
            {
                "cidr": "192.168.0.0/24",
                "blockSize": 28,
                "vxlanMode": "CrossSubnet",
                "natOutgoing": True,
                "disabled": False,
                "nodeSelector": "zone == 'a'",
                "allowedUses": ["Workload"],
                "assignmentMode": "Automatic",
            }
        )
    )["spec"]
    assert spec["blockSize"] == 28
    assert spec["vxlanMode"] == "CrossSubnet"
    assert spec["natOutgoing"] is True
    assert spec["nodeSelector"] == "zone == 'a'"
    assert spec["allowedUses"] == ["Workload"]


def test_disabled_pool_may_be_smaller_than_a_block() -> None:
    assert validate(pool({"cidr": "10.0.0.0/28", "disabled": True}))["spec"]["blockSize"] == 26


def test_load_balancer_pool() -> None:
    spec = validate(pool({"cidr": "10.96.0.0/24", "allowedUses": ["LoadBalancer"]}))["spec"]
    assert spec["allowedUses"] == ["LoadBalancer"]


BAD_POOLS: list[tuple[str, dict[str, Any], str, str]] = [
    ("no cidr", pool({}), "spec.cidr", "must be specified"),
    ("garbage cidr", pool({"cidr": "10.0.0.0/40"}), "spec.cidr", "not a valid CIDR"),
    ("host bits", pool({"cidr": "10.0.0.1/16"}), "spec.cidr", "host bits"),
    ("netmask syntax", pool({"cidr": "10.0.0.0/255.255.0.0"}), "spec.cidr", "valid CIDR"),
    ("link local", pool({"cidr": "169.254.0.0/24"}), "spec.cidr", "Link Local"),
    ("v6 link local", pool({"cidr": "fe80::/64"}), "spec.cidr", "Link Local"),
    (
        "v4 block too small",
        pool({"cidr": "10.0.0.0/8", "blockSize": 19}),
        "spec.blockSize",
        "between 20 and 32",
    ),
    (
        "v4 block too big",
        pool({"cidr": "10.0.0.0/8", "blockSize": 33}),
        "spec.blockSize",
        "between 20 and 32",
    ),
    (
        "v6 block range",
        pool({"cidr": "fd00::/48", "blockSize": 64}),
        "spec.blockSize",
        "between 116 and 128",
    ),
    ("block not int", pool({"cidr": "10.0.0.0/8", "blockSize": "26"}), "spec.blockSize", "integer"),
    ("pool smaller than block", pool({"cidr": "10.0.0.0/28"}), "spec.cidr", "too small"),
    (
        "bad ipip mode",
        pool({"cidr": "10.0.0.0/16", "ipipMode": "always"}),
        "spec.ipipMode",
        "not one of",
    ),
    ("ipip on v6", pool({"cidr": "fd00::/48", "ipipMode": "Always"}), "spec.ipipMode", "IPv6"),
    (
        "bad vxlan mode",
        pool({"cidr": "10.0.0.0/16", "vxlanMode": "Sometimes"}),
        "spec.vxlanMode",
        "CrossSubnet",
    ),
    (
        "ipip and vxlan cross-subnet",
        pool({"cidr": "10.0.0.0/16", "ipipMode": "CrossSubnet", "vxlanMode": "CrossSubnet"}),
        "spec.ipipMode",
        "cannot both be enabled",
    ),
    (
        "ipip and vxlan",
        pool({"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "Always"}),
        "spec.ipipMode",
        "both",
    ),
    (
        "bad node selector",
        pool({"cidr": "10.0.0.0/16", "nodeSelector": "a =="}),
        "spec.nodeSelector",
        "invalid selector",
    ),
    (
        "bad use",
        pool({"cidr": "10.0.0.0/16", "allowedUses": ["Workload", "Pods"]}),
        "spec.allowedUses[1]",
        "not one of",
    ),
    (
        "lb mixed",
        pool({"cidr": "10.0.0.0/16", "allowedUses": ["LoadBalancer", "Workload"]}),
        "spec.allowedUses",
        "LoadBalancer",
    ),
    (
        "v1 field",
        pool({"cidr": "10.0.0.0/16", "nat-outgoing": True}),
        "spec.nat-outgoing",
        "unknown field",
    ),
    (
        "natOutgoing not bool",
        pool({"cidr": "10.0.0.0/16", "natOutgoing": "true"}),
        "spec.natOutgoing",
        "true or false",
    ),
    (
        "namespace on pool",
        calico("IPPool", "p", {"cidr": "10.0.0.0/16"}, "x"),
        "metadata.namespace",
        "not namespaced",
    ),
    ("bad name", pool({"cidr": "10.0.0.0/16"}, name="Pool_1"), "metadata.name", "lower case"),
    ("spec not an object", pool(["10.0.0.0/16"]), "spec", "object"),
]


@pytest.mark.parametrize(
    ("obj", "path", "message"),
    [(obj, path, message) for _, obj, path, message in BAD_POOLS],
    ids=[case[0] for case in BAD_POOLS],
)
def test_bad_pools_rejected_at_path(obj: dict[str, Any], path: str, message: str) -> None:
    assert_invalid(obj, path, message)


def test_pool_cidr_and_block_size_are_immutable() -> None:
    old = validate(pool({"cidr": "10.0.0.0/16"}))
    check_update(old, validate(pool({"cidr": "10.0.0.0/16", "natOutgoing": True})))
    with pytest.raises(ValidationError) as caught:
        check_update(old, validate(pool({"cidr": "10.1.0.0/16"})))
    assert caught.value.path == "spec.cidr"
    with pytest.raises(ValidationError) as caught:
        check_update(old, validate(pool({"cidr": "10.0.0.0/16", "blockSize": 24})))
    assert caught.value.path == "spec.blockSize"


def test_ipam_configuration() -> None:
    out = validate(calico("IPAMConfiguration", "default", {"maxBlocksPerHost": 4}))
    assert out["spec"] == {
        "strictAffinity": False,
        "autoAllocateBlocks": True,
        "maxBlocksPerHost": 4,
    }
    assert_invalid(calico("IPAMConfiguration", "other", {}), "metadata.name", "default")
    assert_invalid(
        calico("IPAMConfiguration", "default", {"maxBlocksPerHost": -1}),
        "spec.maxBlocksPerHost",
        "at least 0",
    )
    assert_invalid(
        calico("IPAMConfiguration", "default", {"strictAffinity": 1}),
        "spec.strictAffinity",
        "true or false",
    )
