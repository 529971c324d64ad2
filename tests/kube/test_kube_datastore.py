"""The kubernetes datastore against a real API server, beyond the contract tests of
tests/datastore: calicoctl and kubectl see the same Calico objects; a watch from a revision the
API server no longer has asks for a resync; what is not mapped is refused naming it; a
multi-key txn is ordered writes undone on a failure; IPAM objects read in kubectl as Calico's.

One API server for the module (conftest's kube_api) with Calico's CRDs installed; calicoctl runs
as a process with DATASTORE_TYPE=kubernetes and the admin's KUBECONFIG, as a user would run it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab.apiserver import ApiServer
from libcalico.config import DatastoreConfig
from libcalico.datastore import (
    DatastoreError,
    KeyExistsError,
    ResyncRequiredError,
    TxnOp,
    TxnOpType,
    connect,
)
from tests.fixtures.watch import collect
from tests.kube.kubekit import calicoctl as _calicoctl
from tests.kube.kubekit import kubectl as _kubectl


def test_calicoctl_apply_of_an_ippool_shows_in_kubectl(crds: ApiServer) -> None:
    pool = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": "pool-from-calicoctl", "labels": {"made-by": "calicoctl"}},
        "spec": {"cidr": "10.123.0.0/16", "natOutgoing": True, "vxlanMode": "Always"},
    }
    _calicoctl(crds, "apply", "-f", "-", stdin=json.dumps(pool))
    names = _kubectl(crds, "get", "ippools.crd.projectcalico.org", "-o", "name")
    assert "ippool.crd.projectcalico.org/pool-from-calicoctl" in names.split()
    stored: dict[str, Any] = json.loads(
        _kubectl(crds, "get", "ippools.crd.projectcalico.org", "pool-from-calicoctl", "-o", "json")
    )
    assert stored["apiVersion"] == "crd.projectcalico.org/v1"
    assert stored["metadata"]["labels"] == {"made-by": "calicoctl"}
    assert stored["spec"]["cidr"] == "10.123.0.0/16"
    assert stored["spec"]["vxlanMode"] == "Always"
    # And calicoctl reads back what it wrote, its resourceVersion the API object's.
    shown = json.loads(_calicoctl(crds, "get", "ippool", "pool-from-calicoctl", "-o", "json"))
    assert shown["apiVersion"] == "projectcalico.org/v3"
    assert shown["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert shown["metadata"]["uid"] == stored["metadata"]["uid"]


def test_kubectl_apply_of_a_globalnetworkpolicy_shows_in_calicoctl(crds: ApiServer) -> None:
    policy = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "deny-from-kubectl"},
        "spec": {
            "selector": "role == 'db'",
            "types": ["Ingress"],
            "ingress": [{"action": "Deny", "protocol": "TCP"}],
        },
    }
    _kubectl(crds, "apply", "-f", "-", stdin=json.dumps(policy))
    table = _calicoctl(crds, "get", "globalnetworkpolicies")
    assert "deny-from-kubectl" in table
    shown = json.loads(
        _calicoctl(crds, "get", "globalnetworkpolicy", "deny-from-kubectl", "-o", "json")
    )
    assert shown["kind"] == "GlobalNetworkPolicy"
    assert shown["spec"]["selector"] == "role == 'db'"
    assert shown["spec"]["ingress"][0]["action"] == "Deny"


GNS = "/calico/resources/v3/projectcalico.org/globalnetworksets/"


def _network_set(name: str) -> bytes:
    doc = {"kind": "GlobalNetworkSet", "metadata": {"name": name}, "spec": {"nets": []}}
    return json.dumps({"apiVersion": "projectcalico.org/v3", **doc}).encode()


async def test_watch_from_a_revision_the_server_no_longer_has_asks_for_resync(
    crds: ApiServer,
) -> None:
    config = DatastoreConfig(type="kubernetes", kubeconfig=str(crds.kubeconfig))
    async with await connect(config) as store:
        await store.put(GNS + "watched", _network_set("watched"))
        # Revision 2 predates the CRD: the API server answers 410 Gone (as an ERROR event).
        with pytest.raises(ResyncRequiredError):
            await collect(store.watch(GNS, 2), 1)
        # Relisting and watching from the list's revision works.
        listed = await store.list(GNS)
        assert GNS + "watched" in [kv.key for kv in listed.items]
        stream = store.watch(GNS, listed.revision + 1)
        writer = await store.put(GNS + "later", _network_set("later"))
        events = await collect(stream, 1)
        assert [(e.key, e.revision) for e in events] == [(GNS + "later", writer.mod_revision)]


async def test_unmapped_keys_are_refused_naming_them_and_a_txn_is_ordered_writes(
    crds: ApiServer,
) -> None:
    config = DatastoreConfig(type="kubernetes", kubeconfig=str(crds.kubeconfig))
    async with await connect(config) as store:
        node = "/calico/resources/v3/projectcalico.org/nosuchkinds/x"
        with pytest.raises(DatastoreError, match="not mapped to the Kubernetes API yet") as info:
            await store.get(node)
        assert node in str(info.value)
        assert not store.atomic_txn
        one = TxnOp(TxnOpType.CREATE, GNS + "one", _network_set("one"))
        with pytest.raises(ValueError, match="more than once"):
            await store.txn([one, one])
        await store.create(GNS + "two", _network_set("two"))
        two = TxnOp(TxnOpType.CREATE, GNS + "two", _network_set("two"), step=1)
        with pytest.raises(KeyExistsError):  # "one" is written, then "two" is refused...
            await store.txn([one, two])
        # ...and "one" is deleted again.
        assert [kv.key for kv in (await store.list(GNS + "o")).items] == []
        written = await store.txn([one])
        assert [kv.key for kv in written if kv is not None] == [GNS + "one"]


async def test_ipam_objects_read_in_kubectl_as_in_a_calico_cluster(crds: ApiServer) -> None:
    config = DatastoreConfig(type="kubernetes", kubeconfig=str(crds.kubeconfig))
    block_key = "/calico/ipam/v2/assignment/ipv4/block/10.77.0.0-26"
    affinity_key = "/calico/ipam/v2/host/node-1/ipv4/block/10.77.0.0-26"
    handle_key = "/calico/ipam/v2/handle/K8s-Pod-Network.Abc"
    async with await connect(config) as store:
        block = {
            "cidr": "10.77.0.0/26",
            "affinity": "host:node-1",
            "allocations": [0] + [None] * 63,
            "unallocated": list(range(1, 64)),
            "attributes": [{"handle_id": "K8s-Pod-Network.Abc", "secondary": {"node": "node-1"}}],
            "sequenceNumber": 1,
        }
        handle = {"handleID": "K8s-Pod-Network.Abc", "block": {"10.77.0.0/26": 1}}
        await store.txn(
            [
                TxnOp(TxnOpType.CREATE, handle_key, json.dumps(handle).encode()),
                TxnOp(TxnOpType.CREATE, affinity_key, b'{"state": "confirmed"}', step=1),
                TxnOp(TxnOpType.CREATE, block_key, json.dumps(block).encode(), step=1),
            ]
        )
        blocks = json.loads(_kubectl(crds, "get", "ipamblocks", "10-77-0-0-26", "-o", "json"))
        assert blocks["spec"]["allocations"][:2] == [0, None]
        assert blocks["spec"]["attributes"][0]["handle_id"] == "K8s-Pod-Network.Abc"
        affinity = json.loads(
            _kubectl(crds, "get", "blockaffinities", "node-1-10-77-0-0-26", "-o", "json")
        )
        assert affinity["spec"] == {
            "state": "confirmed",
            "node": "node-1",
            "cidr": "10.77.0.0/26",
            "deleted": "false",
        }
        got = json.loads(_kubectl(crds, "get", "ipamhandles", "k8s-pod-network.abc", "-o", "json"))
        assert got["spec"]["handleID"] == "K8s-Pod-Network.Abc"
        # The node's affinities: listed from all of them, filtered client-side.
        listed = await store.list("/calico/ipam/v2/host/node-1/")
        assert [kv.key for kv in listed.items] == [affinity_key]
        assert (await store.list("/calico/ipam/v2/host/node-2/")).items == []
        assert json.loads((await store.get(block_key)).value) == {**block, "sequenceNumber": 1}
