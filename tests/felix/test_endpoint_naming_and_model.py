"""Pure units: names, the WorkloadEndpoint built for a pod, request checks, netlink encoding."""

from __future__ import annotations

import hashlib
import json

import pytest

from calico.felix.v1 import endpoints_pb2 as pb
from libcalico.resources import validate
from services.felix.endpoints.naming import host_veth_name, workload_endpoint_name
from services.felix.endpoints.netlink import attr_str, parse_attrs
from services.felix.endpoints.veth import HOST_LINK_LOCAL_V6
from services.felix.model import EndpointID, NamedPort, WorkloadEndpoint
from services.felix.pod_cache import NamespaceInfo, parse_pod
from services.felix.requests import InvalidRequestError, check_setup
from services.felix.workload_endpoints import build_workload_endpoint, relabelled


def test_host_veth_name_is_calicos() -> None:
    expected = "cali" + hashlib.sha1(b"default.nginx").hexdigest()[:11]
    assert host_veth_name("default", "nginx") == expected == "calic440f455693"
    assert len(host_veth_name("a-very-long-namespace", "and-a-long-pod-name-0")) == 15


def test_workload_endpoint_name_doubles_dashes() -> None:
    assert workload_endpoint_name("node-1", "web-abc", "eth0") == "node--1-k8s-web--abc-eth0"
    assert workload_endpoint_name("n", "p", "eth-1") == "n-k8s-p-eth--1"


def test_host_link_local_is_the_eui64_of_the_fixed_mac() -> None:
    assert str(HOST_LINK_LOCAL_V6) == "fe80::ecee:eeff:feee:eeee"


def test_netlink_attributes_round_trip() -> None:
    data = attr_str(3, "cali1") + attr_str(4, "x")
    assert parse_attrs(data) == {3: b"cali1\0", 4: b"x\0"}


def _pod_json() -> bytes:
    return json.dumps(
        {
            "metadata": {"labels": {"app": "db", "projectcalico.org/namespace": "spoof"}},
            "spec": {
                "serviceAccountName": "db-sa",
                "containers": [
                    {"ports": [{"name": "pg", "containerPort": 5432}, {"containerPort": 1}]},
                    {"ports": [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]},
                ],
            },
        }
    ).encode()


def test_endpoint_from_pod_and_namespace_is_valid_and_calico_shaped() -> None:
    pod = parse_pod(_pod_json(), 7)
    assert pod.ports == (NamedPort("pg", "TCP", 5432), NamedPort("metrics", "TCP", 9100))
    wep = build_workload_endpoint(
        node="node-a",
        endpoint_id=EndpointID("abc123", "data", "db-0", "eth0"),
        host_interface=host_veth_name("data", "db-0"),
        pod_mac="02:00:00:00:00:01",
        ip_networks=["10.0.0.7/32"],
        pod=pod,
        namespace=NamespaceInfo({"env": "prod"}, 3),
    )
    obj = wep.to_resource()
    validate(obj)
    # The automatic namespace label cannot be spoofed by a pod label.
    assert obj["metadata"]["labels"]["projectcalico.org/namespace"] == "data"
    assert obj["metadata"]["labels"]["pcns.env"] == "prod"
    assert obj["spec"]["profiles"] == ["kns.data", "ksa.data.db-sa"]
    assert WorkloadEndpoint.from_resource(obj) == wep
    same = relabelled(wep, pod, NamespaceInfo({"env": "prod"}, 4))
    assert same == wep
    moved = relabelled(wep, pod, NamespaceInfo({"env": "dev"}, 5))
    assert moved.labels["pcns.env"] == "dev" and moved.container_id == "abc123"


def _request(**fields: object) -> pb.SetupEndpointRequest:
    req = pb.SetupEndpointRequest(
        id=pb.EndpointID(container_id="c1", namespace="ns", pod="p", interface_name="eth0"),
        netns="/var/run/netns/x",
        addresses=["10.0.0.1/24"],
    )
    for name, value in fields.items():
        setattr(req, name, value)
    return req


def test_check_setup_accepts_a_good_request() -> None:
    checked = check_setup(_request(mtu=1400, policy_timeout_ms=2500))
    assert checked.mtu == 1400 and checked.policy_timeout == 2.5
    assert [str(ip) for ip in checked.ips] == ["10.0.0.1"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mtu": 1000, "addresses": ["fd00::1/64"]}, "mtu"),  # IPv6 needs >= 1280
        ({"addresses": ["10.0.0.1", "10.0.0.1/32"]}, "addresses[1]"),
        ({"addresses": ["fe80::1/64"]}, "addresses[0]"),
    ],
)
def test_check_setup_names_the_bad_field(fields: dict[str, object], field: str) -> None:
    req = _request()
    for name, value in fields.items():
        if name == "addresses":
            del req.addresses[:]
            req.addresses.extend(value)  # type: ignore[arg-type]
        else:
            setattr(req, name, value)
    with pytest.raises(InvalidRequestError) as info:
        check_setup(req)
    assert info.value.field == field
