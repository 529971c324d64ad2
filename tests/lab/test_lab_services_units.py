"""The lab's Services parts without a lab: the pod server's answer and the prober's outcomes
(real sockets in two namespaces), Service checks and defaults, the EndpointSlice controller,
cluster IP and node port allocation through a real embedded datastore, placeholders, the
judging of a round and the services report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import endpointslices, netns, services, svcspec
from lab.conformance.placeholders import PlaceholderError, resolve, substitute
from lab.conformance.svccases import judge, parse_case
from lab.conformance.svcreport import CaseReport, ProbeReport, StepReport, build, failed
from lab.podserver import identity, parse_identity
from lab.prober import CONNECTED, NO_ANSWER, REFUSED, Endpoint, Flow, Observation, observe
from lab.processes import ProcessRecord, start_detached, stop
from lab.state import LabState, PodState
from lab.store import LabStore
from tests.lab.labkit import REPO

# ---- the pod server's answer, the prober's outcomes ----


@pytest.fixture(scope="module")
def served_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, Endpoint]]:
    """Two namespaces joined by a veth; b runs the pod server as "y/b" on tcp/udp 80."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    tmp = tmp_path_factory.mktemp("served")
    a, b = f"svcu{os.getpid()}a", f"svcu{os.getpid()}b"
    server: ProcessRecord | None = None
    try:
        netns.create(a)
        netns.create(b)
        netns.run_ip(
            ["link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b]
        )
        for ns, dev, ip in ((a, "va", "10.251.0.1/24"), (b, "vb", "10.251.0.2/24")):
            netns.run_ip(["addr", "add", ip, "dev", dev], netns=ns)
            netns.run_ip(["link", "set", dev, "up"], netns=ns)
            netns.run_ip(["link", "set", "lo", "up"], netns=ns)
        ready = tmp / "b.ready"
        argv = [sys.executable, "-m", "lab.podserver", "--netns", str(netns.netns_path(b))]
        argv += ["--name", "y/b", "--serve", "tcp:80,udp:80", "--ready", str(ready)]
        server = start_detached("server y/b", argv, tmp / "b.log", cwd=REPO)
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline, (tmp / "b.log").read_text()
            time.sleep(0.02)
        yield (
            Endpoint("x/a", str(netns.netns_path(a)), "10.251.0.1"),
            Endpoint("y/b", str(netns.netns_path(b)), "10.251.0.2"),
        )
    finally:
        if server is not None:
            stop(server)
        netns.delete(a)
        netns.delete(b)


def test_identity_line_round_trip() -> None:
    line = identity("y/b", "10.65.0.5", 80)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_identity(line) == {"pod": "y/b", "client": "10.65.0.5", "port": 80}
    assert parse_identity(b"calico-lab-probe") is None
    assert parse_identity(b"calico-lab-pod not json\n") is None


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_server_names_itself_and_the_client(
    served_pair: tuple[Endpoint, Endpoint], protocol: str
) -> None:
    a, b = served_pair
    seen = asyncio.run(observe([Flow(a, b.ip)] * 3, 80, protocol))
    assert seen == [Observation(CONNECTED, "y/b", "10.251.0.1")] * 3
    # Nothing listens on 81: an active rejection (RST / ICMP port unreachable), at once.
    started = time.monotonic()
    assert asyncio.run(observe([Flow(a, b.ip)], 81, protocol)) == [Observation(REFUSED)]
    assert time.monotonic() - started < 0.9


def test_udp_echo_still_follows_the_identity(served_pair: tuple[Endpoint, Endpoint]) -> None:
    """MTU tests read the echo: it comes unchanged, after the identity datagram."""
    a, _ = served_pair
    script = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
        "s.sendto(b'x' * 1200, ('10.251.0.2', 80))\n"
        "print(s.recv(4096)[:15].decode()); print(len(s.recv(4096)))\n"
    )
    out = subprocess.run(
        ["nsenter", f"--net={a.netns_path}", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.split()
    assert out == ["calico-lab-pod", "1200"]


def test_dropped_traffic_is_no_answer(served_pair: tuple[Endpoint, Endpoint]) -> None:
    a, b = served_pair
    drop = (
        "add table inet svcu; "
        "add chain inet svcu in { type filter hook input priority 0; policy drop; }"
    )
    subprocess.run(["nsenter", f"--net={b.netns_path}", "nft", drop], check=True)
    try:
        for protocol in ("tcp", "udp"):
            seen = asyncio.run(observe([Flow(a, b.ip)], 80, protocol, wait=0.5))
            assert seen == [Observation(NO_ANSWER)]
    finally:
        subprocess.run(
            ["nsenter", f"--net={b.netns_path}", "nft", "delete table inet svcu"], check=True
        )


# ---- Service objects: arguments, checks, defaults ----


def test_from_cli_builds_a_service() -> None:
    service = svcspec.from_cli(
        "y/web",
        selector="app=web,tier=front",
        ports=["80", "53:serve-80-udp/udp"],
        type_="NodePort",
        node_ports=[30080],
        affinity="ClientIP:60",
        external_traffic_policy="Local",
        external_ips=["192.0.2.10"],
    )
    spec = service["spec"]
    assert service["metadata"] == {"name": "web", "namespace": "y"}
    assert spec["selector"] == {"app": "web", "tier": "front"}
    assert spec["ports"] == [
        {"name": "tcp-80", "protocol": "TCP", "port": 80, "nodePort": 30080},
        {"name": "udp-53", "protocol": "UDP", "port": 53, "targetPort": "serve-80-udp"},
    ]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 60}}
    defaulted = svcspec.with_defaults(service)["spec"]
    assert defaulted["ports"][0]["targetPort"] == 80
    assert defaulted["internalTrafficPolicy"] == "Cluster"
    assert defaulted["externalTrafficPolicy"] == "Local"
    plain = svcspec.with_defaults(svcspec.from_cli("y/a", ports=["80"]))["spec"]
    assert plain["type"] == "ClusterIP" and plain["sessionAffinity"] == "None"
    assert "externalTrafficPolicy" not in plain
    sticky = svcspec.with_defaults(svcspec.from_cli("y/s", ports=["80"], affinity="ClientIP"))
    assert sticky["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 10800


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ports": ["70000"]}, "spec.ports[0].port"),
        ({"ports": ["80/icmp"]}, "--port"),
        ({"ports": ["80:Not_A_Name"]}, "spec.ports[0].targetPort"),
        ({"ports": ["80:0"]}, "spec.ports[0].targetPort"),
        ({"ports": ["80", "80"]}, "spec.ports[1].port"),
        ({"ports": []}, "--port"),
        ({"ports": ["80"], "type_": "External"}, "--type"),
        ({"ports": ["80"], "node_ports": [30080]}, "--node-port"),
        ({"ports": ["80"], "type_": "NodePort", "node_ports": [80]}, "spec.ports[0].nodePort"),
        ({"ports": ["80"], "affinity": "Cookie"}, "--affinity"),
        ({"ports": ["80"], "affinity": "ClientIP:0"}, "timeoutSeconds"),
        ({"ports": ["80"], "internal_traffic_policy": "Nearest"}, "spec.internalTrafficPolicy"),
        ({"ports": ["80"], "external_traffic_policy": "Local"}, "spec.externalTrafficPolicy"),
        ({"ports": ["80"], "external_ips": ["2001:db8::1"]}, "spec.externalIPs[0]"),
        ({"ports": ["80"], "external_ips": ["nope"]}, "spec.externalIPs[0]"),
        ({"ports": ["80"], "selector": "app"}, "--selector"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(svcspec.SpecError) as caught:
        svcspec.from_cli("y/web", **kwargs)
    assert field in str(caught.value)


def test_bad_objects_name_the_field() -> None:
    base = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "y"}}
    for spec, field in (
        ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol"),
        ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name"),
        ({"ports": [{"port": 80}], "ipFamilies": ["IPv6"]}, "spec.ipFamilies"),
        ({"ports": [{"port": 80}], "clusterIP": "10.96.0.300"}, "spec.clusterIP"),
        ({"ports": []}, "spec.ports"),
    ):
        with pytest.raises(svcspec.SpecError) as caught:
            svcspec.check({**base, "spec": spec})
        assert caught.value.field == field
    with pytest.raises(svcspec.SpecError) as caught:
        svcspec.check({**base, "metadata": {"name": "Web", "namespace": "y"}, "spec": {}})
    assert caught.value.field == "metadata.name"
    svcspec.check({**base, "spec": {"clusterIP": "None", "selector": {"a": "b"}}})  # headless


# ---- the EndpointSlice controller ----


def pod(key: str, labels: dict[str, str], ip: str, node: str = "node-1", **kw: Any) -> PodState:
    namespace, name = key.split("/")
    serve = kw.pop("serve", ["tcp:80", "udp:80", "tcp:81"])
    return PodState(namespace, name, node, f"ns-{name}", "c", labels, serve, [ip], **kw)


def web(selector: dict[str, str], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "y"},
        "spec": {"selector": selector, "ports": ports},
    }


def test_slices_follow_labels_and_readiness() -> None:
    pods = [
        pod("y/a", {"app": "web"}, "10.65.0.1"),
        pod("y/b", {"app": "web"}, "10.65.0.2", node="node-2", ready=False),
        pod("y/c", {"app": "db"}, "10.65.0.3"),
        pod("x/a", {"app": "web"}, "10.65.0.4"),  # another namespace: never selected
    ]
    service = web(
        {"app": "web"}, [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]
    )
    (one,) = endpointslices.desired_slices(service, [endpointslices.pod_endpoint(p) for p in pods])
    assert one["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert one["addressType"] == "IPv4" and one["apiVersion"] == "discovery.k8s.io/v1"
    assert one["ports"] == [{"name": "http", "protocol": "TCP", "port": 80}]
    assert one["endpoints"] == [
        {
            "addresses": ["10.65.0.1"],
            "nodeName": "node-1",
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"kind": "Pod", "namespace": "y", "name": "a"},
        },
        {
            "addresses": ["10.65.0.2"],
            "nodeName": "node-2",
            "conditions": {"ready": False, "serving": False, "terminating": False},
            "targetRef": {"kind": "Pod", "namespace": "y", "name": "b"},
        },
    ]
    pods[2].labels = {"app": "web"}  # y/c joins
    pods[0].labels = {"app": "other"}  # y/a leaves
    (one,) = endpointslices.desired_slices(service, [endpointslices.pod_endpoint(p) for p in pods])
    assert [e["targetRef"]["name"] for e in one["endpoints"]] == ["b", "c"]
    assert (
        endpointslices.desired_slices(web({}, []), [endpointslices.pod_endpoint(p) for p in pods])
        == []
    )


def test_named_target_ports_resolve_per_pod() -> None:
    pods = [
        pod("y/a", {"app": "web"}, "10.65.0.1", serve=["tcp:81", "udp:80"]),
        pod("y/b", {"app": "web"}, "10.65.0.2", serve=["tcp:80", "udp:80"]),
    ]
    service = web(
        {"app": "web"},
        [
            {"name": "t", "port": 8080, "protocol": "TCP", "targetPort": "serve-81-tcp"},
            # The name exists on both pods for UDP only: the protocol must match too.
            {"name": "u", "port": 53, "protocol": "UDP", "targetPort": "serve-80-udp"},
            {"name": "x", "port": 99, "protocol": "TCP", "targetPort": "serve-80-udp"},
        ],
    )
    slices = endpointslices.desired_slices(service, [endpointslices.pod_endpoint(p) for p in pods])
    by_pod = {s["endpoints"][0]["targetRef"]["name"]: s for s in slices}
    assert len(slices) == 2
    assert by_pod["a"]["ports"] == [
        {"name": "t", "protocol": "TCP", "port": 81},
        {"name": "u", "protocol": "UDP", "port": 80},
    ]
    assert by_pod["b"]["ports"] == [{"name": "u", "protocol": "UDP", "port": 80}]
    assert by_pod["a"]["metadata"]["name"] != by_pod["b"]["metadata"]["name"]


# ---- Services and slices through the store (a real embedded datastore) ----


def embedded_state(tmp_path: Path) -> LabState:
    return LabState(
        name="svcu",
        state_dir=tmp_path,
        datastore={"type": "embedded", "path": str(tmp_path / "ds.db")},
    )


def test_allocation_replacement_and_slices_in_the_datastore(tmp_path: Path) -> None:
    state = embedded_state(tmp_path)
    state.pods = {
        "y/a": pod("y/a", {"app": "web"}, "10.65.0.1"),
        "y/b": pod("y/b", {"app": "web"}, "10.65.0.2"),
    }

    async def scenario() -> None:
        async with LabStore(state) as store:
            first = await services.apply_service(
                state, store, svcspec.from_cli("y/web", selector="app=web", ports=["80"])
            )
            second = await services.apply_service(
                state,
                store,
                svcspec.from_cli("y/np", selector="app=web", ports=["80", "81"], type_="NodePort"),
            )
            assert services.cluster_ip(first) == "10.96.0.2"
            assert services.cluster_ip(second) == "10.96.0.3"
            assert [p["nodePort"] for p in second["spec"]["ports"]] == [30000, 30001]
            # Replaced: same cluster IP and node ports; a ClusterIP type drops the node ports.
            again = await services.apply_service(
                state,
                store,
                svcspec.from_cli("y/np", selector="app=db", ports=["80", "81"], type_="NodePort"),
            )
            assert services.cluster_ip(again) == "10.96.0.3"
            assert [p["nodePort"] for p in again["spec"]["ports"]] == [30000, 30001]
            assert again["metadata"]["uid"] == second["metadata"]["uid"]
            with pytest.raises(services.ServiceError, match=r"spec.ports\[0\].nodePort"):
                await services.apply_service(
                    state,
                    store,
                    svcspec.from_cli("y/np2", ports=["80"], type_="NodePort", node_ports=[30000]),
                )
            plain = await services.apply_service(
                state, store, svcspec.from_cli("y/np", selector="app=db", ports=["80"])
            )
            assert services.cluster_ip(plain) == "10.96.0.3"
            assert "nodePort" not in plain["spec"]["ports"][0]
            with pytest.raises(
                services.ServiceError, match=r"spec.clusterIP: 10.96.0.2 is already"
            ):
                taken = svcspec.from_cli("y/other", ports=["80"])
                taken["spec"]["clusterIP"] = "10.96.0.2"
                await services.apply_service(state, store, taken)
            lb = await services.apply_service(
                state, store, svcspec.from_cli("y/lb", ports=["80"], type_="LoadBalancer")
            )
            assert lb["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.129"}]
            # Headless: no address, still EndpointSlices.
            headless = svcspec.from_cli("y/hl", selector="app=web", ports=["80"])
            headless["spec"]["clusterIP"] = "None"
            assert (
                services.cluster_ip(await services.apply_service(state, store, headless)) == "None"
            )

            slices = await store.list_objects("discovery.k8s.io/v1", "EndpointSlice", "y")
            owners = sorted(s["metadata"]["labels"]["kubernetes.io/service-name"] for s in slices)
            assert owners == ["hl", "web"]  # np now selects app=db: nothing
            # Readiness and removal, as the lab's commands do them.
            state.pods["y/b"].ready = False
            assert await endpointslices.sync(state, store) == 2
            assert await endpointslices.sync(state, store) == 0  # nothing changed: no writes
            (web_slice,) = [
                s
                for s in await store.list_objects("discovery.k8s.io/v1", "EndpointSlice", "y")
                if s["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
            ]
            assert [e["conditions"]["ready"] for e in web_slice["endpoints"]] == [True, False]
            assert await services.remove_service(state, store, "y", "web")
            assert not await services.remove_service(state, store, "y", "web")
            remaining = await store.list_objects("discovery.k8s.io/v1", "EndpointSlice")
            assert [s["metadata"]["labels"]["kubernetes.io/service-name"] for s in remaining] == [
                "hl"
            ]
            # Stored where Felix's syncer reads them, as the Kubernetes objects' JSON.
            await store.client()
            assert store._datastore is not None
            kv = await store._datastore.get("/calico/resources/v3/core/services/y/np")
            assert json.loads(kv.value)["spec"]["clusterIP"] == "10.96.0.3"
            listed = await store._datastore.list(
                "/calico/resources/v3/discovery.k8s.io/endpointslices/y/"
            )
            assert len(listed.items) == 1

    asyncio.run(scenario())


# ---- placeholders, judging a round, the report ----


def test_placeholders() -> None:
    addresses = {"x/b": "10.65.0.2", "@outside": "10.66.0.1", "node-2": "10.66.0.12"}
    clusters = {"y/web": "10.96.0.7"}
    assert resolve("{{hostcidr:@outside}}", addresses) == "10.66.0.1/32"
    assert resolve("{{hostcidr:node-2}}", addresses) == "10.66.0.12/32"
    assert resolve("{{ip:x/b}}", addresses) == "10.65.0.2"
    assert resolve("{{ip:@outside}}", addresses) == "10.66.0.1"
    assert resolve("{{nodeip:node-2}}", addresses) == "10.66.0.12"
    assert resolve("{{supernet:x/b:16}}", addresses) == "10.65.0.0/16"
    assert resolve("{{clusterip:y/web}}", addresses, clusters) == "10.96.0.7"
    assert resolve("svc:y/web", addresses) == "svc:y/web"
    with pytest.raises(PlaceholderError):
        resolve("{{clusterip:y/gone}}", addresses, clusters)
    with pytest.raises(PlaceholderError):
        resolve("{{ip:node-9}}", addresses)
    policy = {"ipBlock": {"cidr": "{{hostcidr:node-2}}", "except": ["{{hostcidr:x/b}}"]}}
    assert substitute(policy, addresses) == {
        "ipBlock": {"cidr": "10.66.0.12/32", "except": ["10.65.0.2/32"]}
    }


def probe_of(**raw: Any) -> Any:
    case = parse_case({"id": "t", "steps": [{"probes": [{"from": "x/a", "port": 80, **raw}]}]}, 0)
    return case.steps[0].probes[0]


def test_judging_a_round() -> None:
    c = Observation
    nodes = {"node-1": ["10.66.0.11", "10.65.0.1"], "node-2": ["10.66.0.12"]}
    balanced = probe_of(
        to="svc:y/web",
        tries=3,
        expect="connected",
        all_of=["y/a", "y/b"],
        served_by=["y/a", "y/b"],
        client_seen="source",
    )
    ok = [
        c(CONNECTED, "y/a", "10.65.0.5"),
        c(CONNECTED, "y/b", "10.65.0.5"),
        c(CONNECTED, "y/a", "10.65.0.5"),
    ]
    assert judge(balanced, ok, "10.65.0.5", nodes) == (True, "")
    assert not judge(balanced, ok[:2], "10.65.0.5", nodes)[0]  # wrong count
    assert "y/b never answered" in judge(balanced, [ok[0]] * 3, "10.65.0.5", nodes)[1]
    assert not judge(balanced, ok, "10.66.0.11", nodes)[0]  # source not kept
    sticky = probe_of(to="svc:y/s", tries=2, expect="connected", same_backend=True)
    assert not judge(sticky, ok[:2], "10.65.0.5", nodes)[0]
    masq = probe_of(to="node:node-1", tries=2, expect="connected", client_seen="node")
    assert judge(masq, [c(CONNECTED, "y/b", "10.65.0.1")] * 2, "10.66.0.1", nodes)[0]
    assert not judge(masq, [c(CONNECTED, "y/b", "10.66.0.1")] * 2, "10.66.0.1", nodes)[0]
    either = probe_of(to="ip:10.96.0.9", tries=2, expect="not-connected")
    assert judge(either, [c(REFUSED), c(NO_ANSWER)], "10.65.0.5", nodes)[0]
    assert not judge(either, [c(REFUSED), c(CONNECTED, "y/a", "x")], "10.65.0.5", nodes)[0]
    refused = probe_of(to="svc:y/none", tries=2, expect="refused")
    assert not judge(refused, [c(REFUSED), c(NO_ANSWER)], "10.65.0.5", nodes)[0]


def test_report_format() -> None:
    raw = {"from": "x/a", "to": "svc:y/web", "port": 80, "protocol": "TCP", "expect": "connected"}
    sctp = {**raw, "protocol": "SCTP"}
    ran = CaseReport(
        "svc-a",
        [
            StepReport(
                [
                    ProbeReport(
                        raw,
                        "10.96.0.2:80/TCP",
                        [Observation(CONNECTED, "y/a", "10.65.0.5")],
                        2,
                        True,
                    ),
                    ProbeReport(
                        sctp, skipped="SCTP is not supported by this kernel (EPROTONOSUPPORT)"
                    ),
                ]
            )
        ],
        {"pods": {"x/a": "10.65.0.5"}, "nodes": {"node-1": ["10.66.0.11"]}, "outside": "10.66.0.1"},
        {"y/web": "10.96.0.2"},
    )
    skipped = CaseReport("svc-b", skipped="needs 3 nodes (this lab has 1)")
    report = build(
        [ran, skipped], {"svc-a": 2, "svc-b": 4}, "cases.json", "nftables", "embedded", 1
    )
    assert report["format"] == "services-report/1" and report["nodes"] == 1
    assert report["summary"] == {"passed": 1, "failed": 0, "skipped": 5}
    first = report["cases"][0]
    assert first["status"] == "passed" and first["addresses"]["outside"] == "10.66.0.1"
    probe = first["steps"][0]["probes"][0]
    assert probe["probe"] == raw  # exactly as in the file
    assert probe["observed"] == {
        "results": [{"outcome": "connected", "served_by": "y/a", "client_seen": "10.65.0.5"}],
        "rounds": 2,
        "pass": True,
    }
    assert first["steps"][0]["probes"][1] == {
        "probe": sctp,
        "skipped": "SCTP is not supported by this kernel (EPROTONOSUPPORT)",
    }
    assert report["cases"][1] == {
        "id": "svc-b",
        "status": "skipped",
        "skipped": "needs 3 nodes (this lab has 1)",
    }
    assert not failed(report)  # single-node run: a 3-node case skipped is not a failure
    assert failed({**report, "single_node_only": False})
    json.dumps(report)


def test_probe_targets_by_name(tmp_path: Path) -> None:
    from lab import targets
    from lab.state import NodeState

    state = embedded_state(tmp_path)
    state.network_netns = "clab-svcu-net"
    state.nodes = [NodeState("node-1", "clab-svcu-node-1", "10.66.0.11")]
    state.pods = {"y/b": pod("y/b", {}, "10.65.0.2")}
    web = {"spec": {"clusterIP": "10.96.0.9"}}
    headless = {"spec": {"clusterIP": "None"}}
    found = {"y/web": web, "y/hl": headless}
    assert targets.split("svc:y/web") == ("svc", "y/web")
    assert targets.split("y/b") == ("pod", "y/b")
    assert targets.address(state, "pod:y/b") == "10.65.0.2"
    assert targets.address(state, "y/b") == "10.65.0.2"
    assert targets.address(state, "svc:y/web", found) == "10.96.0.9"
    assert targets.address(state, "node:node-1") == "10.66.0.11"
    assert targets.address(state, "extip:192.0.2.10") == "192.0.2.10"
    assert targets.address(state, "ip:10.96.0.4") == "10.96.0.4"
    for bad, words in (
        ("svc:y/hl", "headless"),
        ("svc:y/none", "no Service y/none"),
        ("node:node-7", "no such node"),
        ("ip:not-an-address", "not an IP address"),
        ("pod:y/zz", "no pod y/zz"),
        ("web", "expected pod:NS/NAME"),
    ):
        with pytest.raises(targets.TargetError, match=words):
            targets.address(state, bad, found)
    outside = targets.source(state, "@outside")
    assert (outside.key, outside.ip, outside.bind) == ("@outside", "10.66.0.1", True)
    assert outside.netns_path.endswith("clab-svcu-net")
    assert targets.source(state, "y/b").ip == "10.65.0.2"
    with pytest.raises(targets.TargetError):
        targets.source(state, "somewhere")
