"""Kubernetes datastore mode (DATASTORE_TYPE=kubernetes): the Calico Node is the Kubernetes Node,
so only the node controller runs, and it only has IPAM to release.

The IPAM half runs on the backend's IPAMBlock / BlockAffinity / IPAMHandle mapping, whose
multi-key transactions are ordered writes (libcalico/datastore/ordered_txn.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from lab.apiserver import ApiServer
from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, connect
from tests.controllers.conftest import Replicas
from tests.controllers.ipamkit import ipam_state, make_pool, pod_address, tunnel_address
from tests.controllers.kit import KubeApi, wait_for


@pytest.fixture
def kdd_env(kube_api: ApiServer) -> dict[str, str]:
    return {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(kube_api.kubeconfig)}


@pytest_asyncio.fixture
async def kdd(kube_api: ApiServer) -> AsyncIterator[Datastore]:
    store = await connect(DatastoreConfig(type="kubernetes", kubeconfig=str(kube_api.kubeconfig)))
    try:
        yield store
    finally:
        await store.close()


def kcc(kube_api: ApiServer) -> dict[str, object]:
    shown = kube_api.kubectl(
        ["get", "kubecontrollersconfigurations.crd.projectcalico.org", "default", "-o", "json"]
    )
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


async def test_kubernetes_mode_runs_the_node_controller_only(
    kube_api: ApiServer, kube: KubeApi, replicas: Replicas, kdd_env: dict[str, str]
) -> None:
    kube_api.kubectl(
        [
            "delete",
            "kubecontrollersconfigurations.crd.projectcalico.org",
            "default",
            "--ignore-not-found",
        ]
    )
    kube.namespace("kdd-lease")
    controller = replicas(
        "kdd",
        ["--lease-namespace", "kdd-lease"],
        env={"ENABLED_CONTROLLERS": ""},
        datastore_env=kdd_env,
    )
    status = controller.wait_leading()
    assert list(status.running) == ["node"]
    assert status.datastore_type == "kubernetes"
    # Calico's default for this mode, created as the custom resource kubectl shows.
    created = kcc(kube_api)
    assert list(created["spec"]["controllers"]) == ["node"]  # type: ignore[index]
    running = wait_for(
        lambda: (kcc(kube_api).get("status") or {}).get("runningConfig"),  # type: ignore[attr-defined]
        10.0,
        "status.runningConfig",
    )
    assert running["controllers"]["node"]["syncLabels"] == "Disabled"

    # Copying controllers asked for explicitly are not started in this mode.
    controller.stop()
    again = replicas(
        "kdd-2",
        ["--lease-namespace", "kdd-lease", "--enabled-controllers", "node,policy,namespace"],
        datastore_env=kdd_env,
    )
    assert list(again.wait_leading().running) == ["node"]
    assert "not used with the Kubernetes datastore" in again.log()


async def test_kubernetes_mode_releases_a_gone_nodes_ipam(
    kube_api: ApiServer,
    kube: KubeApi,
    replicas: Replicas,
    kdd_env: dict[str, str],
    kdd: Datastore,
) -> None:
    await make_pool(kdd)
    kube.namespace("kdd-ipam")
    kube.node("kdd-gone")
    kube.node("kdd-keep")
    kube.pod("kdd-ipam", "keep", node="kdd-keep")
    gone = await pod_address(kdd, "kdd-gone", "kdd-ipam", "gone", "c-kdd-gone")
    tunnel = await tunnel_address(kdd, "kdd-gone")
    keep = await pod_address(kdd, "kdd-keep", "kdd-ipam", "keep", "c-kdd-keep")
    controller = replicas("kdd-ipam", ["--lease-namespace", "kdd-ipam"], datastore_env=kdd_env)
    controller.wait_leading()
    kube.delete("nodes", "kdd-gone")
    wait_for(lambda: controller.status().nodes_cleaned, 20.0, "the gone node cleared")
    state = await ipam_state(kdd)
    assert str(gone) not in state.allocations and str(tunnel) not in state.allocations
    assert "kdd-gone" not in state.affinities
    assert str(keep) in state.allocations and "kdd-keep" in state.affinities
