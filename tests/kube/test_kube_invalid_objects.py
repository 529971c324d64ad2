"""Objects written straight through kubectl that the CRD schema lets through but Calico would
refuse (a GlobalNetworkPolicy whose selector does not parse, an IPPool whose CIDR is not
one), against a real API server: every consumer skips them with one logged error naming
kind/name, keeps running, and valid objects applied after them still take effect.

Consumers, fed as in the services: Felix's calculation graph and overlay view and BGP's view
from a DatastoreSyncer over the kubernetes datastore (Typha forwards the same bytes without
parsing them), IPAM's pools from its ClusterView (re-read per request: still one error).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from lab.apiserver import ApiServer
from libcalico.datastore.keys import GROUP_CALICO, resource_key, resource_prefix
from libcalico.syncer.api import SyncerUpdate, Update
from libcalico.syncer.datastore import DatastoreSyncer
from services.bgp.view import ClusterView as BgpView
from services.felix.calc.graph import CalcGraph
from services.felix.vxlan.view import VxlanView
from services.ipam.cluster import ClusterView as IpamView
from tests.kube.kubekit import kube_store, kubectl_apply

PREFIXES = (
    resource_prefix(GROUP_CALICO, "globalnetworkpolicies"),
    resource_prefix(GROUP_CALICO, "ippools"),
)


def _gnp(name: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"selector": selector, "types": ["Ingress"], "ingress": [{"action": "Allow"}]},
    }


def _pool(name: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "vxlanMode": "Always", "ipipMode": "Never"},
    }


def _local_endpoint() -> Update:
    """A workload endpoint on this node, so that policies selecting it get compiled."""
    key = resource_key(GROUP_CALICO, "workloadendpoints", "node--1-k8s-a-eth0", "default")
    wep = {
        "metadata": {"name": "node--1-k8s-a-eth0", "namespace": "default", "labels": {"x": "1"}},
        "spec": {"node": "node-1", "pod": "a", "interfaceName": "cali0123456789a"},
    }
    return Update(key, json.dumps(wep).encode(), 1)


def _errors(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and name in r.getMessage()
    ]


async def test_invalid_objects_are_skipped_once_and_do_not_block_valid_ones(
    crds: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    kubectl_apply(crds, _gnp("bad-selector", "app =="), _pool("bad-cidr", "10.0.0.0/33"))
    kubectl_apply(crds, _gnp("good", "all()"), _pool("good-pool", "10.90.0.0/16"))
    graph, bgp, overlay = CalcGraph("node-1"), BgpView(), VxlanView()

    def feed(batch: list[SyncerUpdate]) -> None:
        graph.apply(batch)
        bgp.apply(batch)
        overlay.apply(batch)

    async with kube_store(crds) as store:
        syncer = DatastoreSyncer(store, PREFIXES)
        updates = syncer.updates()
        graph.apply([_local_endpoint()])
        feed(await anext(updates))  # the snapshot, then InSync
        ipam = IpamView(store)
        assert [p.name for p in await ipam.pools()] == ["good-pool"]
        assert [p.name for p in await ipam.pools()] == ["good-pool"]  # read again: no new error
        assert set(graph.state.policies) == {"gnp:good"}
        assert set(bgp.pools) == {"good-pool"}
        assert set(overlay.pools) == {"good-pool"}
        bad_policy = _errors(caplog, "GlobalNetworkPolicy(bad-selector)")
        assert len(bad_policy) == 1 and "felix calculation graph" in bad_policy[0], bad_policy
        bad_pool = _errors(caplog, "IPPool(bad-cidr)")
        assert sorted(m.split(":")[0] for m in bad_pool) == [
            "calico-bgpd",
            "calico-ipamd",
            "felix calculation graph",  # the pools' CIDRs: Services' masquerade rule
            "felix overlay",
        ], bad_pool
        # Valid objects applied after the invalid ones take effect.
        kubectl_apply(crds, _gnp("later", "has(x)"), _pool("later-pool", "10.91.0.0/16"))
        seen: set[str] = set()
        while seen != {"later", "later-pool"}:
            batch = await anext(updates)
            feed(batch)
            seen |= {u.key.rsplit("/", 1)[1] for u in batch if isinstance(u, Update)}
        assert set(graph.state.policies) == {"gnp:good", "gnp:later"}
        assert set(bgp.pools) == {"good-pool", "later-pool"}
        assert set(overlay.pools) == {"good-pool", "later-pool"}
        ipam.invalidate()
        assert sorted(p.name for p in await ipam.pools()) == ["good-pool", "later-pool"]
        assert len(_errors(caplog, "bad-")) == 5  # still one per consumer and object
        await syncer.close()
