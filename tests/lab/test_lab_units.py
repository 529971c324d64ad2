"""calico-lab pieces that need no daemons: parsing, placeholders, tables, the report, the
pod server and the prober between two hand-made namespaces."""

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

from lab import netns
from lab.conformance import report
from lab.conformance.cases import Probe, load_cases, topology_pods
from lab.conformance.placeholders import PlaceholderError, substitute
from lab.matrix import render
from lab.pods import merge_labels, parse_labels, parse_pod_key
from lab.podserver import parse_serve
from lab.prober import Endpoint, ProbeUnsupportedError, all_pairs, probe_pairs, sctp_supported
from lab.processes import ProcessRecord, is_alive, start_detached, stop

CASES = Path("/work/shared/conformance/netpol")


def test_parse_serve_and_labels() -> None:
    assert parse_serve("tcp:80, udp:80,SCTP:81,tcp:80") == [("tcp", 80), ("udp", 80), ("sctp", 81)]
    for bad in ("tcp", "icmp:1", "tcp:0", "udp:x"):
        with pytest.raises(ValueError):
            parse_serve(bad)
    assert parse_labels("a=1,b=,c-") == {"a": "1", "b": "", "c": None}
    assert merge_labels({"a": "0", "c": "3"}, {"a": "1", "c": None}) == {"a": "1"}
    assert parse_pod_key("x/a") == ("x", "a")


def test_placeholders_substitute_whole_strings_only() -> None:
    ips = {"x/b": "10.65.0.7", "x/a": "10.65.1.9"}
    policy = {
        "ipBlock": {
            "cidr": "{{supernet:x/a:4}}",
            "except": ["{{hostcidr:x/b}}", "{{ip:x/b}}", "keep {{ip:x/b}}"],
        }
    }
    assert substitute(policy, ips) == {
        "ipBlock": {"cidr": "0.0.0.0/4", "except": ["10.65.0.7/32", "10.65.0.7", "keep {{ip:x/b}}"]}
    }
    assert substitute("{{supernet:x/a:16}}", ips) == "10.65.0.0/16"
    with pytest.raises(PlaceholderError):
        substitute("{{ip:z/c}}", ips)


def test_expected_table_flips_differ_pairs() -> None:
    probe = Probe(80, "TCP", True, frozenset({("x/a", "x/b")}))
    table = probe.expected(topology_pods())
    assert len(table) == 72
    assert table[("x/a", "x/b")] is False
    assert table[("x/b", "x/a")] is True


def test_public_case_files_load() -> None:
    for name in ("cases-public.json", "calico-cases-public.json"):
        cases = load_cases(CASES / name)
        assert cases and all(c.steps for c in cases)
        assert all(set(c.namespaces) >= {"x", "y", "z"} for c in cases)


def test_report_counts_probes() -> None:
    passed = report.CaseResult("a", [report.ProbeResult(0, 80, "TCP", report.PASSED)])
    failed = report.CaseResult(
        "b",
        [
            report.ProbeResult(0, 80, "TCP", report.PASSED),
            report.ProbeResult(0, 81, "UDP", report.FAILED, [["x/a", "x/b", True, False]], "r"),
        ],
    )
    skipped = report.CaseResult("c", [report.ProbeResult(0, 80, "SCTP", report.SKIPPED, [], "why")])
    built = report.build([passed, failed, skipped])
    assert built["summary"] == {"passed": 2, "failed": 1, "skipped": 1}
    assert [c["status"] for c in built["cases"]] == ["passed", "failed", "skipped"]
    assert built["cases"][1]["probes"][1]["wrong"] == [["x/a", "x/b", True, False]]


def test_render_marks_differences() -> None:
    keys = ["x/a", "x/b"]
    text = render(
        keys,
        {("x/a", "x/b"): True, ("x/b", "x/a"): False},
        "T",
        expected={("x/a", "x/b"): True, ("x/b", "x/a"): True},
    )
    lines = text.splitlines()
    assert lines[0] == "T"
    assert lines[2].split() == ["x/a", "-", "."]
    assert lines[3].split() == ["x/b", "X!", "-"]


def test_process_records_stop_only_the_recorded_process(tmp_path: Path) -> None:
    record = start_detached("sleeper", ["sleep", "30"], tmp_path / "log")
    assert is_alive(record)
    impostor = ProcessRecord("x", record.pid, record.start_time + 1, [], "")
    assert not is_alive(impostor)  # same PID, other start time: never signalled
    assert stop(impostor)
    assert is_alive(record)
    assert stop(record)
    assert not is_alive(record)


@pytest.fixture
def two_namespaces(tmp_path: Path) -> Iterator[tuple[Endpoint, Endpoint, list[ProcessRecord]]]:
    """Two namespaces joined by a veth, a pod server in each (no Calico involved)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    tag = f"clab-unit{os.getpid()}"
    a, b = f"{tag}-a", f"{tag}-b"
    servers: list[ProcessRecord] = []
    try:
        netns.create(a)
        netns.create(b)
        netns.run_ip(
            ["link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b]
        )
        for ns, dev, ip in ((a, "va", "10.250.0.1/24"), (b, "vb", "10.250.0.2/24")):
            netns.run_ip(["addr", "add", ip, "dev", dev], netns=ns)
            netns.run_ip(["link", "set", dev, "up"], netns=ns)
            ready = tmp_path / f"{ns}.ready"
            servers.append(
                start_detached(
                    f"server {ns}",
                    [
                        sys.executable,
                        "-m",
                        "lab.podserver",
                        "--netns",
                        str(netns.netns_path(ns)),
                        "--serve",
                        "tcp:80,udp:80,sctp:80",
                        "--ready",
                        str(ready),
                    ],
                    tmp_path / f"{ns}.log",
                    cwd=Path(__file__).resolve().parents[2],
                )
            )
            deadline = time.monotonic() + 10
            while not ready.exists():
                assert time.monotonic() < deadline, (tmp_path / f"{ns}.log").read_text()
                time.sleep(0.02)
        yield (
            Endpoint("x/a", str(netns.netns_path(a)), "10.250.0.1"),
            Endpoint("x/b", str(netns.netns_path(b)), "10.250.0.2"),
            servers,
        )
    finally:
        for server in servers:
            stop(server)
        netns.delete(a)
        netns.delete(b)


def test_pod_server_and_prober(
    two_namespaces: tuple[Endpoint, Endpoint, list[ProcessRecord]], tmp_path: Path
) -> None:
    a, b, _servers = two_namespaces
    ready = json.loads((tmp_path / f"{Path(b.netns_path).name}.ready").read_text())
    assert {"tcp:80", "udp:80"} <= set(ready["served"])
    pairs = all_pairs([a, b])
    for proto in ("tcp", "udp"):
        assert asyncio.run(probe_pairs(pairs, 80, proto)) == {
            ("x/a", "x/b"): True,
            ("x/b", "x/a"): True,
        }
        # Nothing listens on 81: refused at once, not a timeout.
        started = time.monotonic()
        assert not any(asyncio.run(probe_pairs(pairs, 81, proto)).values())
        assert time.monotonic() - started < 0.9
    # A drop rule inside b (b's own namespace, made by this test) turns both into timeouts.
    subprocess.run(
        [
            "nsenter",
            f"--net={b.netns_path}",
            "nft",
            "add table inet t; "
            "add chain inet t in { type filter hook input priority 0; policy drop; }",
        ],
        check=True,
    )
    for proto in ("tcp", "udp"):
        result = asyncio.run(probe_pairs(pairs, 80, proto, wait=0.5))
        assert result == {("x/a", "x/b"): False, ("x/b", "x/a"): False}
    if not sctp_supported():
        print("SCTP unsupported by this kernel: probe must say so")
        with pytest.raises(ProbeUnsupportedError):
            asyncio.run(probe_pairs(pairs, 80, "sctp"))


def test_state_round_trip_and_lock(tmp_path: Path) -> None:
    from lab.state import LabState, LabStateError, NodeState, PodState, locked

    state_dir = tmp_path / "lab"
    with pytest.raises(LabStateError), locked(state_dir):
        pass  # without create, a missing lab is an error
    assert not state_dir.exists()
    with locked(state_dir, create=True):
        record = ProcessRecord("calico-felix", 42, 7, ["calico-felix"], "/x.log")
        node = NodeState(
            "node-1",
            "clab-t-node-1",
            "10.66.0.11",
            ["10.65.0.0/16"],
            {"calico-felix": record},
            {"calico-felix": "/s.sock"},
            "/bin",
        )
        pod = PodState(
            "x",
            "a",
            "node-1",
            "clab-t-x.a",
            "c" * 64,
            {"pod": "a"},
            ["tcp:80"],
            ["10.65.0.1"],
            "cali0123456789a",
            record,
        )
        state = LabState(
            "t",
            state_dir,
            {"type": "embedded", "path": "/db"},
            "nftables",
            {},
            "clab-t-net",
            [node],
            {pod.key: pod},
        )
        state.save()
    loaded = LabState.load(state_dir)
    assert loaded.to_json() == state.to_json()
    assert loaded.node().processes["calico-felix"] == record
    assert loaded.pods["x/a"].ip == "10.65.0.1"
    # A failed `up` leaves no directory behind.
    other = tmp_path / "other"
    with pytest.raises(RuntimeError), locked(other, create=True):
        raise RuntimeError("up failed")
    assert not other.exists()


def test_topology_spreads_round_robin_over_nodes() -> None:
    from lab.conformance.cases import topology_placement

    placement = topology_placement(["node-1", "node-2", "node-3"])
    assert [placement[k] for k in ("x/a", "x/b", "x/c", "y/a", "z/c")] == [
        "node-1",
        "node-2",
        "node-3",
        "node-1",
        "node-3",
    ]
    assert set(topology_placement(["node-1"]).values()) == {"node-1"}
    with pytest.raises(ValueError):
        topology_placement([])


def _nodes(count: int) -> list[Any]:
    from lab.state import NodeState

    return [NodeState(f"node-{i}", f"ns-{i}", f"10.66.0.{10 + i}") for i in range(1, count + 1)]


def test_bgp_objects_and_expected_peers_per_mode() -> None:
    from lab import bgp
    from libcalico.resources.validation import validate

    nodes = _nodes(3)
    assert bgp.default_mode(1, tor=False) == "none"
    assert bgp.default_mode(1, tor=True) == bgp.default_mode(3, tor=False) == "mesh"
    mesh = bgp.node_objects(nodes, "mesh")
    assert [o["spec"]["bgp"]["ipv4Address"] for o in mesh] == [
        "10.66.0.11/24",
        "10.66.0.12/24",
        "10.66.0.13/24",
    ]
    assert bgp.mode_objects("mesh", None) == []
    rr_nodes = bgp.node_objects(nodes, "rr")
    assert rr_nodes[0]["spec"]["bgp"]["routeReflectorClusterID"] == "244.0.0.1"
    assert rr_nodes[0]["metadata"]["labels"]["route-reflector"] == "true"
    assert "routeReflectorClusterID" not in rr_nodes[1]["spec"]["bgp"]
    rr = {o["metadata"]["name"]: o for o in bgp.mode_objects("rr", 65000)}
    assert rr["default"]["spec"] == {"nodeToNodeMeshEnabled": False}
    assert rr["peer-with-route-reflectors"]["spec"] == {
        "nodeSelector": "all()",
        "peerSelector": "route-reflector == 'true'",
    }
    assert rr["tor"]["spec"] == {"peerIP": "10.66.0.1", "asNumber": 65000}
    for obj in [*mesh, *rr_nodes, *rr.values()]:
        validate(obj)  # what the datastore will accept

    assert bgp.expected_peers("none", nodes, tor=False) == {}
    assert bgp.expected_peers("mesh", nodes, tor=False)["node-2"] == {"10.66.0.11", "10.66.0.13"}
    peers = bgp.expected_peers("rr", nodes, tor=True)
    assert peers["node-1"] == {"10.66.0.12", "10.66.0.13", "10.66.0.1"}
    assert peers["node-3"] == {"10.66.0.11", "10.66.0.1"}


def test_bird_from_pidfile_only_names_that_directorys_bird(tmp_path: Path) -> None:
    from lab.node import bird_from_pidfile

    bird_dir = tmp_path / "bird"
    bird_dir.mkdir()
    pidfile = bird_dir / "bird.pid"
    assert bird_from_pidfile(bird_dir) is None  # no file
    pidfile.write_text("not a pid\n")
    assert bird_from_pidfile(bird_dir) is None

    def fake(argv0: str, directory: Path) -> subprocess.Popen[bytes]:
        # A process whose command line looks like BIRD's (argv[0] and its files' directory).
        script = "import time; time.sleep(30)"
        conf = str(directory / "bird.conf")
        return subprocess.Popen([argv0, "-c", script, conf], executable=sys.executable)

    procs = [fake("bird", bird_dir), fake("bird", tmp_path / "other"), fake("sleep", bird_dir)]
    try:
        for proc, wanted in zip(procs, (True, False, False), strict=True):
            pidfile.write_text(f"{proc.pid}\n")
            deadline = time.monotonic() + 5
            while "bird.conf" not in Path(f"/proc/{proc.pid}/cmdline").read_text():
                assert time.monotonic() < deadline
                time.sleep(0.01)
            record = bird_from_pidfile(bird_dir)
            assert (record is not None) == wanted, (proc.args, record)
            if record is not None:
                assert record.pid == proc.pid and is_alive(record)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert bird_from_pidfile(bird_dir) is None  # the PID it names is gone


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"nodes": 0}, "--nodes"),
        ({"nodes": 33}, "--nodes"),
        ({"bgp_mode": "ibgp"}, "--bgp"),
        ({"tor": "quagga"}, "--tor"),
        ({"tor": "bird", "bgp_mode": "none"}, "--tor"),
        ({"tor": "gobgp", "tor_asn": 0}, "--tor-asn"),
        ({"datastore": "consul"}, "--datastore"),
        ({"encap": "ipip"}, "--encap"),
        ({"subnets": 0}, "--subnets"),
        ({"subnets": 3, "encap": "vxlan"}, "--subnets"),
        ({"subnets": 2, "nodes": 3, "tor": "bird"}, "--tor"),
        ({"kube_apiserver": True}, "--kube-apiserver"),
    ],
)
def test_bad_lab_options_name_the_field_and_make_nothing(
    tmp_path: Path, options: dict[str, Any], field: str
) -> None:
    from lab.cluster import bring_up
    from lab.lab import LabError

    state_dir = tmp_path / "lab"
    with pytest.raises(LabError, match=f"^{field}:" if field != "--tor" else "--tor"):
        bring_up(state_dir, "bad", **options)
    assert not state_dir.exists()


def test_nodes_alternate_over_two_subnets_keeping_their_host_number() -> None:
    from lab import bgp, network

    one = [str(network.node_address(i)) for i in range(3)]
    assert one == ["10.66.0.11", "10.66.0.12", "10.66.0.13"]
    two = [str(network.node_address(i, subnets=2)) for i in range(4)]
    assert two == ["10.66.0.11", "10.66.1.12", "10.66.0.13", "10.66.1.14"]
    assert [network.node_subnet(i, 2) for i in range(4)] == [0, 1, 0, 1]
    assert [str(network.gateway(s)) for s in (0, 1)] == ["10.66.0.1", "10.66.1.1"]
    assert str(network.GATEWAY) == "10.66.0.1"  # etcd, Typha and the ToR stay here
    # Each Node's BGP address carries its own subnet's prefix (what CrossSubnet compares).
    from lab.state import NodeState

    nodes = [NodeState(f"node-{i + 1}", f"ns-{i}", a) for i, a in enumerate(two)]
    addresses = [o["spec"]["bgp"]["ipv4Address"] for o in bgp.node_objects(nodes, "none")]
    assert addresses == ["10.66.0.11/24", "10.66.1.12/24", "10.66.0.13/24", "10.66.1.14/24"]
    with pytest.raises(ValueError, match=r"192\.0\.2\.1"):
        network.prefix_of("192.0.2.1")


def test_encap_names_the_pools_vxlan_mode_and_state_keeps_subnets_and_outside(
    tmp_path: Path,
) -> None:
    from lab.lab import ENCAPS, VXLAN_MODES
    from lab.state import LabState

    assert ENCAPS == ("none", "vxlan", "vxlan-crosssubnet")
    assert [VXLAN_MODES[e] for e in ENCAPS] == ["Never", "Always", "CrossSubnet"]
    outside = {"netns": "clab-t-outside", "address": "198.51.100.1", "port": 80}
    state = LabState("t", tmp_path, encap="vxlan-crosssubnet", subnets=2, outside=outside)
    state.save()
    loaded = LabState.load(tmp_path)
    assert (loaded.encap, loaded.subnets, loaded.outside) == ("vxlan-crosssubnet", 2, outside)


def test_store_sends_kubernetes_kinds_to_the_api_in_order_and_calico_kinds_elsewhere(
    tmp_path: Path,
) -> None:
    from lab.kubeobjects import is_kube_kind
    from lab.state import LabState
    from lab.store import LabStore, _runs

    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    knp = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {}}
    cnp = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {}}
    runs = _runs([ns, knp, cnp, ns], is_kube_kind)
    assert [(api, len(run)) for api, run in runs] == [(True, 2), (False, 1), (True, 1)]
    assert not is_kube_kind({"apiVersion": "projectcalico.org/v3", "kind": "Node"})
    assert is_kube_kind({"apiVersion": "v1", "kind": "Node"})
    # Without an API server every kind goes to the datastore, as before.
    without = LabStore(LabState(name="l", state_dir=tmp_path))
    assert not without.has_api and not without._to_api(ns)
    with_api = LabStore(LabState(name="l", state_dir=tmp_path, kube={"kubeconfig": "k"}))
    assert with_api._to_api(ns) and not with_api._to_api(cnp)


def test_daemons_get_the_calico_node_kubeconfig_and_the_cli_admins(tmp_path: Path) -> None:
    from lab.lab import Lab
    from lab.state import LabState

    state = LabState(
        name="l",
        state_dir=tmp_path,
        datastore={"type": "kubernetes", "kubeconfig": "/s/kubeconfig"},
        kube={"kubeconfig": "/s/kubeconfig", "kubeconfigs": {"calico-node": "/s/kube/node"}},
    )
    lab = Lab(state)
    assert lab.datastore_env()["KUBECONFIG"] == "/s/kubeconfig"
    assert lab.daemon_env() == {**lab.datastore_env(), "KUBECONFIG": "/s/kube/node"}
    assert LabState.load(_saved(state)).kube == state.kube


def _saved(state: Any) -> Path:
    state.save()
    return Path(state.state_dir)


def test_infra_stops_readers_first_and_the_api_server_before_its_etcd() -> None:
    from lab.cluster import _stop_rank

    names = ["kube-etcd", "etcd", "typha", "kube-apiserver", "tor", "kube-controllers"]
    assert sorted(names, key=_stop_rank) == [
        "tor",
        "typha",
        "kube-controllers",
        "etcd",
        "kube-apiserver",
        "kube-etcd",
    ]
