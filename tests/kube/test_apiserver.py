"""A real kube-apiserver as the project runs it (lab/apiserver.py), and Calico's CRDs in it.

One API server for the module (conftest's kube_api); the stop test starts its own, inside a
network namespace of its own, to check what stopping leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lab import apiserver, netns
from lab.apiserver import ApiServer, install_calico_crds
from lab.processes import ProcessRecord, is_alive
from libcalico.resources.crds import CALICO_CRDS, CRD_API_VERSION
from tests.kube.kubekit import NO_RIGHTS_USER, kube_binaries_missing

IPPOOLS = f"/apis/{CRD_API_VERSION}/ippools"
ESTABLISH_TIMEOUT = 30.0  # ~0.1 s each when idle; the bound is generous for a loaded host


def _kubectl(server: ApiServer, *args: str, stdin: str | None = None) -> str:
    proc = server.kubectl(list(args), input=stdin)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _get_json(server: ApiServer, path: str) -> dict[str, Any]:
    request = urllib.request.Request(server.url + path)
    request.add_header("Authorization", f"Bearer {server.admin_token}")
    with urllib.request.urlopen(request, timeout=10, context=server.ssl_context()) as response:
        data: dict[str, Any] = json.load(response)
        return data


def _watch(server: ApiServer, path: str, resource_version: str, count: int) -> list[Any]:
    """The first `count` events of a watch from `resource_version` (the server ends it in 10 s)."""
    query = f"?watch=1&resourceVersion={resource_version}&timeoutSeconds=10"
    request = urllib.request.Request(server.url + path + query)
    request.add_header("Authorization", f"Bearer {server.admin_token}")
    events = []
    with urllib.request.urlopen(request, timeout=20, context=server.ssl_context()) as response:
        for line in response:
            events.append(json.loads(line))
            if len(events) == count:
                break
    return events


def _ippool(name: str, cidr: str, **extra: Any) -> str:
    spec = {"cidr": cidr, "natOutgoing": True, **extra}
    obj = {"apiVersion": CRD_API_VERSION, "kind": "IPPool", "metadata": {"name": name}}
    return json.dumps({**obj, "spec": spec})


def test_token_auth_and_rbac_are_on(kube_api: ApiServer) -> None:
    # No credentials: anonymous requests are refused (401), not treated as system:anonymous.
    assert kube_api.get("/api/v1/namespaces", user=None) == 401
    # A valid token of a user RBAC grants nothing: authenticated (not 401) but forbidden.
    assert kube_api.get("/api/v1/namespaces", user=NO_RIGHTS_USER) == 403
    assert kube_api.get("/api/v1/namespaces") == 200
    denied = kube_api.kubectl(["get", "namespaces"], user=NO_RIGHTS_USER)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    assert kube_api.apiserver is not None
    assert "--authorization-mode=Node,RBAC" in kube_api.apiserver.argv


def test_reports_the_pinned_version(kube_api: ApiServer) -> None:
    version = _get_json(kube_api, "/version")
    assert version["gitVersion"] == "v1.37.2"


def test_calico_crds_are_established(kube_api: ApiServer) -> None:
    names = install_calico_crds(kube_api, timeout=ESTABLISH_TIMEOUT)
    assert sorted(names) == sorted(crd.name for crd in CALICO_CRDS)
    crds = _get_json(kube_api, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    by_name = {item["metadata"]["name"]: item for item in crds["items"]}
    for crd in CALICO_CRDS:
        item = by_name[crd.name]
        conditions = {c["type"]: c["status"] for c in item["status"]["conditions"]}
        assert conditions.get("Established") == "True", (crd.name, conditions)
        assert item["spec"]["scope"] == ("Namespaced" if crd.namespaced else "Cluster")
    # Served: the API lists every plural in discovery.
    discovery = _get_json(kube_api, f"/apis/{CRD_API_VERSION}")
    served = {r["name"] for r in discovery["resources"]}
    assert {crd.plural for crd in CALICO_CRDS} <= served


def test_apply_and_get_an_ippool_and_a_namespaced_networkpolicy(kube_api: ApiServer) -> None:
    install_calico_crds(kube_api, timeout=ESTABLISH_TIMEOUT)
    # Unknown fields in spec are kept as given: validation is libcalico's, not the schema's.
    _kubectl(kube_api, "apply", "-f", "-", stdin=_ippool("pool-a", "10.244.0.0/16", x={"y": 1}))
    got_pool = _kubectl(kube_api, "get", "ippools.crd.projectcalico.org/pool-a", "-o", "json")
    pool = json.loads(got_pool)
    assert pool["spec"] == {"cidr": "10.244.0.0/16", "natOutgoing": True, "x": {"y": 1}}
    assert pool["metadata"]["resourceVersion"]

    _kubectl(kube_api, "create", "namespace", "team-a")
    policy = {
        "apiVersion": CRD_API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": "team-a"},
        "spec": {
            "selector": "app == 'web'",
            "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}],
        },
    }
    _kubectl(kube_api, "apply", "-f", "-", stdin=json.dumps(policy))
    got = json.loads(
        _kubectl(
            kube_api,
            "get",
            "networkpolicies.crd.projectcalico.org",
            "-n",
            "team-a",
            "-o",
            "json",
        )
    )
    assert [item["metadata"]["name"] for item in got["items"]] == ["allow-web"]
    assert got["items"][0]["spec"] == policy["spec"]
    # Namespaced: not in another namespace; the Kubernetes kind of the same name is separate.
    other = _kubectl(
        kube_api, "get", "networkpolicies.crd.projectcalico.org", "-n", "default", "-o", "json"
    )
    assert json.loads(other)["items"] == []
    k8s = _kubectl(kube_api, "get", "networkpolicies.networking.k8s.io", "-A", "-o", "json")
    assert json.loads(k8s)["items"] == []


def test_a_watch_resumes_from_a_resource_version(kube_api: ApiServer) -> None:
    install_calico_crds(kube_api, timeout=ESTABLISH_TIMEOUT)
    start_rv = _get_json(kube_api, IPPOOLS)["metadata"]["resourceVersion"]
    _kubectl(kube_api, "apply", "-f", "-", stdin=_ippool("pool-w", "10.250.0.0/16"))
    middle_rv = _get_json(kube_api, f"{IPPOOLS}/pool-w")["metadata"]["resourceVersion"]
    _kubectl(kube_api, "label", "ippools.crd.projectcalico.org/pool-w", "step=two")
    _kubectl(kube_api, "delete", "ippools.crd.projectcalico.org/pool-w")

    # From before the create: every change since, in order.
    events = _watch(kube_api, IPPOOLS, start_rv, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "pool-w"),
        ("MODIFIED", "pool-w"),
        ("DELETED", "pool-w"),
    ]
    assert events[1]["object"]["metadata"]["labels"] == {"step": "two"}
    # From the create's revision: only what came after it.
    resumed = _watch(kube_api, IPPOOLS, middle_rv, 2)
    assert [e["type"] for e in resumed] == ["MODIFIED", "DELETED"]
    assert (
        resumed[0]["object"]["metadata"]["resourceVersion"]
        == (events[1]["object"]["metadata"]["resourceVersion"])
    )


@pytest.mark.netns
def test_stop_leaves_no_process_and_no_data_dir(tmp_path: Path) -> None:
    reason = kube_binaries_missing()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces)")
        pytest.skip("needs root (network namespaces)")
    # Inside a namespace of its own, on an address only that namespace has (TEST-NET-1):
    # nothing listens in the host's namespace.
    name = f"kapi-test-{os.getpid()}-{time.monotonic_ns() % 100000}"
    path = netns.create(name)
    try:
        # On the namespace's loopback device: this kernel has no dummy module.
        netns.run_ip(["addr", "add", "192.0.2.10/32", "dev", "lo"], netns=name)
        work = tmp_path / "apiserver"
        started: list[ProcessRecord] = []
        server = apiserver.start(
            work, address="192.0.2.10", netns_path=path, on_started=started.append
        )
        try:
            assert [r.name for r in started] == ["kube-etcd", "kube-apiserver"]
            assert server.url.startswith("https://192.0.2.10:")
            assert server.get("/readyz") == 200
            nodes = server.kubectl(["get", "nodes", "-o", "name"])
            assert nodes.returncode == 0, nodes.stderr
            # The processes are in the namespace, not the host's.
            for record in server.records():
                assert os.readlink(f"/proc/{record.pid}/ns/net") == _netns_id(path)
        finally:
            report = apiserver.stop_server(server)
        assert not report.problems, report.problems
        assert sorted(report.stopped) == sorted(f"{r.name} ({r.pid})" for r in started)
        assert not any(is_alive(r) for r in started)
        assert not work.exists()
    finally:
        netns.delete(name)
    assert not netns.exists(name)


def _netns_id(path: Path) -> str:
    """The `net:[inode]` a process inside the namespace shows in /proc/<pid>/ns/net."""
    out = subprocess.run(
        ["nsenter", f"--net={path}", "readlink", "/proc/self/ns/net"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return out.stdout.strip()
