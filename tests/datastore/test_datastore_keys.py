"""Calico's key layout helpers."""

from __future__ import annotations

import pytest

from libcalico.datastore import keys


def test_resource_keys_cluster_scoped_and_namespaced() -> None:
    assert (
        keys.resource_key("projectcalico.org", "globalnetworkpolicies", "deny-all")
        == "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/deny-all"
    )
    key = keys.resource_key("core", "pods", "web-0", namespace="prod")
    assert key == "/calico/resources/v3/core/pods/prod/web-0"
    assert keys.parse_resource_key(key) == keys.ResourceKey("core", "pods", "web-0", "prod")
    assert keys.resource_prefix("networking.k8s.io", "networkpolicies", "prod") == (
        "/calico/resources/v3/networking.k8s.io/networkpolicies/prod/"
    )
    assert key.startswith(keys.resource_prefix("core", "pods"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "a/b"}, "name"),
        ({"name": "x", "namespace": "../kube-system"}, "namespace"),
        ({"name": ""}, "name"),
    ],
)
def test_segments_with_slashes_are_rejected(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        keys.resource_key("core", "pods", **kwargs)


@pytest.mark.parametrize(
    "key",
    [
        "/calico/ipam/v2/handle/x",
        "/calico/resources/v3/core/pods",
        "/calico/resources/v3/core/pods/ns/name/extra",
        "/calico/resources/v3/core//name",
    ],
)
def test_parse_rejects_non_resource_keys(key: str) -> None:
    with pytest.raises(ValueError, match=r"^key:"):
        keys.parse_resource_key(key)


def test_ipam_keys_v4_and_v6() -> None:
    block = keys.ipam_block_key("10.0.0.0/26")
    assert block == "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26"
    assert keys.parse_ipam_block_key(block) == "10.0.0.0/26"
    v6 = keys.ipam_block_key("fd00::/122")
    assert v6 == "/calico/ipam/v2/assignment/ipv6/block/fd00::-122"
    assert keys.parse_ipam_block_key(v6) == "fd00::/122"
    affinity = keys.ipam_affinity_key("node-1", "10.0.0.64/26")
    assert affinity == "/calico/ipam/v2/host/node-1/ipv4/block/10.0.0.64-26"
    assert keys.parse_ipam_affinity_key(affinity) == keys.AffinityKey("node-1", "10.0.0.64/26")
    assert affinity.startswith(keys.ipam_affinity_prefix("node-1", 4))
    assert (
        keys.ipam_handle_key("k8s-pod-network.abc") == "/calico/ipam/v2/handle/k8s-pod-network.abc"
    )
    assert keys.parse_ipam_handle_key("/calico/ipam/v2/handle/h1") == "h1"
    assert keys.IPAM_CONFIG_KEY == "/calico/ipam/v2/config"


def test_ipam_keys_validate_inputs() -> None:
    with pytest.raises(ValueError, match=r"^cidr:"):
        keys.ipam_block_key("10.0.0.1/26")  # host bits set
    with pytest.raises(ValueError, match=r"^node:"):
        keys.ipam_affinity_key("evil/../x", "10.0.0.0/26")
    with pytest.raises(ValueError, match=r"^handle:"):
        keys.ipam_handle_key("a/b")
    with pytest.raises(ValueError, match=r"^key:"):
        keys.parse_ipam_affinity_key("/calico/ipam/v2/host/n/ipv4/notblock/10.0.0.0-26")
