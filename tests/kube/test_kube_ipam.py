"""IPAM's concurrency tests on the kubernetes datastore, against the real API server.

The same races as tests/ipam/test_daemons.py (real calico-ipamd processes, DATASTORE_TYPE=
kubernetes): four daemons filling a pool, borrowing once every block is claimed; a daemon
killed with SIGKILL in the middle of its batches (whose writes are ordered, not atomic, here)
and a new one for the same node carrying on. Then no address is handed out twice, every
allocation is affine or recorded as borrowed, `ipam check` finds only leaks, and
`calicoctl ipam release --from-report` clears them.

`ipam check` needs Calico Nodes and WorkloadEndpoints, which this backend derives from
Kubernetes Nodes and Pods: the tests make those API objects, as the kubelet and the CNI plugin
would, and run the real `calicoctl ipam check`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from lab.apiserver import ApiServer, install_calico_crds
from libcalico.config import DatastoreConfig
from libcalico.datastore import (
    Datastore,
    connect,
)
from libcalico.datastore.kube_client import KubeClient
from services.ipam.check import Report, run_check
from tests.ipam.daemons import (
    SHARED_POOL_NODES,
    kill_a_daemon_mid_allocation,
    race_for_a_shared_pool,
)

REPO = Path(__file__).resolve().parents[2]
KILL_DELAY = 0.015
IPAM_KINDS = ("ipamblocks", "blockaffinities", "ipamhandles", "ippools", "ipamconfigs")


@pytest.fixture(scope="module")
def crds(kube_api: ApiServer) -> ApiServer:
    install_calico_crds(kube_api)
    return kube_api


@pytest_asyncio.fixture
async def kube_env(crds: ApiServer) -> dict[str, str]:
    # One collection DELETE per kind (kubectl delete --all deletes objects one by one).
    client = KubeClient(str(crds.kubeconfig))
    try:
        for plural in IPAM_KINDS:
            path = f"/apis/crd.projectcalico.org/v1/{plural}"
            response = await client.request("DELETE", path)
            assert response.status == 200, response.message
    finally:
        await client.close()
    return {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(crds.kubeconfig)}


@pytest_asyncio.fixture
async def kube_ds(kube_env: dict[str, str]) -> AsyncIterator[Datastore]:
    store = await connect(DatastoreConfig(type="kubernetes", kubeconfig=kube_env["KUBECONFIG"]))
    try:
        yield store
    finally:
        await store.close()


def calicoctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calicoctl.main", "ipam", *args],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---- Nodes and Pods: API objects, and the Calico view the check reads ----


async def make_nodes(client: KubeClient, nodes: list[str]) -> None:
    for name in nodes:
        response = await client.request("POST", "/api/v1/nodes", {"metadata": {"name": name}})
        assert response.status in (201, 409), response.message


async def make_pods(client: KubeClient, pods: list[dict[str, str]]) -> None:
    """Pods as the kubelet and the CNI plugin leave them (Calico's annotations)."""
    account = {"metadata": {"name": "default"}}
    response = await client.request("POST", "/api/v1/namespaces/default/serviceaccounts", account)
    assert response.status in (201, 409), response.message
    for pod in pods:
        body = {
            "metadata": {
                "name": pod["name"],
                "annotations": {
                    "cni.projectcalico.org/podIP": f"{pod['ip']}/32",
                    "cni.projectcalico.org/podIPs": f"{pod['ip']}/32",
                    "cni.projectcalico.org/containerID": pod["containerID"],
                },
            },
            "spec": {"nodeName": pod["node"], "containers": [{"name": "c", "image": "pause"}]},
        }
        response = await client.request("POST", "/api/v1/namespaces/default/pods", body)
        assert response.status in (201, 409), response.message  # 409: made by an earlier call


async def ipam_report(
    ds: Datastore, env: dict[str, str], nodes: list[str], pods: list[dict[str, str]]
) -> tuple[Report, dict[str, Any]]:
    """`ipam check` over the kubernetes datastore, from Kubernetes Nodes and Pods made as the
    kubelet and the CNI plugin leave them: the in-process Report, and calicoctl's JSON."""
    client = KubeClient(env["KUBECONFIG"])
    try:
        await make_nodes(client, nodes)
        await make_pods(client, pods)
    finally:
        await client.close()
    checked = calicoctl(env, "check", "-o", "json")
    assert checked.returncode == 0, checked.stderr
    return await run_check(ds), json.loads(checked.stdout)


# ---- the races ----


async def test_four_daemons_share_one_address_space(
    kube_ds: Datastore, kube_env: dict[str, str]
) -> None:
    handed_out = await race_for_a_shared_pool(kube_ds, kube_env)
    nodes = SHARED_POOL_NODES
    pods = [
        {"name": f"pod-{i}", "node": h.split(".")[0], "containerID": h, "ip": ip}
        for i, (h, ip) in enumerate(handed_out)
    ]
    report, _ = await ipam_report(kube_ds, kube_env, nodes, pods)
    assert report.duplicates == [] and report.out_of_block == []
    assert report.handle_mismatches == [] and report.leaked_handles == []
    assert report.missing_node_blocks == [] and report.leaks == []


async def test_sigkill_mid_allocation_leaves_no_duplicates_and_check_finds_leaks(
    kube_ds: Datastore, kube_env: dict[str, str], tmp_path: Path
) -> None:
    # Right after a reply the daemon is gathering its next batch; a moment later it is
    # writing it (handles, then the block), where a kill interrupts the ordered writes.
    acknowledged, leaked_ip = await kill_a_daemon_mid_allocation(kube_ds, kube_env, KILL_DELAY)
    ips = [ip for _, ip in acknowledged]
    pods = [
        {"name": f"pod-{h.rsplit('.', 1)[1]}", "node": "node-a", "containerID": h, "ip": ip}
        for h, ip in acknowledged
    ]
    # A kill between a handle's write and its block's leaves a leaked handle count at most.
    report, report_json = await ipam_report(kube_ds, kube_env, ["node-a", "node-b"], pods)
    assert report.duplicates == [] and report.out_of_block == []
    assert report.handle_mismatches == []
    leaks = {leak["ip"] for leak in report_json["leaks"]}
    assert leaked_ip in leaks and not leaks & set(ips)
    print(f"after the kill: {len(leaks)} leak(s), {len(report.leaked_handles)} leaked handle(s)")

    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(report_json))
    released = calicoctl(kube_env, "release", "--from-report", str(report_file))
    assert released.returncode == 0, released.stderr
    assert f"released {len(leaks)} of {len(leaks)}" in released.stdout
    after, _ = await ipam_report(kube_ds, kube_env, ["node-a", "node-b"], pods)
    assert after.problem_count == 0, after.to_json()
    assert after.summary["allocations"] == len(ips)
