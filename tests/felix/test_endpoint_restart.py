"""Felix restarts (SIGKILL, then start) keep endpoints working; etcd; per-operation timings."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from calico.felix.v1 import endpoints_pb2 as pb
from libcalico.config import DatastoreConfig
from tests.felix.conftest import (
    FelixHarness,
    Namespaces,
    ip_json,
    ping,
    run,
    start_harness,
    stop_harness,
)
from tests.felix.helpers import eventually, get_wep, put_pod, setup_request

pytestmark = pytest.mark.netns


def link_identity(netns: str, dev: str) -> tuple[int, str]:
    (link,) = ip_json(netns, "link", "show", "dev", dev)
    return link["ifindex"], link["address"]


async def test_restart_finds_endpoints_and_changes_nothing(felix: FelixHarness) -> None:
    a, b = felix.new_pod_netns(), felix.new_pod_netns()
    ra = await felix.stub.SetupEndpoint(setup_request("a", felix.netns_path(a), ["10.66.0.2/26"]))
    rb = await felix.stub.SetupEndpoint(setup_request("b", felix.netns_path(b), ["10.66.0.3/26"]))
    before = {
        "host_a": link_identity(felix.node, ra.host_interface.name),
        "host_b": link_identity(felix.node, rb.host_interface.name),
        "pod_a": link_identity(a, "eth0"),
        "pod_b": link_identity(b, "eth0"),
    }
    # A leftover of a teardown cut short by the crash: a cali* link that is down, no endpoint.
    run(
        "ip",
        "link",
        "add",
        "cali00000000000",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
        netns=felix.node,
    )

    felix.felix.kill()  # SIGKILL: no cleanup at all
    assert ping(a, "10.66.0.3")  # the kernel keeps forwarding while Felix is down
    await felix.felix.start()
    await felix.reconnect()

    listed = await felix.stub.ListEndpoints(pb.ListEndpointsRequest())
    assert sorted((e.id.pod, e.host_interface, e.programmed) for e in listed.endpoints) == [
        ("a", ra.host_interface.name, True),
        ("b", rb.host_interface.name, True),
    ]
    after = {
        "host_a": link_identity(felix.node, ra.host_interface.name),
        "host_b": link_identity(felix.node, rb.host_interface.name),
        "pod_a": link_identity(a, "eth0"),
        "pod_b": link_identity(b, "eth0"),
    }
    assert after == before  # nothing recreated
    assert ping(a, "10.66.0.3") and ping(b, "10.66.0.2")

    async def links() -> list[str]:
        return [link["ifname"] for link in ip_json(felix.node, "link", "show")]

    await eventually(links, lambda names: "cali00000000000" not in names)

    # The adopted endpoints still follow label changes and can be checked and torn down.
    await put_pod(felix.datastore, "default", "a", {"after": "restart"})

    async def labels() -> dict[str, str]:
        wep = await get_wep(felix.datastore, "default", ra.workload_endpoint)
        assert wep is not None
        return dict(wep["metadata"]["labels"])

    await eventually(labels, lambda lab: lab.get("after") == "restart")
    req_a = setup_request("a", felix.netns_path(a), ["10.66.0.2/26"])
    check = await felix.stub.CheckEndpoint(
        pb.CheckEndpointRequest(id=req_a.id, netns=felix.netns_path(a))
    )
    assert check.ok, check.problems
    # A repeated ADD of an adopted endpoint reports the MTUs its veth ends have (read from the
    # kernel: the new Felix never set them) and recreates nothing.
    rb_again = await felix.stub.SetupEndpoint(
        setup_request("b", felix.netns_path(b), ["10.66.0.3/26"])
    )
    assert (rb_again.host_interface.mtu, rb_again.container_interface.mtu) == (
        rb.host_interface.mtu,
        rb.container_interface.mtu,
    )
    assert rb.host_interface.mtu > 0 and rb.container_interface.mtu > 0
    assert link_identity(b, "eth0") == before["pod_b"]
    td = await felix.stub.TeardownEndpoint(
        pb.TeardownEndpointRequest(id=req_a.id, netns=felix.netns_path(a))
    )
    assert td.removed
    assert not ping(b, "10.66.0.2")


async def test_setup_and_teardown_on_etcd(
    namespaces: Namespaces, node: str, etcd_config: DatastoreConfig, tmp_path: Path
) -> None:
    h = await start_harness(namespaces, node, etcd_config, tmp_path)
    try:
        await put_pod(h.datastore, "default", "e1", {"store": "etcd"})
        pod = h.new_pod_netns()
        req = setup_request("e1", h.netns_path(pod), ["10.67.0.2/26"])
        resp = await h.stub.SetupEndpoint(req)
        wep = await get_wep(h.datastore, "default", resp.workload_endpoint)
        assert wep is not None and wep["metadata"]["labels"]["store"] == "etcd"
        await put_pod(h.datastore, "default", "e1", {"store": "etcd", "v": "2"})

        async def labels() -> dict[str, str]:
            got = await get_wep(h.datastore, "default", resp.workload_endpoint)
            assert got is not None
            return dict(got["metadata"]["labels"])

        await eventually(labels, lambda lab: lab.get("v") == "2")
        td = pb.TeardownEndpointRequest(id=req.id, netns=h.netns_path(pod))
        assert (await h.stub.TeardownEndpoint(td)).removed
        assert await get_wep(h.datastore, "default", resp.workload_endpoint) is None
    finally:
        await stop_harness(h)


async def test_setup_and_teardown_timings(felix: FelixHarness) -> None:
    """Felix's share of a CNI ADD/DEL, measured at the gRPC client (printed for the report)."""
    count = 20
    pods = [felix.new_pod_netns() for _ in range(count)]
    setup_ms: list[float] = []
    teardown_ms: list[float] = []
    requests = []
    for i, pod in enumerate(pods):
        req = setup_request(f"t{i}", felix.netns_path(pod), [f"10.68.0.{i + 2}/24"])
        requests.append(req)
        started = time.perf_counter()
        await felix.stub.SetupEndpoint(req)
        setup_ms.append((time.perf_counter() - started) * 1000)
    for req, pod in zip(requests, pods, strict=True):
        started = time.perf_counter()
        await felix.stub.TeardownEndpoint(
            pb.TeardownEndpointRequest(id=req.id, netns=felix.netns_path(pod))
        )
        teardown_ms.append((time.perf_counter() - started) * 1000)
    setup_p50 = statistics.median(setup_ms)
    teardown_p50 = statistics.median(teardown_ms)
    print(f"felix setup p50 {setup_p50:.2f} ms, teardown p50 {teardown_p50:.2f} ms")
    # Generous bounds (a loaded CI machine); the report quotes the measured figures.
    assert setup_p50 < 50
    assert teardown_p50 < 50
