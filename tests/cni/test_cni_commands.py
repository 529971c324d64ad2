"""ADD/DEL/CHECK/STATUS/GC/VERSION through the installed launcher against real gRPC servers
(tests/cni/fake_daemons.py): result formats per CNI version, rollback, idempotence, tracing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.cni.fake_daemons import FAKE_FELIX_MTU, FakeDaemons
from tests.cni.plugin import CONTAINER_ID, NETNS, base_env, netconf, run_plugin

HANDLE = f"k8s-pod-network.{CONTAINER_ID}"


def add(cni_bin: Path, conf: dict[str, Any], **env: str | None) -> dict[str, Any]:
    run = run_plugin(cni_bin, base_env("ADD", cni_bin, **env), conf)
    assert run.rc == 0, run.stdout + run.stderr
    out: dict[str, Any] = run.json()
    return out


def test_version(cni_bin: Path) -> None:
    run = run_plugin(cni_bin, {"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.1.0"})
    assert run.rc == 0
    assert run.json() == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


@pytest.mark.parametrize("version", ["1.1.0", "1.0.0"])
def test_add_result_current_format(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], version: str
) -> None:
    conf["cniVersion"] = version
    conf["ipam"]["assign_ipv6"] = "true"
    conf["dns"] = {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    result = add(cni_bin, conf)
    # 1.1.0 added the interfaces' `mtu`; a 1.0.0 result stays exactly as 1.0.0 defines it.
    mtu = {"mtu": FAKE_FELIX_MTU} if version == "1.1.0" else {}
    assert result == {
        "cniVersion": version,
        "interfaces": [
            {"name": "calia1b2c3d4e5f", "mac": "ee:ee:ee:ee:ee:ee", **mtu},
            {"name": "eth0", "mac": "0a:58:0a:41:00:02", **mtu, "sandbox": NETNS},
        ],
        "ips": [
            {"address": "10.65.0.2/32", "interface": 1},
            {"address": "fd00:65::3/128", "interface": 1},
        ],
        "routes": [
            {"dst": "169.254.1.1/32"},
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
            {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"},
        ],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
    }
    assert daemons.state.methods() == ["AutoAssign", "SetupEndpoint"]
    assign = daemons.state.calls[0].request
    assert assign.handle_id == HANDLE  # type: ignore[attr-defined]
    assert dict(assign.attributes) == {  # type: ignore[attr-defined]
        "namespace": "default",
        "pod": "pod-1",
        "node": "node-1",
    }
    assert (assign.num_ipv4, assign.num_ipv6) == (1, 1)  # type: ignore[attr-defined]
    setup = daemons.state.calls[1].request
    assert setup.netns == NETNS and setup.network_name == "k8s-pod-network"  # type: ignore[attr-defined]
    assert list(setup.addresses) == ["10.65.0.2/26", "fd00:65::3/122"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", ["0.4.0", "0.3.1", "0.3.0"])
def test_add_result_legacy_format(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], version: str
) -> None:
    conf["cniVersion"] = version
    conf["ipam"]["assign_ipv6"] = True
    result = add(cni_bin, conf)
    assert result["cniVersion"] == version
    assert result["ips"] == [
        {"version": "4", "address": "10.65.0.2/32", "interface": 1},
        {"version": "6", "address": "fd00:65::3/128", "interface": 1},
    ]
    assert result["interfaces"][1]["sandbox"] == NETNS
    assert all("mtu" not in iface for iface in result["interfaces"])
    assert "dns" not in result


def test_add_passes_config_and_trace(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    conf.update(mtu=1400, policy_timeout_ms=2500)
    conf["ipam"]["ipv4_pools"] = ["pool-a", "10.70.0.0/16"]
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    result = add(cni_bin, conf, TRACEPARENT=f"00-{trace_id}-00f067aa0ba902b7-01")
    assert [iface["mtu"] for iface in result["interfaces"]] == [1400, 1400]
    assign, setup = (c.request for c in daemons.state.calls)
    assert list(assign.ipv4_pools) == ["pool-a", "10.70.0.0/16"]  # type: ignore[attr-defined]
    assert (setup.mtu, setup.policy_timeout_ms) == (1400, 2500)  # type: ignore[attr-defined]
    # One ADD is one trace: both requests carry it, under a span id of the plugin's own.
    parents = {c.metadata["traceparent"] for c in daemons.state.calls}
    assert len(parents) == 1
    version, got_trace, span, flags = parents.pop().split("-")
    assert (version, got_trace, flags) == ("00", trace_id, "01")
    assert len(span) == 16 and span != "00f067aa0ba902b7"


def test_add_starts_a_new_trace(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    add(cni_bin, conf)
    add(cni_bin, conf, CNI_CONTAINERID="other", CNI_ARGS="K8S_POD_NAME=p2")
    parents = [c.metadata["traceparent"] for c in daemons.state.calls]
    traces = [p.split("-")[1] for p in parents]
    assert traces[0] == traces[1] != traces[2] == traces[3]
    assert all(len(p) == 55 and p.startswith("00-") and p.endswith("-01") for p in parents)


def test_add_outside_kubernetes(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    add(cni_bin, conf, CNI_ARGS=None)
    setup = daemons.state.calls[1].request
    assert (setup.id.namespace, setup.id.pod) == ("default", CONTAINER_ID)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (grpc.StatusCode.UNAVAILABLE, 11, ["try again later", "not in sync"]),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 11, ["try again later"]),
        (grpc.StatusCode.NOT_FOUND, 3, ["no such netns"]),
        (grpc.StatusCode.INVALID_ARGUMENT, 7, ["bad mtu"]),
        (grpc.StatusCode.INTERNAL, 100, ["calico-felix SetupEndpoint failed"]),
    ],
)
def test_add_rolls_back_when_felix_fails(
    cni_bin: Path,
    daemons: FakeDaemons,
    conf: dict[str, Any],
    status: grpc.StatusCode,
    code: int,
    words: list[str],
) -> None:
    message = {"UNAVAILABLE": "not in sync", "NOT_FOUND": "no such netns"}.get(
        status.name, "bad mtu: ünïcode"
    )
    daemons.state.fail["SetupEndpoint"] = (status, message)
    run = run_plugin(cni_bin, base_env("ADD", cni_bin), conf)
    err = run.error
    assert err["code"] == code, err
    for word in words:
        assert word in err["msg"]
    assert status.name in err["details"]
    assert daemons.state.methods() == [
        "AutoAssign",
        "SetupEndpoint",
        "TeardownEndpoint",
        "ReleaseByHandle",
    ]
    assert daemons.state.calls[3].request.handle_id == HANDLE  # type: ignore[attr-defined]
    assert daemons.state.allocations == {} and daemons.state.endpoints == {}


def test_add_ipam_exhausted(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    daemons.state.fail["AutoAssign"] = (grpc.StatusCode.RESOURCE_EXHAUSTED, "pool 10.65/16 full")
    err = run_plugin(cni_bin, base_env("ADD", cni_bin), conf).error
    assert err["code"] == 101
    assert "no free IP address" in err["msg"] and "pool 10.65/16 full" in err["msg"]
    # Felix was never asked; the handle is released in case the daemon kept anything.
    assert daemons.state.methods() == ["AutoAssign", "ReleaseByHandle"]


def test_add_rollback_failure_is_reported(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    daemons.state.fail["SetupEndpoint"] = (grpc.StatusCode.INTERNAL, "boom")
    daemons.state.fail["ReleaseByHandle"] = (grpc.StatusCode.UNAVAILABLE, "datastore down")
    err = run_plugin(cni_bin, base_env("ADD", cni_bin), conf).error
    assert err["code"] == 100 and "boom" in err["msg"]
    assert "rollback" in err["details"] and "datastore down" in err["details"]


def test_del_releases_and_is_idempotent(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    result = add(cni_bin, conf)
    conf["prevResult"] = result
    for _ in range(2):
        run = run_plugin(cni_bin, base_env("DEL", cni_bin), conf)
        assert (run.rc, run.stdout) == (0, "")
    assert daemons.state.allocations == {} and daemons.state.endpoints == {}
    assert daemons.state.methods()[2:] == ["TeardownEndpoint", "ReleaseByHandle"] * 2


def test_del_without_netns_or_prev_result(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    add(cni_bin, conf)
    run = run_plugin(cni_bin, base_env("DEL", cni_bin, CNI_NETNS=None), conf)
    assert run.rc == 0, run.stdout
    assert daemons.state.calls[2].request.netns == ""  # type: ignore[attr-defined]
    assert daemons.state.allocations == {}


def test_del_never_added(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    run = run_plugin(cni_bin, base_env("DEL", cni_bin, CNI_CONTAINERID="never-added"), conf)
    assert run.rc == 0


def test_del_keeps_address_while_endpoint_remains(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    add(cni_bin, conf)
    daemons.state.fail["TeardownEndpoint"] = (grpc.StatusCode.UNAVAILABLE, "felix restarting")
    err = run_plugin(cni_bin, base_env("DEL", cni_bin), conf).error
    assert err["code"] == 11 and "felix restarting" in err["msg"]
    assert HANDLE in daemons.state.allocations  # released only once the endpoint is gone
    del daemons.state.fail["TeardownEndpoint"]
    assert run_plugin(cni_bin, base_env("DEL", cni_bin), conf).rc == 0
    assert daemons.state.allocations == {}


def test_del_treats_not_found_as_gone(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    add(cni_bin, conf)
    daemons.state.fail["TeardownEndpoint"] = (grpc.StatusCode.NOT_FOUND, "netns gone")
    assert run_plugin(cni_bin, base_env("DEL", cni_bin), conf).rc == 0
    assert daemons.state.allocations == {}


@pytest.mark.parametrize("version", ["1.1.0", "1.0.0", "0.4.0"])
def test_check_against_prev_result(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], version: str
) -> None:
    conf["cniVersion"] = version
    conf["ipam"]["assign_ipv6"] = "true"
    conf["prevResult"] = add(cni_bin, conf)
    run = run_plugin(cni_bin, base_env("CHECK", cni_bin), conf)
    assert (run.rc, run.stdout) == (0, ""), run.stdout
    check = daemons.state.calls[-1].request
    assert list(check.addresses) == ["10.65.0.2/32", "fd00:65::3/128"]  # type: ignore[attr-defined]


def test_check_failures(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    prev = add(cni_bin, conf)
    # The runtime's prevResult names another interface.
    conf["prevResult"] = prev
    err = run_plugin(cni_bin, base_env("CHECK", cni_bin, CNI_IFNAME="net1"), conf).error
    assert err["code"] == 102 and "net1" in err["msg"]
    # An address of prevResult is no longer held by IPAM.
    stale = copy.deepcopy(prev)
    stale["ips"][0]["address"] = "10.65.0.99/32"
    conf["prevResult"] = stale
    err = run_plugin(cni_bin, base_env("CHECK", cni_bin), conf).error
    assert err["code"] == 102 and "10.65.0.99/32" in err["msg"]
    # Felix finds the dataplane differs.
    conf["prevResult"] = prev
    daemons.state.check_problems.append("route 0.0.0.0/0 missing in pod")
    err = run_plugin(cni_bin, base_env("CHECK", cni_bin), conf).error
    assert err["code"] == 102 and "route 0.0.0.0/0 missing" in err["msg"]


def test_status(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    run = run_plugin(cni_bin, base_env("STATUS", cni_bin), conf)
    assert (run.rc, run.stdout) == (0, "")
    daemons.set_serving(False)
    err = run_plugin(cni_bin, base_env("STATUS", cni_bin), conf).error
    assert err["code"] == 50 and "NOT SERVING" in err["msg"].upper().replace("_", " ")


def test_status_daemons_down(cni_bin: Path, tmp_path: Path) -> None:
    conf = netconf(str(tmp_path / "ipam.sock"), str(tmp_path / "felix.sock"))
    err = run_plugin(cni_bin, base_env("STATUS", cni_bin), conf).error
    assert err["code"] == 50
    assert "calico-ipamd" in err["msg"] and "calico-felix" in err["msg"]


def test_status_one_daemon_down(cni_bin: Path, daemons: FakeDaemons, tmp_path: Path) -> None:
    conf = netconf(daemons.ipam_socket, str(tmp_path / "felix.sock"))
    err = run_plugin(cni_bin, base_env("STATUS", cni_bin), conf).error
    assert err["code"] == 50
    assert "calico-felix" in err["msg"] and "calico-ipamd" not in err["msg"]


def test_gc_releases_attachments_not_listed(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    for cid in ("keep1", "keep2", "gone1", "gone2"):
        add(cni_bin, conf, CNI_CONTAINERID=cid, CNI_ARGS=f"K8S_POD_NAME={cid}")
    conf["cni.dev/valid-attachments"] = [
        {"containerID": "keep1", "ifname": "eth0"},
        {"containerID": "keep2", "ifname": "eth0"},
    ]
    run = run_plugin(cni_bin, base_env("GC", cni_bin), conf)
    assert (run.rc, run.stdout) == (0, ""), run.stdout
    assert sorted(daemons.state.allocations) == [
        "k8s-pod-network.keep1",
        "k8s-pod-network.keep2",
    ]
    assert sorted(cid for cid, _ in daemons.state.endpoints) == ["keep1", "keep2"]
    # GC again: nothing left to collect, so it only lists (endpoints, then IPAM handles).
    before = len(daemons.state.calls)
    assert run_plugin(cni_bin, base_env("GC", cni_bin), conf).rc == 0
    assert daemons.state.methods()[before:] == ["ListEndpoints", "ListHandles"]


def test_gc_keeps_address_of_container_with_other_valid_attachment(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    add(cni_bin, conf)
    add(cni_bin, conf, CNI_IFNAME="net1")
    conf["cni.dev/attachments"] = [{"containerID": CONTAINER_ID, "ifname": "eth0"}]
    assert run_plugin(cni_bin, base_env("GC", cni_bin), conf).rc == 0
    assert list(daemons.state.endpoints) == [(CONTAINER_ID, "eth0")]
    assert HANDLE in daemons.state.allocations


def test_gc_empty_list_collects_everything(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    add(cni_bin, conf)
    conf["cni.dev/valid-attachments"] = []
    assert run_plugin(cni_bin, base_env("GC", cni_bin), conf).rc == 0
    assert daemons.state.allocations == {} and daemons.state.endpoints == {}
