"""Kind lookup: calicoctl aliases, group qualification, the NetworkPolicy ambiguity."""

from __future__ import annotations

import pytest

from libcalico.resources.kinds import (
    UnknownKindError,
    all_kinds,
    kind_of,
    lookup_kind,
)


@pytest.mark.parametrize(
    ("typed", "kind", "group"),
    [
        ("IPPool", "IPPool", "projectcalico.org"),
        ("ippools", "IPPool", "projectcalico.org"),
        ("ipp", "IPPool", "projectcalico.org"),
        ("POOL", "IPPool", "projectcalico.org"),
        ("gnp", "GlobalNetworkPolicy", "projectcalico.org"),
        ("globalnetworkpolicies", "GlobalNetworkPolicy", "projectcalico.org"),
        ("hep", "HostEndpoint", "projectcalico.org"),
        ("weps", "WorkloadEndpoint", "projectcalico.org"),
        ("gns", "GlobalNetworkSet", "projectcalico.org"),
        ("netsets", "NetworkSet", "projectcalico.org"),
        ("bgpp", "BGPPeer", "projectcalico.org"),
        ("bgpconfig", "BGPConfiguration", "projectcalico.org"),
        ("felixconfig", "FelixConfiguration", "projectcalico.org"),
        ("ipamconfig", "IPAMConfiguration", "projectcalico.org"),
        ("clusterinfo", "ClusterInformation", "projectcalico.org"),
        ("pro", "Profile", "projectcalico.org"),
        ("nodes", "Node", "projectcalico.org"),
        ("ns", "Namespace", "core"),
        ("po", "Pod", "core"),
        ("sa", "ServiceAccount", "core"),
        # calicoctl's convention: unqualified NetworkPolicy is Calico's.
        ("networkpolicy", "NetworkPolicy", "projectcalico.org"),
        ("NetworkPolicies", "NetworkPolicy", "projectcalico.org"),
        ("np", "NetworkPolicy", "projectcalico.org"),
        ("networkpolicies.projectcalico.org", "NetworkPolicy", "projectcalico.org"),
        ("networkpolicy.networking.k8s.io", "NetworkPolicy", "networking.k8s.io"),
        ("NetworkPolicies.networking.k8s.io", "NetworkPolicy", "networking.k8s.io"),
        ("netpol", "NetworkPolicy", "networking.k8s.io"),
        ("gnp.projectcalico.org", "GlobalNetworkPolicy", "projectcalico.org"),
        ("pods.core", "Pod", "core"),
    ],
)
def test_lookup_kind_resolves_names_and_aliases(typed: str, kind: str, group: str) -> None:
    info = lookup_kind(typed)
    assert (info.kind, info.group) == (kind, group)


@pytest.mark.parametrize(
    "typed", ["foo", "", "networkpolicy.example.com", "gnp.networking.k8s.io", "ippool.core"]
)
def test_lookup_kind_rejects_unknown_names(typed: str) -> None:
    with pytest.raises(UnknownKindError, match=r"unknown resource type"):
        lookup_kind(typed)


def test_unknown_kind_message_names_what_was_typed() -> None:
    with pytest.raises(UnknownKindError) as caught:
        lookup_kind("foo")
    assert str(caught.value) == "unknown resource type 'foo'"


def test_kind_info_properties() -> None:
    pool = lookup_kind("ippool")
    assert pool.api_version == "projectcalico.org/v3"
    assert not pool.namespaced
    assert pool.plural == "ippools"
    assert lookup_kind("pod").api_version == "v1"
    assert lookup_kind("netpol").api_version == "networking.k8s.io/v1"
    assert lookup_kind("np").describe("deny-all", "x") == "NetworkPolicy(x/deny-all)"
    assert pool.describe("default") == "IPPool(default)"


def test_every_kind_is_found_by_its_object_type() -> None:
    for info in all_kinds():
        assert kind_of({"apiVersion": info.api_version, "kind": info.kind}) is info


def test_kind_of_distinguishes_the_two_network_policies() -> None:
    calico = kind_of({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy"})
    k8s = kind_of({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"})
    assert calico.group == "projectcalico.org"
    assert k8s.group == "networking.k8s.io"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"apiVersion": "projectcalico.org/v3", "kind": "Foo"}, "kind"),
        ({"apiVersion": "projectcalico.org/v3"}, "kind"),
        ({"kind": "IPPool"}, "apiVersion"),
        ({"apiVersion": "v1", "kind": "IPPool"}, "apiVersion"),
        ({"apiVersion": "projectcalico.org/v3", "kind": "ippool"}, "kind"),
        ({"apiVersion": "projectcalico.org/v3", "kind": "Pod"}, "apiVersion"),
    ],
)
def test_kind_of_rejects_unknown_or_mismatched_types(obj: dict[str, str], field: str) -> None:
    with pytest.raises(UnknownKindError) as caught:
        kind_of(obj)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
