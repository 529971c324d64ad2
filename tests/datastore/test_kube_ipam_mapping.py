"""IPAM keys and documents <-> IPAMBlock / BlockAffinity / IPAMHandle / IPAMConfig, without a
server (libcalico/datastore/kube_ipam.py)."""

from __future__ import annotations

import ipaddress
import json
import logging

import pytest

from libcalico.datastore import DatastoreError
from libcalico.datastore.kube_ipam import (
    AFFINITY,
    BLOCK,
    CONFIG,
    HANDLE,
    MAX_NAME,
    affinity_name,
    ref_for_key,
    ref_of,
    scope_for_prefix,
    to_object,
    value_of,
)
from libcalico.ipam.model import AffinityState, Block, BlockAffinity, Handle

BLOCK_KEY = "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26"
AFFINITY_KEY = "/calico/ipam/v2/host/node-1/ipv4/block/10.0.0.0-26"
HANDLE_KEY = "/calico/ipam/v2/handle/K8s-Pod-Network.ABC"
CONFIG_KEY = "/calico/ipam/v2/config"
# The spec fields of Calico's IPAMBlock CRD (crd.projectcalico.org_ipamblocks.yaml).
CALICO_BLOCK_FIELDS = {
    "cidr",
    "affinity",
    "allocations",
    "unallocated",
    "attributes",
    "deleted",
    "sequenceNumber",
    "sequenceNumberForAllocation",
    "strictAffinity",
}


def test_keys_name_objects_as_calico_does() -> None:
    assert (ref_for_key(BLOCK_KEY).crd, ref_for_key(BLOCK_KEY).name) == (BLOCK, "10-0-0-0-26")
    v6 = ref_for_key("/calico/ipam/v2/assignment/ipv6/block/fd00::-122")
    assert v6.name == "fd00---122"
    assert ref_for_key(AFFINITY_KEY).name == "node-1-10-0-0-0-26"
    assert ref_for_key(AFFINITY_KEY).crd is AFFINITY
    handle = ref_for_key(HANDLE_KEY)
    assert (handle.crd, handle.name) == (HANDLE, "k8s-pod-network.abc")
    assert handle.path == "/apis/crd.projectcalico.org/v1/ipamhandles/k8s-pod-network.abc"
    assert (ref_for_key(CONFIG_KEY).crd, ref_for_key(CONFIG_KEY).name) == (CONFIG, "default")
    assert ref_for_key(BLOCK_KEY).key == BLOCK_KEY


def test_long_affinity_names_are_cut_and_hashed_within_the_limit() -> None:
    long_a = "a" * 200 + "." + "b" * 60
    long_b = "a" * 200 + "." + "c" * 60
    name_a = affinity_name(long_a, "10.0.0.0/26")
    name_b = affinity_name(long_b, "10.0.0.0/26")
    assert len(name_a) <= MAX_NAME and len(name_b) <= MAX_NAME
    assert name_a != name_b
    assert ".-" not in name_a and "-." not in name_a
    assert "-10-0-0-0-26-" in name_a
    assert affinity_name("node-1", "10.0.0.0/26") == "node-1-10-0-0-0-26"


@pytest.mark.parametrize(
    "key",
    [
        "/calico/ipam/v2/assignment/ipv4/block/not-a-cidr",
        "/calico/ipam/v2/host/node-1/ipv4/block",
        "/calico/ipam/v2/handle/a/b",
        "/calico/ipam/v2/other",
    ],
)
def test_bad_ipam_keys_are_refused_naming_the_key(key: str) -> None:
    with pytest.raises(DatastoreError) as info:
        ref_for_key(key)
    assert key in str(info.value)


def test_prefixes_scope_one_kind() -> None:
    assert scope_for_prefix("/calico/ipam/v2/assignment/ipv4/block/").crd is BLOCK
    assert scope_for_prefix("/calico/ipam/v2/host/").crd is AFFINITY
    assert scope_for_prefix("/calico/ipam/v2/host/node-1/ipv4/block/").crd is AFFINITY
    assert scope_for_prefix("/calico/ipam/v2/handle/k8s-pod").crd is HANDLE
    assert scope_for_prefix("/calico/ipam/v2/ha").crd is HANDLE  # only handles start so
    assert scope_for_prefix(CONFIG_KEY).crd is CONFIG
    assert scope_for_prefix(BLOCK_KEY).path == "/apis/crd.projectcalico.org/v1/ipamblocks"
    with pytest.raises(DatastoreError, match="spans BlockAffinity, IPAMHandle"):
        scope_for_prefix("/calico/ipam/v2/h")
    with pytest.raises(DatastoreError, match="one IPAM kind at a time"):
        scope_for_prefix("/calico/ipam/v2/")


def _served(obj: dict[str, object], version: str = "17") -> dict[str, object]:
    """The object as the API server returns it."""
    meta = dict(obj["metadata"])  # type: ignore[call-overload]
    meta.update(resourceVersion=version, uid="u-1", creationTimestamp="2026-01-01T00:00:00Z")
    return {**obj, "metadata": meta}


def test_a_block_is_stored_with_calicos_field_names_and_read_back_unchanged() -> None:
    block = Block(ipaddress.ip_network("10.0.0.0/26"), "host:node-1")
    block.assign(2, "h1", {"node": "node-1", "pod": "p"})
    ref = ref_for_key(BLOCK_KEY)
    obj = to_object(ref, block.to_bytes())
    assert obj["apiVersion"] == "crd.projectcalico.org/v1" and obj["kind"] == "IPAMBlock"
    assert obj["metadata"] == {"name": "10-0-0-0-26"}
    assert set(obj["spec"]) == CALICO_BLOCK_FIELDS
    assert obj["spec"]["attributes"] == [
        {"handle_id": "h1", "secondary": {"node": "node-1", "pod": "p"}}
    ]
    back = Block.from_bytes(value_of(ref, _served(obj)))
    assert back.to_json() == block.to_json()
    assert ref_of(BLOCK, _served(obj)) == ref


def test_an_affinity_keeps_node_and_cidr_in_spec_and_deleted_as_calicos_string() -> None:
    ref = ref_for_key(AFFINITY_KEY)
    value = BlockAffinity("node-1", ipaddress.ip_network("10.0.0.0/26"), AffinityState.PENDING)
    obj = to_object(ref, value.to_bytes())
    assert obj["spec"] == {
        "state": "pending",
        "node": "node-1",
        "cidr": "10.0.0.0/26",
        "deleted": "false",
    }
    assert json.loads(value_of(ref, _served(obj))) == {"state": "pending", "deleted": False}
    # The key comes from the spec, never from the name: a long name reads back exactly.
    node = "n" * 250
    long_key = f"/calico/ipam/v2/host/{node}/ipv4/block/10.0.0.0-26"
    long_obj = to_object(ref_for_key(long_key), value.to_bytes())
    found = ref_of(AFFINITY, _served(long_obj))
    assert found is not None and found.key == long_key


def test_a_handle_keeps_its_original_id_in_spec() -> None:
    ref = ref_for_key(HANDLE_KEY)
    handle = Handle("K8s-Pod-Network.ABC", {"10.0.0.0/26": 2})
    obj = to_object(ref, handle.to_bytes())
    assert obj["metadata"] == {"name": "k8s-pod-network.abc"}
    assert obj["spec"] == {
        "handleID": "K8s-Pod-Network.ABC",
        "block": {"10.0.0.0/26": 2},
        "deleted": False,
    }
    back = Handle.from_bytes("K8s-Pod-Network.ABC", value_of(ref, _served(obj)))
    assert back == handle
    found = ref_of(HANDLE, _served(obj))
    assert found is not None and found.key == HANDLE_KEY


def test_config_is_the_default_object() -> None:
    ref = ref_for_key(CONFIG_KEY)
    obj = to_object(ref, b'{"strictAffinity": true, "autoAllocateBlocks": true}')
    assert obj["metadata"] == {"name": "default"}
    assert json.loads(value_of(ref, _served(obj)))["strictAffinity"] is True
    assert ref_of(CONFIG, _served(obj)) == ref


def test_keys_that_collide_on_one_name_are_an_error_naming_both() -> None:
    other = to_object(ref_for_key("/calico/ipam/v2/handle/k8s-pod-network.abc"), b"{}")
    with pytest.raises(DatastoreError, match="map to one Kubernetes name") as info:
        value_of(ref_for_key(HANDLE_KEY), _served(other))
    assert HANDLE_KEY in str(info.value) and "handle/k8s-pod-network.abc" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (BLOCK_KEY, b'{"cidr": "10.0.0.64/26"}', "'cidr' is '10.0.0.64/26'"),
        (AFFINITY_KEY, b'{"node": "node-2"}', "'node' is 'node-2'"),
        (AFFINITY_KEY, b'{"deleted": "yes"}', "'deleted' must be true or false"),
        (HANDLE_KEY, b'{"handleID": "other"}', "'handleID' is 'other'"),
        (BLOCK_KEY, b"[1]", "not a JSON object"),
        (CONFIG_KEY, b"\xff", "not a JSON document"),
    ],
)
def test_bad_documents_are_refused_naming_key_and_field(key: str, value: bytes, field: str) -> None:
    with pytest.raises(DatastoreError, match=field) as info:
        to_object(ref_for_key(key), value)
    assert key in str(info.value)


def test_an_object_made_by_hand_without_a_usable_spec_is_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made_by_hand = {"metadata": {"name": "odd", "resourceVersion": "3"}, "spec": {"cidr": "x"}}
    with caplog.at_level(logging.ERROR):
        assert ref_of(BLOCK, made_by_hand) is None
    assert "IPAMBlock odd: skipped" in caplog.text
