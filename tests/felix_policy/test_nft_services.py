"""Services in the nftables dataplane, with real traffic (one topology for the module).

The dataplane is driven directly with a DataplaneState (what the calc graph would produce):
ClusterIP balancing, affinity, no-endpoint reject, hairpin, NodePort / external IPs with both
external traffic policies, internal traffic policy Local, policy through a service, UDP
conntrack cleanup, deltas, refresh repairs, a restart that rewrites nothing, and outgoing
NAT beside it.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from services.felix.calc.model import (
    Action,
    DataplaneState,
    EndpointPolicy,
    Match,
    PolicyProgram,
    Rule,
    ServiceBackend,
    ServicePort,
    StateDelta,
)
from services.felix.dataplane import nft_services as svc
from services.felix.dataplane.nft_dataplane import NftablesDataplane
from services.felix.dataplane.svc_names import (
    affinity_set,
    cluster_chain,
    endpoint_chain,
    external_chain,
    service_hash,
)
from services.felix.natout.rules import NFT_TABLE, render_nft
from tests.felix_policy.conftest import kernel_available
from tests.felix_policy.svclab import (
    CONNECTED,
    NO_ANSWER,
    NODE_IP,
    OUTSIDE_IP,
    POD_CIDR,
    REFUSED,
    Answer,
    ServiceLab,
    sh,
)

pytestmark = pytest.mark.netns

TCP, UDP = 6, 17
PODS = {
    "a": "10.65.0.2",
    "c": "10.65.0.3",
    "b1": "10.65.0.11",
    "b2": "10.65.0.12",
    "b3": "10.65.0.13",
}
ALLOW = (Rule(Action.ALLOW),)
ALLOW_ALL = PolicyProgram("allow-all", inbound=ALLOW, outbound=ALLOW)


@pytest.fixture(scope="module")
def lab() -> Iterator[ServiceLab]:
    reason = kernel_available()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    lab = ServiceLab()
    try:
        for name, ip in PODS.items():
            lab.add_pod(name, ip)
        yield lab
    finally:
        lab.close()


def backend(name: str, port: int = 80, local: bool = True) -> ServiceBackend:
    return ServiceBackend(PODS[name], port, local)


def service(
    name: str, cluster_ip: str, backends: list[ServiceBackend], protocol: int = TCP, **kw: object
) -> ServicePort:
    return ServicePort(
        id=f"t/{name}//{protocol}",
        namespace="t",
        service=name,
        port_name="",
        protocol=protocol,
        port=kw.pop("port", 80 if protocol == TCP else 53),  # type: ignore[arg-type]
        cluster_ips=(cluster_ip,),
        backends=tuple(sorted(backends, key=lambda b: (b.address, b.port))),
        **kw,  # type: ignore[arg-type]
    )


def make_state(lab: ServiceLab, *ports: ServicePort) -> DataplaneState:
    state = DataplaneState(pod_cidrs=(POD_CIDR,))
    state.profiles["allow-all"] = ALLOW_ALL
    for name, ip in PODS.items():
        iface = lab.hosts[name].iface
        state.endpoints[iface] = EndpointPolicy(
            iface, f"wep/{name}", (f"{ip}/32",), (), (), ("allow-all",)
        )
    for sp in ports:
        state.service_ports[sp.id] = sp
    return state


@pytest_asyncio.fixture
async def dataplane(lab: ServiceLab) -> AsyncIterator[NftablesDataplane]:
    lab.nft("delete", "table", "inet", "calico", check=False)
    dp = NftablesDataplane(lab.node_path)
    await dp.start()
    try:
        yield dp
    finally:
        await dp.close()
        lab.nft("delete", "table", "inet", "calico", check=False)
        lab.nft("delete", "table", "ip", NFT_TABLE, check=False)
        sh("ip", "netns", "exec", lab.node_ns, "conntrack", "-F", check=False)


def served(answers: list[Answer]) -> collections.Counter[str]:
    return collections.Counter(a.server or a.outcome for a in answers)


async def test_cluster_ip_balances_keeps_pod_source_and_masquerades_others(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    one = service("one", "10.96.0.1", [backend("b1")])
    three = service("three", "10.96.0.3", [backend(n) for n in ("b1", "b2", "b3")])
    # SCTP is programmed (this kernel has no SCTP sockets to probe it with).
    sctp = service("three", "10.96.0.3", [backend("b1", 9999)], protocol=132, port=9999)
    await dataplane.reconcile(make_state(lab, one, three, sctp))
    assert "meta l4proto sctp dnat ip to 10.65.0.11:9999" in lab.nft(
        "list", "chain", "inet", "calico", cluster_chain(sctp.id)
    )

    answers = [lab.tcp("a", "10.96.0.1", 80) for _ in range(20)]
    assert {(x.outcome, x.server, x.client) for x in answers} == {(CONNECTED, "b1", PODS["a"])}

    counts = served([lab.tcp("a", "10.96.0.3", 80) for _ in range(300)])
    print("300 connections over 3 backends:", dict(counts))
    assert set(counts) == {"b1", "b2", "b3"}
    assert min(counts.values()) >= 60  # expected 100 each (binomial sd ~8)

    # Above 16 backends the choice is one anonymous numgen map lookup instead of a cascade.
    many = [backend(n, port) for n in ("b1", "b2", "b3") for port in range(80, 86)]
    await dataplane.reconcile(make_state(lab, one, three, service("many", "10.96.0.4", many)))
    counts = served([lab.tcp("a", "10.96.0.4", 80) for _ in range(300)])
    print("300 connections over 18 backends (3 pods):", dict(counts))
    assert set(counts) == {"b1", "b2", "b3"} and min(counts.values()) >= 60

    # Off the pod network: masqueraded (kube-proxy's cluster-CIDR rule); host processes too.
    outside = lab.tcp("outside", "10.96.0.1", 80)
    assert (outside.outcome, outside.server, outside.client) == (CONNECTED, "b1", NODE_IP)
    assert lab.tcp("node", "10.96.0.1", 80).server == "b1"
    assert lab.udp("a", "10.96.0.1", 53).outcome == REFUSED  # no UDP service port
    assert lab.tcp("a", "10.96.0.1", 81).outcome == REFUSED  # not a service port


async def test_no_backends_rejects_tcp_and_udp(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    tcp = service("empty", "10.96.0.5", [])
    udp = service("empty", "10.96.0.5", [], protocol=UDP)
    await dataplane.reconcile(make_state(lab, tcp, udp))
    started = time.monotonic()
    assert lab.tcp("a", "10.96.0.5", 80).outcome == REFUSED  # TCP reset
    assert lab.udp("a", "10.96.0.5", 53).outcome == REFUSED  # ICMP port unreachable
    assert lab.tcp("outside", "10.96.0.5", 80).outcome == REFUSED
    assert lab.tcp("node", "10.96.0.5", 80).outcome == REFUSED
    assert time.monotonic() - started < 0.5  # refused at once, not timed out


async def test_affinity_holds_then_expires(lab: ServiceLab, dataplane: NftablesDataplane) -> None:
    sticky = service(
        "sticky", "10.96.0.7", [backend(n) for n in ("b1", "b2", "b3")], affinity_timeout_s=2
    )
    await dataplane.reconcile(make_state(lab, sticky))
    counts = served([lab.tcp("a", "10.96.0.7", 80) for _ in range(40)])
    print("affinity:", dict(counts))
    assert len(counts) == 1 and next(iter(counts)) in ("b1", "b2", "b3")
    chosen = next(b for b in sticky.backends if b.address == PODS[next(iter(counts))])
    name = affinity_set(sticky.id, chosen, 2)

    def remembered() -> list[object]:
        listing = json.loads(lab.nft("-j", "list", "set", "inet", "calico", name))
        return [s for x in listing["nftables"] if "set" in x for s in x["set"].get("elem", [])]

    assert remembered(), "the client is remembered"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not remembered():
            break
        await asyncio.sleep(0.2)
    assert not remembered(), "the client is forgotten after timeoutSeconds"


async def test_hairpin_is_masqueraded(lab: ServiceLab, dataplane: NftablesDataplane) -> None:
    await dataplane.reconcile(make_state(lab, service("self", "10.96.0.9", [backend("b1")])))
    answer = lab.tcp("b1", "10.96.0.9", 80)
    assert (answer.outcome, answer.server, answer.client) == (CONNECTED, "b1", NODE_IP)


async def test_node_port_and_external_ip_cluster_policy(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    np = service(
        "np", "10.96.1.1", [backend("b1"), backend("b3", local=False)],
        node_port=30080, external_ips=("203.0.113.10",),
    )  # fmt: skip
    udp = service("np", "10.96.1.1", [backend("b2", 53)], protocol=UDP, node_port=30053)
    await dataplane.reconcile(make_state(lab, np, udp))
    for dst, port in ((NODE_IP, 30080), ("203.0.113.10", 80)):
        answers = [lab.tcp("outside", dst, port) for _ in range(40)]
        assert {x.client for x in answers} == {NODE_IP}, "masqueraded: replies come back"
        assert set(served(answers)) == {"b1", "b3"}, "any backend (cluster policy)"
    answer = lab.udp("outside", NODE_IP, 30053)
    assert (answer.outcome, answer.server, answer.client) == (CONNECTED, "b2", NODE_IP)
    assert lab.tcp("a", NODE_IP, 30080).outcome == CONNECTED  # a pod to a node port
    assert lab.tcp("node", NODE_IP, 30080).outcome == CONNECTED  # the host itself
    assert lab.tcp("outside", NODE_IP, 30081).outcome == REFUSED  # the node itself: no listener


async def test_external_traffic_policy_local(lab: ServiceLab, dataplane: NftablesDataplane) -> None:
    local = service(
        "local", "10.96.1.2", [backend("b1"), backend("b3", local=False)],
        node_port=30081, external_ips=("203.0.113.11",), external_local=True,
    )  # fmt: skip
    remote = service(
        "remote", "10.96.1.3", [backend("b3", local=False)],
        node_port=30082, external_ips=("203.0.113.12",), external_local=True,
    )  # fmt: skip
    await dataplane.reconcile(make_state(lab, local, remote))
    for dst, port in ((NODE_IP, 30081), ("203.0.113.11", 80)):
        answers = [lab.tcp("outside", dst, port) for _ in range(30)]
        assert {(x.server, x.client) for x in answers} == {("b1", OUTSIDE_IP)}
    # No local backend: external clients get nothing (dropped, not refused) ...
    assert lab.tcp("outside", NODE_IP, 30082, timeout=0.5).outcome == NO_ANSWER
    assert lab.tcp("outside", "203.0.113.12", 80, timeout=0.5).outcome == NO_ANSWER
    # ... while pods and the host reach any backend (kube-proxy's short-circuit).
    assert lab.tcp("a", NODE_IP, 30082).server == "b3"
    assert lab.tcp("a", "203.0.113.12", 80).server == "b3"
    assert lab.tcp("node", NODE_IP, 30082).server == "b3"
    assert set(served([lab.tcp("a", NODE_IP, 30081) for _ in range(40)])) == {"b1", "b3"}
    assert lab.tcp("a", "10.96.1.3", 80).server == "b3"  # the cluster IP is not affected


async def test_internal_traffic_policy_local(lab: ServiceLab, dataplane: NftablesDataplane) -> None:
    mixed = service(
        "itp", "10.96.2.1", [backend("b1"), backend("b3", local=False)], internal_local=True
    )
    remote = service("itp-remote", "10.96.2.2", [backend("b3", local=False)], internal_local=True)
    await dataplane.reconcile(make_state(lab, mixed, remote))
    assert served([lab.tcp("a", "10.96.2.1", 80) for _ in range(40)]) == {"b1": 40}
    assert (
        lab.tcp("a", "10.96.2.2", 80, timeout=0.5).outcome == NO_ANSWER
    )  # backends, none local: drop


async def test_policy_applies_to_the_backend_through_the_service(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    state = make_state(lab, service("web", "10.96.3.1", [backend("b2")]))
    state.policies["from-a"] = PolicyProgram(
        "from-a", inbound=(Rule(Action.ALLOW, src=Match(nets=(f"{PODS['a']}/32",))),)
    )
    iface = lab.hosts["b2"].iface
    state.endpoints[iface] = EndpointPolicy(
        iface, "wep/b2", (f"{PODS['b2']}/32",), ("from-a",), (), ("allow-all",)
    )
    await dataplane.reconcile(state)
    assert lab.tcp("a", "10.96.3.1", 80).server == "b2"
    assert lab.tcp("c", "10.96.3.1", 80, timeout=0.5).outcome == NO_ANSWER  # denied after DNAT
    assert lab.tcp("c", PODS["b2"], 80, timeout=0.5).outcome == NO_ANSWER


async def test_udp_flows_leave_a_removed_backend(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    dns = service("dns", "10.96.4.1", [backend("b1", 53), backend("b2", 53)], protocol=UDP)
    state = make_state(lab, dns)
    await dataplane.reconcile(state)
    flow = lab.udp_socket("a", "10.96.4.1", 53)
    try:
        first = lab.udp_on("a", flow).server
        assert first in ("b1", "b2")
        # One flow (same source port): conntrack keeps it on its backend.
        assert {lab.udp_on("a", flow).server for _ in range(10)} == {first}
        remaining = [b for b in dns.backends if b.address != PODS[first]]
        state.service_ports[dns.id] = service("dns", "10.96.4.1", remaining, protocol=UDP)
        await dataplane.apply(state, StateDelta(service_ports={dns.id}))
        other = "b2" if first == "b1" else "b1"
        assert {lab.udp_on("a", flow).server for _ in range(5)} == {other}
    finally:
        flow.close()


async def test_no_connection_reaches_a_removed_backend_once_applied(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    web = service("loop", "10.96.9.1", [backend(n) for n in ("b1", "b2", "b3")])
    state = make_state(lab, web)
    await dataplane.reconcile(state)
    results: list[tuple[float, float, Answer]] = []  # started, finished, answer
    stop = threading.Event()

    def loop() -> None:  # a client connecting over and over, on its own thread
        while not stop.is_set():
            started = time.monotonic()  # a connection started after an apply returned
            answer = lab.tcp("a", "10.96.9.1", 80)
            results.append((started, time.monotonic(), answer))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        await asyncio.sleep(0.3)
        state.service_ports[web.id] = service("loop", "10.96.9.1", [backend("b1"), backend("b2")])
        await dataplane.apply(state, StateDelta(service_ports={web.id}))
        enforced = time.monotonic()
        await asyncio.sleep(0.3)
        changing = time.monotonic()  # b3 comes back from here on
        state.service_ports[web.id] = service("loop", "10.96.9.1", [backend("b2"), backend("b3")])
        await dataplane.apply(state, StateDelta(service_ports={web.id}))
        added = time.monotonic()
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=5)
    # Started after a change was applied; for "between", also over before the next began.
    before = served([a for t, _, a in results if t < enforced])
    between = served([a for t, end, a in results if enforced < t and end < changing])
    after = served([a for t, _, a in results if t > added])
    print("before", dict(before), "between", dict(between), "after", dict(after))
    assert set(before) == {"b1", "b2", "b3"}
    assert set(between) == {"b1", "b2"}, "b3 removed: no new connection reaches it"
    assert set(after) == {"b2", "b3"}, "b1 removed, b3 back"


async def test_a_service_change_is_a_small_transaction(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    web = service("web", "10.96.5.1", [backend("b1")], node_port=30090)
    other = service("other", "10.96.5.2", [backend("b2")])
    state = make_state(lab, web, other)
    await dataplane.reconcile(state)
    assert served([lab.tcp("a", "10.96.5.1", 80) for _ in range(10)]) == {"b1": 10}

    state.service_ports[web.id] = service(
        "web", "10.96.5.1", [backend("b1"), backend("b3")], node_port=30090
    )
    await dataplane.apply(state, StateDelta(service_ports={web.id}))
    script = dataplane.last_script
    print(script)
    assert service_hash(other.id) not in script
    written = set(re.findall(r"^(?:add chain|flush chain|add rule) \S+ \S+ (\S+)", script, re.M))
    assert written == {cluster_chain(web.id)}  # no chain per endpoint without affinity
    assert "flush map" not in script and "flush set" not in script
    assert len(script.splitlines()) <= 5
    assert set(served([lab.tcp("a", "10.96.5.1", 80) for _ in range(60)])) == {"b1", "b3"}

    # Removing the service deletes its chains and map entries only.
    del state.service_ports[web.id]
    await dataplane.apply(state, StateDelta(service_ports={web.id}))
    assert service_hash(other.id) not in dataplane.last_script
    # No longer a service address: not answered (routed on, back and forth, until TTL).
    gone = lab.tcp("a", "10.96.5.1", 80, timeout=0.5)
    assert gone.outcome == NO_ANSWER or gone.errno != errno.ECONNREFUSED, gone  # ICMP time exceeded
    assert lab.tcp("outside", NODE_IP, 30090).outcome == REFUSED  # the node: no listener
    assert lab.tcp("a", "10.96.5.2", 80).server == "b2"
    listing = lab.nft("list", "table", "inet", "calico")
    assert service_hash(web.id) not in listing


async def test_refresh_repairs_hand_deleted_service_objects(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    web = service("web", "10.96.6.1", [backend("b1")], node_port=30091, affinity_timeout_s=60)
    state = make_state(lab, web)
    await dataplane.reconcile(state)
    assert lab.tcp("a", "10.96.6.1", 80).server == "b1"

    lab.nft("delete", "element", "inet", "calico", svc.SVC_IPS, "{ 10.96.6.1 . 6 . 80 }")
    lab.nft("delete", "element", "inet", "calico", svc.SVC_NODEPORTS, "{ 6 . 30091 }")
    lab.nft("flush", "chain", "inet", "calico", external_chain(web.id))  # refers to it
    lab.nft("flush", "chain", "inet", "calico", cluster_chain(web.id))
    lab.nft("delete", "chain", "inet", "calico", cluster_chain(web.id))
    lab.nft("flush", "chain", "inet", "calico", endpoint_chain(web.id, backend("b1")))
    assert lab.tcp("a", "10.96.6.1", 80).outcome == REFUSED  # a cluster IP, no service port
    assert lab.tcp("outside", NODE_IP, 30091).outcome == REFUSED  # the node: no listener

    repairs = await dataplane.reconcile(state)
    print("repairs:", repairs)
    assert repairs >= 3
    assert lab.tcp("a", "10.96.6.1", 80).server == "b1"
    assert lab.tcp("outside", NODE_IP, 30091).server == "b1"
    assert await dataplane.reconcile(state) == 0


def _handles(lab: ServiceLab) -> list[str]:
    return re.findall(r"# handle \d+", lab.nft("-a", "list", "table", "inet", "calico"))


async def test_restart_keeps_services_and_rewrites_nothing(
    lab: ServiceLab, dataplane: NftablesDataplane
) -> None:
    state = make_state(
        lab,
        service("web", "10.96.7.1", [backend("b1"), backend("b2")], node_port=30092),
        service("dns", "10.96.7.1", [backend("b3", 53)], protocol=UDP, affinity_timeout_s=60),
    )
    await dataplane.reconcile(state)
    flow = lab.udp_socket("a", "10.96.7.1", 53)
    try:
        assert lab.udp_on("a", flow).server == "b3"
        before = _handles(lab)
        # A new driver on the same kernel (what a Felix killed with -9 starts with).
        restarted = NftablesDataplane(lab.node_path)
        try:
            await restarted.start()
            assert _handles(lab) == before, "start() leaves an existing table alone"
            assert lab.udp_on("a", flow).server == "b3", "established flows keep working"
            assert set(served([lab.tcp("a", "10.96.7.1", 80) for _ in range(30)])) == {
                "b1",
                "b2",
            }
            assert lab.tcp("outside", NODE_IP, 30092).outcome == CONNECTED
            assert await restarted.reconcile(state) == 0
            assert _handles(lab) == before, "identical state: not one rule rewritten"
        finally:
            await restarted.close()
    finally:
        flow.close()


async def test_outgoing_nat_beside_services(lab: ServiceLab, dataplane: NftablesDataplane) -> None:
    # Pool with natOutgoing: pod -> outside is masqueraded by table ip calico-nat.
    sh(
        "ip", "netns", "exec", lab.node_ns, "nft", "-f", "-",
        input_text=render_nft([POD_CIDR], [POD_CIDR]),
    )  # fmt: skip
    await dataplane.reconcile(
        make_state(
            lab,
            service("web", "10.96.8.1", [backend("b1")]),
            service("self", "10.96.8.2", [backend("b2")]),
        )
    )
    answer = lab.tcp("a", "10.96.8.1", 80)
    assert (answer.server, answer.client) == ("b1", PODS["a"]), "pod -> service keeps source"
    answer = lab.tcp("a", OUTSIDE_IP, 80)
    assert (answer.server, answer.client) == ("outside", NODE_IP), "natOutgoing still applies"
    assert lab.tcp("b2", "10.96.8.2", 80).client == NODE_IP  # hairpin
