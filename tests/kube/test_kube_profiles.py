"""Profiles with the kubernetes datastore, against a real API server: `kns.<ns>` from
Namespaces, `ksa.<ns>.<sa>` from ServiceAccounts, beside the `profiles` custom resources; one
list and one watch see all three; the derived ones are read-only, naming their source.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from lab.apiserver import ApiServer
from libcalico.datastore import DatastoreError, EventType, WatchEvent
from libcalico.datastore.keys import GROUP_CALICO, resource_key, resource_prefix
from libcalico.syncer.api import Update
from services.felix.calc.graph import CalcGraph
from tests.fixtures.watch import aclose
from tests.kube.kubekit import calicoctl, kube_store, kubectl

PROFILES = resource_prefix(GROUP_CALICO, "profiles")
CUSTOM = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "Profile",
    "metadata": {"name": "custom"},
    "spec": {"ingress": [{"action": "Deny"}]},
}


def _key(name: str) -> str:
    return resource_key(GROUP_CALICO, "profiles", name)


async def test_profiles_come_from_namespaces_service_accounts_and_crds(crds: ApiServer) -> None:
    kubectl(crds, "create", "namespace", "shop")
    kubectl(crds, "label", "namespace", "shop", "team=blue")
    kubectl(crds, "create", "serviceaccount", "-n", "shop", "robot")
    kubectl(crds, "label", "serviceaccount", "-n", "shop", "robot", "role=bot")
    calicoctl(crds, "apply", "-f", "-", stdin=json.dumps(CUSTOM))
    async with kube_store(crds) as store:
        listed = await store.list(PROFILES)
        keys = [kv.key for kv in listed.items]
        assert {_key("kns.shop"), _key("ksa.shop.robot"), _key("custom")} <= set(keys)
        assert keys == sorted(keys)
        kns = json.loads((await store.get(_key("kns.shop"))).value)
        assert kns["spec"]["labelsToApply"] == {
            "pcns.kubernetes.io/metadata.name": "shop",
            "pcns.projectcalico.org/name": "shop",
            "pcns.team": "blue",
        }
        assert kns["spec"]["ingress"] == [{"action": "Allow"}]
        ksa = json.loads((await store.get(_key("ksa.shop.robot"))).value)
        assert ksa["spec"]["labelsToApply"] == {
            "pcsa.projectcalico.org/name": "robot",
            "pcsa.role": "bot",
        }
        with pytest.raises(DatastoreError, match="derived from Namespace shop"):
            await store.put(_key("kns.shop"), json.dumps(kns).encode())
        with pytest.raises(DatastoreError, match="derived from ServiceAccount shop/robot"):
            await store.delete(_key("ksa.shop.robot"))
        # Felix's graph compiles the derived profiles to what it assumes without them.
        graph = CalcGraph("node-1")
        without = CalcGraph("node-1")
        for kv in listed.items:
            graph.apply([Update(kv.key, kv.value, kv.mod_revision)])
        for g in (graph, without):
            g._use_profiles(["kns.shop", "ksa.shop.robot"])
        assert graph.state.profiles["kns.shop"] == without.state.profiles["kns.shop"]
        assert graph.state.profiles["ksa.shop.robot"] == without.state.profiles["ksa.shop.robot"]
    table = calicoctl(crds, "get", "profiles")
    for name in ("kns.shop", "ksa.shop.robot", "custom"):
        assert name in table
    refused = calicoctl(
        crds, "delete", "profile", "kns.shop", check=False
    )  # read-only: the error names the namespace
    assert "Namespace shop" in refused


async def test_profile_watch_sees_all_three_sources(crds: ApiServer) -> None:
    async with kube_store(crds) as store:
        start = (await store.list(PROFILES)).revision + 1
        stream = store.watch(PROFILES, start)
        kubectl(crds, "create", "namespace", "watched")
        kubectl(crds, "label", "namespace", "watched", "tier=gold")
        kubectl(crds, "create", "serviceaccount", "-n", "watched", "sa1")
        calicoctl(
            crds, "apply", "-f", "-", stdin=json.dumps({**CUSTOM, "metadata": {"name": "later"}})
        )
        kubectl(crds, "delete", "serviceaccount", "-n", "watched", "sa1")
        wanted = {
            (EventType.PUT, _key("kns.watched")),
            (EventType.PUT, _key("ksa.watched.sa1")),
            (EventType.PUT, _key("later")),
            (EventType.DELETE, _key("ksa.watched.sa1")),
        }
        events: list[WatchEvent] = []
        async with asyncio.timeout(15):
            async for event in stream:
                events.append(event)
                if wanted <= {(e.type, e.key) for e in events} and any(
                    e.key == _key("kns.watched")
                    and e.value is not None
                    and "pcns.tier" in json.loads(e.value)["spec"]["labelsToApply"]
                    for e in events
                ):
                    break
        await aclose(stream)
        assert all(e.key.startswith(PROFILES) for e in events)
