"""Metadata rules, endpoints, network sets, Node and the configuration kinds."""

from __future__ import annotations

from typing import Any

import pytest

from libcalico.resources.serialization import from_json_bytes, to_json_bytes
from libcalico.resources.validation import validate
from tests.resources.builders import assert_invalid, calico, with_field


def test_top_level_checks() -> None:
    assert_invalid(["not", "an", "object"], "", "object")
    assert_invalid({"apiVersion": "projectcalico.org/v3", "kind": "Nope"}, "kind", "unknown")
    assert_invalid({"apiVersion": "v1", "kind": "IPPool"}, "apiVersion", "projectcalico.org/v3")
    assert_invalid({"apiVersion": "projectcalico.org/v3", "kind": "IPPool"}, "metadata", "required")
    obj = calico("GlobalNetworkSet", "s", {})
    assert_invalid({**obj, "status": {}}, "status", "unknown field")


BAD_METADATA: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "no name",
        with_field(calico("Profile", "p", {}), "metadata", {}),
        "metadata.name",
        "required",
    ),
    ("empty name", calico("Profile", "", {}), "metadata.name", "empty"),
    ("upper case", calico("Profile", "Prof", {}), "metadata.name", "lower case"),
    ("too long", calico("Profile", "a" * 254, {}), "metadata.name", "too long"),
    (
        "unknown metadata field",
        with_field(calico("Profile", "p", {}), "metadata.nmae", "x"),
        "metadata.nmae",
        "unknown field",
    ),
    (
        "bad label key",
        with_field(calico("Profile", "p", {}), "metadata.labels", {"a b": "x"}),
        "metadata.labels.a b",
        "name part",
    ),
    (
        "bad label prefix",
        with_field(calico("Profile", "p", {}), "metadata.labels", {"Ex.com/a": "x"}),
        "metadata.labels.Ex.com/a",
        "prefix",
    ),
    (
        "long label value",
        with_field(calico("Profile", "p", {}), "metadata.labels", {"a": "v" * 64}),
        "metadata.labels.a",
        "at most 63",
    ),
    (
        "annotation not string",
        with_field(calico("Profile", "p", {}), "metadata.annotations", {"a": 1}),
        "metadata.annotations.a",
        "string",
    ),
    ("bad namespace", calico("NetworkSet", "s", {}, "X_Y"), "metadata.namespace", "lower case"),
    (
        "reserved label",
        with_field(
            calico("GlobalNetworkSet", "s", {}),
            "metadata.labels",
            {"projectcalico.org/namespace": "x"},
        ),
        "metadata.labels.projectcalico.org/namespace",
        "not a valid label",
    ),
    ("cluster info name", calico("ClusterInformation", "info", {}), "metadata.name", "default"),
]


@pytest.mark.parametrize(
    ("obj", "path", "message"),
    [(obj, path, message) for _, obj, path, message in BAD_METADATA],
    ids=[case[0] for case in BAD_METADATA],
)
def test_bad_metadata_rejected_at_path(obj: dict[str, Any], path: str, message: str) -> None:
    assert_invalid(obj, path, message)


def test_metadata_kept() -> None:
    obj = calico("Profile", "p", {})
    obj["metadata"].update(
        labels={"example.com/role": "db", "empty": ""},
        annotations={"Note": "x"},
        resourceVersion="12",
        uid="abc",
        creationTimestamp="2024-01-01T00:00:00Z",
    )
    assert validate(obj)["metadata"] == obj["metadata"]


def test_network_sets_normalize_nets() -> None:
    out = validate(calico("NetworkSet", "clients", {"nets": ["10.0.0.1", "10.1.2.3/16"]}, "y"))
    assert out["spec"]["nets"] == ["10.0.0.1/32", "10.1.0.0/16"]
    assert_invalid(
        calico("GlobalNetworkSet", "s", {"nets": ["10.0.0.0/8", "nope"]}),
        "spec.nets[1]",
        "valid CIDR",
    )
    assert_invalid(calico("GlobalNetworkSet", "s", {"cidrs": []}), "spec.cidrs", "unknown field")


def _wep(**spec: Any) -> dict[str, Any]:
    base = {
        "orchestrator": "k8s",
        "node": "node1",
        "pod": "a",
        "endpoint": "eth0",
        "containerID": "abc123",
        "ipNetworks": ["10.244.1.5/32"],
        "profiles": ["kns.x", "ksa.x.default"],
        "interfaceName": "cali0123456789a",
        "mac": "ee:ee:ee:ee:ee:ee",
        "serviceAccountName": "default",
        "ports": [{"name": "serve-80-tcp", "protocol": "TCP", "port": 80}],
    }
    base.update(spec)
    return calico("WorkloadEndpoint", "node1-k8s-a-eth0", base, "x")


def test_workload_endpoint() -> None:
    out = validate(_wep(ipNetworks=["10.244.1.5"]))
    assert out["spec"]["ipNetworks"] == ["10.244.1.5/32"]
    assert_invalid(_wep(ipNetworks=["10.244.1.0/24"]), "spec.ipNetworks[0]", "multiple")
    assert_invalid(_wep(interfaceName="a-very-long-interface"), "spec.interfaceName", "interface")
    assert_invalid(_wep(mac="zz:ee"), "spec.mac", "MAC")
    assert_invalid(
        _wep(ports=[{"name": "dns", "protocol": "ICMP", "port": 53}]),
        "spec.ports[0].protocol",
        "ports",
    )
    assert_invalid(
        _wep(ports=[{"name": "dns", "protocol": "UDP", "port": 0}]), "spec.ports[0].port", "1"
    )
    assert_invalid(_wep(ipv4Gateway="fd00::1"), "spec.ipv4Gateway", "IPv4")
    assert_invalid(_wep(workloadID="x"), "spec.workloadID", "unknown field")


def test_host_endpoint() -> None:
    spec = {"node": "node1", "interfaceName": "eth0", "expectedIPs": ["192.168.0.1"]}
    assert validate(calico("HostEndpoint", "h", spec))["spec"]["interfaceName"] == "eth0"
    assert validate(calico("HostEndpoint", "h", {"node": "n", "interfaceName": "*"}))
    assert_invalid(calico("HostEndpoint", "h", {"node": "n"}), "spec.interfaceName", "expected IPs")
    assert_invalid(calico("HostEndpoint", "h", {"interfaceName": "eth0"}), "spec.node", "node")
    assert_invalid(
        calico("HostEndpoint", "h", {"node": "n", "expectedIPs": ["1.2.3"]}),
        "spec.expectedIPs[0]",
        "IP address",
    )


def test_node() -> None:
    spec = {
        "bgp": {"ipv4Address": "192.168.0.10/24", "asNumber": "1.10"},
        "ipv4VXLANTunnelAddr": "10.244.0.1",
        "orchRefs": [{"nodeName": "node1", "orchestrator": "k8s"}],
        "addresses": [{"address": "192.168.0.10", "type": "InternalIP"}],
    }
    out = validate({**calico("Node", "node1", spec), "status": {"podCIDRs": ["10.244.0.0/24"]}})
    assert out["spec"]["bgp"]["asNumber"] == (1 << 16) | 10
    assert out["status"] == {"podCIDRs": ["10.244.0.0/24"]}
    assert_invalid(calico("Node", "n", {"bgp": {}}), "spec.bgp", "empty")
    assert_invalid(
        calico("Node", "n", {"bgp": {"ipv4Address": "fd00::1/64"}}), "spec.bgp.ipv4Address", "IP"
    )


def test_configuration_kinds() -> None:
    felix = calico(
        "FelixConfiguration",
        "default",
        {
            "logSeverityScreen": "Info",
            "healthPort": 9099,
            "reportingInterval": "30s",
            "someNewerFelixField": True,
        },
    )
    assert validate(felix)["spec"]["healthPort"] == 9099
    assert_invalid(
        with_field(felix, "spec.logSeverityScreen", "info"), "spec.logSeverityScreen", "not one of"
    )
    assert_invalid(with_field(felix, "spec.healthPort", 0), "spec.healthPort", "between")
    assert_invalid(with_field(felix, "spec.Bad-Field", 1), "spec.Bad-Field", "unknown field")
    assert_invalid(
        with_field(felix, "spec.reportingInterval", "30"), "spec.reportingInterval", "duration"
    )

    bgp = calico(
        "BGPConfiguration",
        "default",
        {
            "asNumber": 64512,
            "nodeToNodeMeshEnabled": True,
            "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
        },
    )
    assert validate(bgp)["spec"]["asNumber"] == 64512
    assert_invalid(with_field(bgp, "spec.asNumber", -1), "spec.asNumber", "between")
    assert_invalid(with_field(bgp, "spec.meshEnabled", True), "spec.meshEnabled", "unknown field")

    peer = calico("BGPPeer", "rr", {"peerIP": "192.168.0.1:179", "asNumber": 64513})
    assert validate(peer)["spec"]["peerIP"] == "192.168.0.1:179"
    assert_invalid(with_field(peer, "spec.peerSelector", "rr == 'true'"), "spec.peerIP", "PeerIP")
    assert_invalid(with_field(peer, "spec.peerIP", "192.168.0"), "spec.peerIP", "IP address")
    assert_invalid(
        calico("BGPPeer", "p", {"node": "a", "nodeSelector": "all()"}), "spec.node", "NodeSelector"
    )

    info = calico("ClusterInformation", "default", {"datastoreReady": True, "clusterGUID": "x"})
    assert validate(info)["spec"]["datastoreReady"] is True
    assert_invalid(with_field(info, "spec.datastoreReady", "yes"), "spec.datastoreReady", "true")


def test_serialization_is_canonical() -> None:
    a = to_json_bytes({"b": 1, "a": {"d": [1, 2], "c": "é"}})
    b = to_json_bytes({"a": {"c": "é", "d": [1, 2]}, "b": 1})
    assert a == b == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    assert from_json_bytes(a) == {"a": {"c": "é", "d": [1, 2]}, "b": 1}
    with pytest.raises(ValueError, match="not a JSON object"):
        from_json_bytes(b"[1]")
    with pytest.raises(ValueError):
        to_json_bytes({"x": float("nan")})


def test_kube_controllers_configuration() -> None:
    spec = {
        "logSeverityScreen": "Info",
        "healthChecks": "Enabled",
        "etcdV3CompactionPeriod": "10m",
        "controllers": {
            "node": {"reconcilerPeriod": "5m", "leakGracePeriod": "15m", "syncLabels": "Enabled"},
            "policy": {"reconcilerPeriod": "5m"},
            "namespace": {},
        },
    }
    obj = calico("KubeControllersConfiguration", "default", spec)
    obj["status"] = {"runningConfig": {"controllers": {"node": {}}}}
    out = validate(obj)
    assert out["spec"] == spec
    assert out["status"] == obj["status"]
    kcc = "KubeControllersConfiguration"
    assert_invalid(calico(kcc, "other", {}), "metadata.name", "default")
    assert_invalid(
        calico(kcc, "default", {"controllers": {"node": {"leakGracePeriod": "15 min"}}}),
        "spec.controllers.node.leakGracePeriod",
        "not a duration",
    )
    assert_invalid(
        calico(kcc, "default", {"controllers": {"pods": {}}}),
        "spec.controllers.pods",
        "unknown field",
    )
    assert_invalid(
        calico(kcc, "default", {"controllers": {"node": {"syncLabels": "yes"}}}),
        "spec.controllers.node.syncLabels",
        "Enabled, Disabled",
    )
