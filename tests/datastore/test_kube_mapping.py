"""The kubernetes datastore's key and value mapping, without an API server."""

from __future__ import annotations

import json

import pytest

from libcalico.datastore import DatastoreError
from libcalico.datastore.kube_keys import object_for_key, scope_for_prefix
from libcalico.datastore.kube_values import from_custom_resource, revision_of, to_custom_resource

CALICO = "/calico/resources/v3/projectcalico.org/"


def test_cluster_and_namespaced_keys_map_to_custom_resources() -> None:
    pool = object_for_key(CALICO + "ippools/default-pool")
    assert (pool.crd.kind, pool.name, pool.namespace) == ("IPPool", "default-pool", None)
    assert pool.path == "/apis/crd.projectcalico.org/v1/ippools/default-pool"
    policy = object_for_key(CALICO + "networkpolicies/prod/allow-dns")
    assert policy.path == "/apis/crd.projectcalico.org/v1/namespaces/prod/networkpolicies/allow-dns"
    assert policy.key == CALICO + "networkpolicies/prod/allow-dns"


@pytest.mark.parametrize(
    "key",
    [
        CALICO + "nodes/node-1",
        CALICO + "workloadendpoints/default/n-k8s-p-eth0",
        "/calico/resources/v3/core/pods/default/p",
        CALICO + "ipamblocks/10-0-0-0-26",
    ],
)
def test_unmapped_keys_are_refused_naming_the_key(key: str) -> None:
    with pytest.raises(DatastoreError, match="not mapped to the Kubernetes API yet") as info:
        object_for_key(key)
    assert key in str(info.value)


def test_a_key_of_the_wrong_shape_names_the_expected_one() -> None:
    with pytest.raises(DatastoreError, match="ends in <namespace>/<name>"):
        object_for_key(CALICO + "networkpolicies/only-a-name")
    with pytest.raises(DatastoreError, match="ends in <name>"):
        object_for_key(CALICO + "ippools/a/b")


def test_prefix_scopes_pick_the_namespace_only_when_complete() -> None:
    assert scope_for_prefix(CALICO + "networkpolicies/").namespace is None
    assert scope_for_prefix(CALICO + "networkpolicies/pro").namespace is None
    assert scope_for_prefix(CALICO + "networkpolicies/prod/").namespace == "prod"
    with pytest.raises(DatastoreError, match="not mapped"):
        scope_for_prefix(CALICO)


def test_value_round_trip_keeps_what_calico_keeps() -> None:
    ref = object_for_key(CALICO + "networkpolicies/prod/allow-dns")
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "allow-dns",
            "namespace": "prod",
            "labels": {"a": "b"},
            "uid": "caller-made",
            "resourceVersion": "7",
        },
        "spec": {"selector": "all()"},
    }
    stored = to_custom_resource(ref, json.dumps(doc).encode())
    assert stored == {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-dns", "namespace": "prod", "labels": {"a": "b"}},
        "spec": {"selector": "all()"},
    }
    stored["metadata"].update(uid="server-made", resourceVersion="42")
    back = json.loads(from_custom_resource(ref, stored))
    assert back["apiVersion"] == "projectcalico.org/v3"
    assert back["metadata"] == {
        "name": "allow-dns",
        "namespace": "prod",
        "labels": {"a": "b"},
        "uid": "server-made",
    }
    assert revision_of(ref, stored) == 42


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b"\xff not json", "not a JSON document"),
        (b"[]", "not a JSON object"),
        (b'{"kind": "IPPool"}', "kind 'IPPool' does not match"),
        (b'{"apiVersion": "v1"}', "apiVersion 'v1'"),
        (b'{"metadata": {"name": "other"}}', "metadata.name 'other'"),
        (b'{"metadata": {"namespace": "dev"}}', "metadata.namespace 'dev'"),
    ],
)
def test_bad_values_are_refused_naming_key_and_field(value: bytes, field: str) -> None:
    ref = object_for_key(CALICO + "networkpolicies/prod/allow-dns")
    with pytest.raises(DatastoreError, match=field) as info:
        to_custom_resource(ref, value)
    assert ref.key in str(info.value)


def test_a_non_integer_resource_version_is_an_error_naming_the_object() -> None:
    ref = object_for_key(CALICO + "ippools/p")
    with pytest.raises(DatastoreError, match=r"ippools/p: metadata\.resourceVersion 'abc'"):
        revision_of(ref, {"metadata": {"resourceVersion": "abc"}})


def test_ipam_configuration_is_stored_as_the_ipamconfig_crd() -> None:
    key = CALICO + "ipamconfigurations/default"
    ref = object_for_key(key)
    assert (ref.crd.kind, ref.key) == ("IPAMConfig", key)
    assert ref.path == "/apis/crd.projectcalico.org/v1/ipamconfigs/default"
    doc = {"kind": "IPAMConfiguration", "spec": {"strictAffinity": True}}
    stored = to_custom_resource(ref, json.dumps(doc).encode())
    assert (stored["kind"], stored["spec"]) == ("IPAMConfig", {"strictAffinity": True})
    assert json.loads(from_custom_resource(ref, stored))["kind"] == "IPAMConfiguration"
