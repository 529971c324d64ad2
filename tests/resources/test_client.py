"""ResourceClient over both datastore backends (the `datastore` fixture is parametrized)."""

from __future__ import annotations

import re
import uuid

import pytest

from libcalico.datastore import (
    Datastore,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionConflictError,
)
from libcalico.datastore.keys import resource_key
from libcalico.resources.client import (
    ResourceClient,
    ResourceConflictError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from libcalico.resources.serialization import from_json_bytes
from libcalico.resources.validation import ValidationError
from tests.resources.builders import gnp, k8s_np, np, pool

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_crud_round_trip(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    created = await client.create(np({"selector": "all()"}, name="deny-all", namespace="x"))
    meta = created["metadata"]
    assert meta["resourceVersion"].isdigit()
    uuid.UUID(meta["uid"])
    assert RFC3339.match(meta["creationTimestamp"])
    assert created["spec"]["types"] == ["Ingress"]

    # Stored without resourceVersion, under Calico's key.
    kv = await datastore.get(resource_key("projectcalico.org", "networkpolicies", "deny-all", "x"))
    assert "resourceVersion" not in from_json_bytes(kv.value)["metadata"]
    assert str(kv.mod_revision) == meta["resourceVersion"]

    fetched = await client.get("networkpolicy", "deny-all", "x")
    assert fetched == created

    changed = np({"selector": "pod == 'a'"}, name="deny-all", namespace="x")
    updated = await client.update(changed)
    assert updated["spec"]["selector"] == "pod == 'a'"
    assert updated["metadata"]["uid"] == meta["uid"]
    assert updated["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    deleted = await client.delete("np", "deny-all", "x")
    assert deleted["spec"]["selector"] == "pod == 'a'"
    with pytest.raises(ResourceNotFoundError) as caught:
        await client.get("networkpolicy", "deny-all", "x")
    assert str(caught.value) == "resource does not exist: NetworkPolicy(x/deny-all)"
    assert isinstance(caught.value, KeyNotFoundError)


async def test_errors_name_the_resource(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    with pytest.raises(ResourceNotFoundError, match=r"resource does not exist: IPPool\(default\)"):
        await client.get("ippool", "default")
    with pytest.raises(ResourceNotFoundError):
        await client.update(pool({"cidr": "10.0.0.0/16"}, name="default"))
    with pytest.raises(ResourceNotFoundError):
        await client.delete("ippool", "default")
    await client.create(pool({"cidr": "10.0.0.0/16"}, name="default"))
    with pytest.raises(ResourceExistsError, match=r"already exists: IPPool\(default\)") as caught:
        await client.create(pool({"cidr": "10.0.0.0/16"}, name="default"))
    assert isinstance(caught.value, KeyExistsError)
    with pytest.raises(ValueError, match="namespace is required"):
        await client.get("networkpolicy", "p")


async def test_apply_creates_then_replaces(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    first = await client.apply(gnp({"order": 1}, name="p"))
    second = await client.apply(gnp({"order": 2}, name="p"))
    assert second["spec"]["order"] == 2
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert [o["spec"]["order"] for o in await client.list("gnp")] == [2]


async def test_update_with_stale_resource_version_conflicts(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    created = await client.create(gnp({"order": 1}, name="p"))
    fresh = await client.update({**created, "spec": {"order": 2}})
    stale = {**created, "spec": {"order": 3}}
    with pytest.raises(ResourceConflictError) as caught:
        await client.update(stale)
    assert isinstance(caught.value, RevisionConflictError)
    assert caught.value.actual == int(fresh["metadata"]["resourceVersion"])
    with pytest.raises(ResourceConflictError):
        await client.delete("gnp", "p", resource_version=created["metadata"]["resourceVersion"])
    # With the current version both succeed.
    assert (await client.update({**fresh, "spec": {"order": 4}}))["spec"]["order"] == 4
    current = await client.get("gnp", "p")
    await client.delete("gnp", "p", resource_version=current["metadata"]["resourceVersion"])


async def test_list_sorted_and_scoped(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    await client.apply_all(
        [
            np({}, name="b", namespace="y"),
            np({}, name="z", namespace="x"),
            np({}, name="a", namespace="y"),
            k8s_np({"podSelector": {}}, name="k", namespace="x"),
        ],
        "create",
    )
    listed = await client.list("networkpolicies")
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in listed] == [
        ("x", "z"),
        ("y", "a"),
        ("y", "b"),
    ]
    assert [o["metadata"]["name"] for o in await client.list("np", "y")] == ["a", "b"]
    k8s = await client.list("networkpolicy.networking.k8s.io")
    assert [o["metadata"]["name"] for o in k8s] == ["k"]
    assert await client.list("ippools") == []


async def test_apply_all_is_all_or_nothing(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    docs = [
        gnp({"order": 1}, name="one"),
        np({}, name="two"),
        gnp({"ingress": [{"action": "Allow", "destination": {"ports": [80]}}]}, name="three"),
    ]
    with pytest.raises(ValidationError) as caught:
        await client.apply_all(docs, "apply")
    assert caught.value.index == 2
    assert caught.value.path == "spec.ingress[0].destination.ports"
    assert await client.list("gnp") == []
    assert await client.list("np") == []
    assert (await datastore.list("/calico/")).items == []


async def test_apply_all_create_and_replace_modes(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    await client.create(gnp({}, name="exists"))
    with pytest.raises(ResourceExistsError) as caught:
        await client.apply_all([gnp({}, name="new"), gnp({}, name="exists")], "create")
    assert caught.value.index == 1
    with pytest.raises(ResourceNotFoundError) as missing:
        await client.apply_all([gnp({"order": 5}, name="exists"), gnp({}, name="new")], "replace")
    assert missing.value.index == 1
    assert [o["metadata"]["name"] for o in await client.list("gnp")] == ["exists"]
    assert "order" not in (await client.get("gnp", "exists"))["spec"]
    written = await client.apply_all(
        [gnp({"order": 5}, name="exists"), gnp({}, name="new")], "apply"
    )
    assert len({o["metadata"]["resourceVersion"] for o in written}) == 1  # one txn
    with pytest.raises(ValidationError, match="also document 0") as duplicate:
        await client.apply_all([gnp({}, name="d"), gnp({"order": 1}, name="d")], "apply")
    assert duplicate.value.index == 1


async def test_pool_overlap_rejected(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    await client.create(pool({"cidr": "10.0.0.0/16"}, name="existing"))
    with pytest.raises(ValidationError) as caught:
        await client.create(pool({"cidr": "10.0.128.0/24"}, name="inside"))
    assert (caught.value.path, caught.value.index) == ("spec.cidr", 0)
    assert "IPPool(existing)" in caught.value.message

    with pytest.raises(ValidationError) as batch:
        await client.apply_all(
            [
                pool({"cidr": "10.1.0.0/16"}, name="a"),
                pool({"cidr": "fd00::/48"}, name="v6"),
                pool({"cidr": "10.1.0.0/20"}, name="b"),
            ],
            "create",
        )
    assert (batch.value.path, batch.value.index) == ("spec.cidr", 2)
    assert "IPPool(a)" in batch.value.message
    assert [p["metadata"]["name"] for p in await client.list("ippool")] == ["existing"]

    # Replacing a pool with itself is not an overlap; changing its CIDR is refused.
    await client.apply(pool({"cidr": "10.0.0.0/16", "natOutgoing": True}, name="existing"))
    with pytest.raises(ValidationError) as immutable:
        await client.apply(pool({"cidr": "10.0.0.0/17"}, name="existing"))
    assert immutable.value.path == "spec.cidr"


async def test_delete_all_is_all_or_nothing(datastore: Datastore) -> None:
    client = ResourceClient(datastore)
    await client.apply_all([gnp({}, name="a"), np({}, name="b")], "create")
    refs = [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "a"},
        },
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": "missing", "namespace": "x"},
        },
    ]
    with pytest.raises(ResourceNotFoundError) as caught:
        await client.delete_all(refs)
    assert caught.value.index == 1
    assert len(await client.list("gnp")) == 1
    refs[1]["metadata"] = {"name": "b", "namespace": "x"}
    deleted = await client.delete_all(refs)
    assert [d["metadata"]["name"] for d in deleted] == ["a", "b"]
    assert await client.list("gnp") == [] and await client.list("np") == []


async def test_concurrent_writer_is_retried(
    datastore: Datastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write racing ours between read and txn makes the txn conflict; we retry and win."""
    client = ResourceClient(datastore)
    await client.create(gnp({"order": 1}, name="p"))
    key = resource_key("projectcalico.org", "globalnetworkpolicies", "p")
    real_get = datastore.get
    raced = False

    async def racing_get(k: str) -> KeyValue:
        nonlocal raced
        kv = await real_get(k)
        if k == key and not raced:
            raced = True
            await datastore.put(k, kv.value)  # bumps the revision behind our back
        return kv

    monkeypatch.setattr(datastore, "get", racing_get)
    out = await client.apply(gnp({"order": 2}, name="p"))
    monkeypatch.undo()
    assert raced
    assert out["spec"]["order"] == 2
    assert (await client.get("gnp", "p"))["spec"]["order"] == 2
