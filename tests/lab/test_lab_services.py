"""`calico-lab svc`, `pod ready`, `probe --json` and `@outside` on a running lab: what the lab
does for Services without Felix programming them (that is tests/lab/test_lab_services_e2e.py).

One node, embedded datastore (module-scoped); then the same Service commands on the
kubernetes datastore, where the real kube-apiserver allocates and stores."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import netns
from lab.prober import sctp_supported
from lab.processes import start_detached, stop
from lab.state import LabState
from lab.store import LabStore
from tests.lab.kubelabkit import kubectl, require_kube
from tests.lab.labkit import REPO, LabCli, force_down, make_cli, missing_programs, require_root

pytestmark = pytest.mark.netns

SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/16")


def _needs_lab() -> None:
    require_root()
    missing = missing_programs()
    if missing:
        reason = f"calico services not available yet: {', '.join(missing)}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


def _up(state_dir: Path, *options: str) -> LabCli:
    cli = make_cli(state_dir)
    cli("up", "--dataplane", "nftables", *options)
    cli("pod", "run", "y/a", "--labels", "app=web", "--serve", "tcp:80,udp:80,tcp:81")
    cli("pod", "run", "y/b", "--labels", "app=web")
    cli("pod", "run", "x/c")
    return cli


@pytest.fixture(scope="module")
def svc_lab() -> Iterator[tuple[Path, LabCli]]:
    _needs_lab()
    state_dir = Path(f"/tmp/cls{os.getpid()}")
    try:
        yield state_dir, _up(state_dir)
    finally:
        force_down(state_dir)


def slices(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The lab's EndpointSlices by Service name (read from the embedded datastore)."""

    async def read() -> list[dict[str, Any]]:
        async with LabStore(LabState.load(state_dir)) as store:
            return await store.list_objects("discovery.k8s.io/v1", "EndpointSlice")

    out: dict[str, list[dict[str, Any]]] = {}
    for one in asyncio.run(read()):
        out.setdefault(one["metadata"]["labels"]["kubernetes.io/service-name"], []).append(one)
    return out


def endpoints(state_dir: Path, service: str) -> dict[str, tuple[bool, list[int]]]:
    """pod name -> (ready, its resolved ports) over the Service's slices."""
    return {
        e["targetRef"]["name"]: (e["conditions"]["ready"], sorted(p["port"] for p in s["ports"]))
        for s in slices(state_dir).get(service, [])
        for e in s["endpoints"]
    }


def ls(cli: LabCli) -> dict[str, dict[str, Any]]:
    found = json.loads(cli("svc", "ls", "--json").stdout)
    return {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in found}


def test_svc_create_ls_replace_rm(svc_lab: tuple[Path, LabCli]) -> None:
    state_dir, cli = svc_lab
    out = cli(
        "svc",
        "create",
        "y/web",
        "--selector",
        "app=web",
        "--port",
        "80",
        "--port",
        "90:serve-81-tcp",
    )
    assert out.stdout.startswith("y/web  ClusterIP  10.96.")
    web = ls(cli)["y/web"]
    address = web["spec"]["clusterIP"]
    assert ipaddress.ip_address(address) in SERVICE_RANGE
    assert web["spec"]["sessionAffinity"] == "None"
    assert web["spec"]["internalTrafficPolicy"] == "Cluster"
    # Ports resolved per pod: only y/a has serve-81-tcp.
    assert endpoints(state_dir, "web") == {"a": (True, [80, 81]), "b": (True, [80])}
    # Replaced (new selector, NodePort): same cluster IP; then back to ClusterIP.
    cli(
        "svc",
        "create",
        "y/web",
        "--selector",
        "pod=none",
        "--port",
        "80",
        "--type",
        "NodePort",
        "--node-port",
        "30080",
    )
    web = ls(cli)["y/web"]
    assert web["spec"]["clusterIP"] == address and web["spec"]["ports"][0]["nodePort"] == 30080
    assert web["spec"]["externalTrafficPolicy"] == "Cluster"
    assert "web" not in slices(state_dir)
    cli(
        "svc",
        "create",
        "y/lb",
        "--port",
        "80/udp",
        "--type",
        "LoadBalancer",
        "--load-balancer-ip",
        "192.0.2.50",
    )
    assert ls(cli)["y/lb"]["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.50"}]
    cli("svc", "rm", "y/web", "y/lb")
    assert ls(cli) == {}
    missing = cli("svc", "rm", "y/web", check=False)
    assert missing.returncode == 2 and "no Service y/web" in missing.stderr
    bad = cli("svc", "create", "y/bad", "--port", "80:Bad_Port", check=False)
    assert bad.returncode == 2 and "spec.ports[0].targetPort" in bad.stderr
    assert "y/bad" not in ls(cli)  # never half-written


def test_slices_follow_labels_and_readiness(svc_lab: tuple[Path, LabCli]) -> None:
    state_dir, cli = svc_lab
    cli("svc", "create", "y/ready", "--selector", "app=web", "--port", "80")
    try:
        assert endpoints(state_dir, "ready") == {"a": (True, [80]), "b": (True, [80])}
        cli("pod", "ready", "y/b", "false")
        assert endpoints(state_dir, "ready") == {"a": (True, [80]), "b": (False, [80])}
        cli("pod", "label", "y/a", "app-")
        assert endpoints(state_dir, "ready") == {"b": (False, [80])}
        cli("pod", "ready", "y/b", "true")
        cli("pod", "label", "y/a", "app=web")
        assert endpoints(state_dir, "ready") == {"a": (True, [80]), "b": (True, [80])}
        # A new pod joins, a removed one leaves.
        cli("pod", "run", "y/d", "--labels", "app=web")
        assert set(endpoints(state_dir, "ready")) == {"a", "b", "d"}
        cli("pod", "rm", "y/d")
        assert set(endpoints(state_dir, "ready")) == {"a", "b"}
    finally:
        cli("svc", "rm", "y/ready")
    assert "ready" not in slices(state_dir)


def probe(cli: LabCli, *args: str) -> dict[str, Any]:
    out = cli("probe", *args, "--json", check=False)
    assert out.returncode in (0, 1), out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_probe_json_names_pod_and_client(svc_lab: tuple[Path, LabCli]) -> None:
    state_dir, cli = svc_lab
    pods = json.loads((state_dir / "state.json").read_text())["pods"]
    for protocol in ("tcp", "udp"):
        seen = probe(cli, "x/c", "pod:y/a", "--port", "80", "--protocol", protocol)
        assert seen["outcome"] == "connected"
        assert seen["served_by"] == "y/a" and seen["client_seen"] == pods["x/c"]["ips"][0]
    assert probe(cli, "x/c", "y/b", "--port", "81")["outcome"] == "refused"  # not served
    bad = cli("probe", "x/c", "svc:y/nothing", "--port", "80", check=False)
    assert bad.returncode == 2 and "no Service y/nothing" in bad.stderr


def test_outside_reaches_node_addresses(svc_lab: tuple[Path, LabCli], tmp_path: Path) -> None:
    """@outside is the lab network's namespace: it reaches a node's own address (a server
    the test runs in node-1's namespace), and routes 192.0.2.0/24 via node-1."""
    state_dir, cli = svc_lab
    state = json.loads((state_dir / "state.json").read_text())
    node_ns = state["nodes"][0]["netns"]
    ready = tmp_path / "node.ready"
    argv = [sys.executable, "-m", "lab.podserver", "--netns", str(netns.netns_path(node_ns))]
    argv += ["--name", "node-1", "--serve", "tcp:18080,udp:18080", "--ready", str(ready)]
    server = start_detached("node server", argv, tmp_path / "node.log", cwd=REPO)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline, (tmp_path / "node.log").read_text()
            time.sleep(0.02)
        for protocol in ("tcp", "udp"):
            seen = probe(cli, "@outside", "node:node-1", "--port", "18080", "--protocol", protocol)
            assert seen == {
                "from": "@outside",
                "to": "node:node-1",
                "target": f"10.66.0.11:18080/{protocol.upper()}",
                "outcome": "connected",
                "served_by": "node-1",
                "client_seen": "10.66.0.1",
            }
    finally:
        stop(server)
    route = netns.run_ip(["route", "get", "192.0.2.10"], netns=state["network_netns"])
    assert "via 10.66.0.11" in route


# ---- the kubernetes datastore: the API server allocates ----


@pytest.fixture(scope="module")
def kube_lab() -> Iterator[tuple[Path, LabCli]]:
    _needs_lab()
    require_kube()
    state_dir = Path(f"/tmp/clk{os.getpid()}")
    try:
        yield state_dir, _up(state_dir, "--datastore", "kubernetes")
    finally:
        force_down(state_dir)


def test_services_on_the_kubernetes_api(kube_lab: tuple[Path, LabCli]) -> None:
    state_dir, cli = kube_lab
    cli(
        "svc",
        "create",
        "y/web",
        "--selector",
        "app=web",
        "--port",
        "80",
        "--port",
        "90:serve-81-tcp",
    )
    web = json.loads(kubectl(state_dir, "-n", "y", "get", "service", "web", "-o", "json"))
    address = web["spec"]["clusterIP"]
    assert ipaddress.ip_address(address) in SERVICE_RANGE  # the API server's allocation
    cli(
        "svc",
        "create",
        "y/web",
        "--selector",
        "app=web",
        "--port",
        "80",
        "--type",
        "NodePort",
        "--node-port",
        "30080",
    )
    web = json.loads(kubectl(state_dir, "-n", "y", "get", "service", "web", "-o", "json"))
    assert web["spec"]["clusterIP"] == address and web["spec"]["ports"][0]["nodePort"] == 30080
    listed = json.loads(kubectl(state_dir, "-n", "y", "get", "endpointslices", "-o", "json"))
    ours = [
        s for s in listed["items"] if s["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    ]
    assert sorted(e["targetRef"]["name"] for s in ours for e in s["endpoints"]) == ["a", "b"]
    cli("pod", "ready", "y/b", "false")
    pod_b = json.loads(kubectl(state_dir, "-n", "y", "get", "pod", "b", "-o", "json"))
    ready = [c for c in pod_b["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "False"
    listed = json.loads(kubectl(state_dir, "-n", "y", "get", "endpointslices", "-o", "json"))
    conditions = {
        e["targetRef"]["name"]: e["conditions"]["ready"]
        for s in listed["items"]
        for e in s["endpoints"]
    }
    assert conditions == {"a": True, "b": False}
    # LoadBalancer: ingress through the status subresource.
    cli(
        "svc",
        "create",
        "y/lb",
        "--port",
        "80",
        "--type",
        "LoadBalancer",
        "--load-balancer-ip",
        "192.0.2.60",
    )
    lb = json.loads(kubectl(state_dir, "-n", "y", "get", "service", "lb", "-o", "json"))
    assert (
        lb["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.60", "ipMode": "VIP"}]
        or lb["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.60"
    )
    assert lb["spec"]["ports"][0]["nodePort"] >= 30000
    cli("svc", "rm", "y/web", "y/lb")
    listed = json.loads(kubectl(state_dir, "-n", "y", "get", "endpointslices", "-o", "json"))
    assert listed["items"] == []
    bad = cli(
        "svc",
        "create",
        "y/bad",
        "--port",
        "80",
        "--type",
        "NodePort",
        "--node-port",
        "99",
        check=False,
    )
    assert bad.returncode == 2 and "nodePort" in bad.stderr


# ---- the Services runner on its own: placeholders, readiness, the report ----

POLICY_FROM_XA = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "from-xa", "namespace": "y"},
    "spec": {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "{{hostcidr:x/a}}"}}]}],
    },
}
WEB = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "y"},
    "spec": {"selector": {"pod": "b"}, "ports": [{"port": 80, "targetPort": "serve-80-tcp"}]},
}
RUNNER_CASES = [
    {
        "id": "runner-pods-placeholders",
        "name": "what the runner does without Felix programming Services",
        "steps": [
            {
                "apply": [WEB, POLICY_FROM_XA],
                "endpoint_changes": [{"pod": "y/b", "ready": False}],
                "probes": [
                    {
                        "from": "x/a",
                        "to": "pod:y/b",
                        "port": 80,
                        "protocol": "TCP",
                        "tries": 3,
                        "expect": "connected",
                        "served_by": ["y/b"],
                        "all_of": ["y/b"],
                        "same_backend": True,
                        "client_seen": "source",
                    },
                    {
                        "from": "x/b",
                        "to": "ip:{{ip:y/b}}",
                        "port": 80,
                        "protocol": "UDP",
                        "expect": "no-answer",
                        "note": "the ipBlock admits x/a only",
                    },
                    {
                        "from": "@outside",
                        "to": "node:node-1",
                        "port": 9,
                        "protocol": "TCP",
                        "expect": "refused",
                    },
                    {
                        "from": "x/a",
                        "to": "pod:y/b",
                        "port": 80,
                        "protocol": "SCTP",
                        "expect": "connected",
                    },
                ],
            },
            {
                "delete": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": "web", "namespace": "y"},
                    }
                ],
                "probes": [
                    {
                        "from": "x/a",
                        "to": "ip:{{clusterip:y/web}}",
                        "port": 80,
                        "protocol": "TCP",
                        "expect": "not-connected",
                    },
                ],
            },
        ],
    },
    {
        "id": "runner-three-nodes",
        "nodes": 3,
        "steps": [
            {"probes": [{"from": "x/a", "to": "pod:y/b", "port": 80, "expect": "connected"}]}
        ],
    },
]


def test_services_runner_report(tmp_path: Path) -> None:
    _needs_lab()
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(RUNNER_CASES))
    report_path = tmp_path / "report.json"
    state_dir = Path(f"/tmp/clr{os.getpid()}")
    try:
        proc = make_cli(state_dir)(
            "conformance",
            "--services",
            str(cases),
            "--report",
            str(report_path),
            "--dataplane",
            "nftables",
            check=False,
            timeout=300,
        )
    finally:
        force_down(state_dir)
    report = json.loads(report_path.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["format"] == "services-report/1" and report["single_node_only"]
    sctp_skipped = not sctp_supported()  # this kernel: no SCTP sockets
    assert report["summary"] == {
        "passed": 4 + (not sctp_skipped),
        "failed": 0,
        "skipped": 1 + sctp_skipped,
    }
    first, second = report["cases"]
    assert second == {
        "id": "runner-three-nodes",
        "status": "skipped",
        "skipped": "needs 3 nodes (this lab has 1)",
    }
    pods = first["addresses"]["pods"]
    assert sorted(pods) == [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
    assert first["addresses"]["nodes"] == {"node-1": ["10.66.0.11"]}
    assert first["addresses"]["outside"] == "10.66.0.1"
    assert ipaddress.ip_address(first["cluster_ips"]["y/web"]) in SERVICE_RANGE
    step1, step2 = first["steps"]
    for probe, raw in zip(step1["probes"], RUNNER_CASES[0]["steps"][0]["probes"], strict=True):  # type: ignore[index]
        assert probe["probe"] == raw  # unresolved, exactly as in the file
    connected, dropped, refused, sctp = step1["probes"]
    # A not-ready pod still answers on its own address.
    assert (
        connected["observed"]["results"]
        == [{"outcome": "connected", "served_by": "y/b", "client_seen": pods["x/a"]}] * 3
    )
    assert dropped["target"] == f"{pods['y/b']}:80/UDP"
    assert dropped["observed"]["results"] == [
        {"outcome": "no-answer", "served_by": None, "client_seen": None}
    ]
    assert refused["target"] == "10.66.0.11:9/TCP"
    assert refused["observed"]["results"][0]["outcome"] == "refused"
    if sctp_skipped:
        assert sctp == {
            "probe": RUNNER_CASES[0]["steps"][0]["probes"][3],  # type: ignore[index]
            "skipped": "SCTP is not supported by this kernel (EPROTONOSUPPORT)",
        }
    (gone,) = step2["probes"]
    assert gone["target"] == f"{first['cluster_ips']['y/web']}:80/TCP"
    assert gone["observed"]["results"][0]["outcome"] in ("refused", "no-answer")
