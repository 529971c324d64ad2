"""Services in the iptables dataplane (both flavours), with real TCP/UDP traffic.

One topology for the module (svclab: a node, four pods, an outside client); per flavour one
IptablesDataplane driven with a DataplaneState directly, changed by deltas (as the engine
does). Felix's outgoing NAT (cali-nat-outgoing, natOutgoing on the pod pool) is installed
beside it throughout, as a node with such a pool has it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

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
from services.felix.dataplane import ipt_services as svc
from services.felix.dataplane.ipt_dataplane import IptablesDataplane
from services.felix.natout.rules import IPT_CHAIN, render_iptables
from tests.felix_policy.svclab import (
    CONNECTED,
    NO_ANSWER,
    NODE,
    NODE_IP,
    OUTSIDE,
    OUTSIDE_IP,
    POD_CIDR,
    REFUSED,
    Answer,
    ServiceLab,
    sh,
)

pytestmark = pytest.mark.netns

POOL = POD_CIDR
PODS = {"a": "10.65.0.11", "b": "10.65.0.12", "c": "10.65.0.13", "d": "10.65.0.14"}
TCP, UDP, SCTP = 6, 17, 132


def iface(pod: str) -> str:
    return ServiceLab.iface(pod)


def flavours() -> list[str]:
    return [f for f in ("iptables", "iptables-legacy") if shutil.which(f"{f}-restore")]


def backend(pod: str, port: int = 80, local: bool = True) -> ServiceBackend:
    return ServiceBackend(PODS[pod], port, local)


def service(
    name: str, cip: str, *backends: ServiceBackend, protocol: int = TCP, port: int = 80, **kw: Any
) -> ServicePort:
    """A ServicePort as svc-data's calculation makes it (backends sorted)."""
    return ServicePort(
        id=f"ns/{name}//{protocol}",
        namespace="ns",
        service=name,
        port_name="",
        protocol=protocol,
        port=port,
        cluster_ips=(cip,),
        backends=tuple(sorted(backends, key=lambda b: b.address)),
        **kw,
    )


ALLOW = PolicyProgram("allow", inbound=(Rule(Action.ALLOW),), outbound=(Rule(Action.ALLOW),))


def base_state() -> DataplaneState:
    state = DataplaneState(pod_cidrs=(POOL,))
    state.profiles["allow"] = ALLOW
    for pod, ip in PODS.items():
        state.endpoints[iface(pod)] = EndpointPolicy(
            iface(pod), f"ep-{pod}", (f"{ip}/32",), (), (), ("allow",)
        )
    return state


class Recording(IptablesDataplane):
    """The driver, also keeping what it wrote (stdin of each write)."""

    def __init__(self, path: str, legacy: bool) -> None:
        super().__init__(path, legacy=legacy)
        self.writes: list[str] = []

    async def _exec(self, argv: list[str], stdin: str | None = None) -> str:
        if stdin:
            self.writes.append(stdin)
        return await super()._exec(argv, stdin)


@dataclass
class Env:
    lab: ServiceLab
    dp: Recording
    legacy: bool
    state: DataplaneState = field(default_factory=base_state)

    def set(self, *ports: ServicePort) -> list[str]:
        """Replace the services by ``ports`` with one delta; returns what was written."""
        wanted = {p.id: p for p in ports}
        changed = {
            i
            for i in {*wanted, *self.state.service_ports}
            if wanted.get(i) != self.state.service_ports.get(i)
        }
        self.state.service_ports = wanted
        self.dp.writes.clear()
        asyncio.run(self.dp.apply(self.state, StateDelta(service_ports=changed)))
        return list(self.dp.writes)

    def endpoints(self, **policies: tuple[str, ...]) -> None:
        """Set the ingress policies of some pods' endpoints."""
        for pod, ids in policies.items():
            ep = self.state.endpoints[iface(pod)]
            self.state.endpoints[iface(pod)] = replace(ep, ingress_policies=ids)
        touched = {iface(p) for p in policies}
        delta = StateDelta(policies=set(self.state.policies), endpoints=touched)
        asyncio.run(self.dp.apply(self.state, delta))

    def nat(self) -> str:
        return self.lab.ipt("-t", "nat", "-S", legacy=self.legacy)


def served(answers: list[Answer]) -> set[str | None]:
    assert all(a.outcome == CONNECTED for a in answers), answers
    return {a.server for a in answers}


def clients(answers: list[Answer]) -> set[str | None]:
    return {a.client for a in answers}


@pytest.fixture(scope="module")
def lab() -> Iterator[ServiceLab]:
    if os.geteuid() != 0 or shutil.which("ipset") is None:
        print("SKIP: needs root and ipset")
        pytest.skip("needs root and ipset")
    lab = ServiceLab()
    try:
        for pod, ip in PODS.items():
            lab.add_pod(pod, ip)
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module", params=flavours())
def env(request: pytest.FixtureRequest, lab: ServiceLab) -> Iterator[Env]:
    legacy = str(request.param).endswith("legacy")
    lab.clean_rules()
    try:
        dp = Recording(lab.node_path, legacy)
        env = Env(lab, dp, legacy)
        asyncio.run(dp.start())
        asyncio.run(dp.reconcile(env.state))
        # Outgoing NAT for the pool, as services/felix/natout writes it (POSTROUTING -A).
        restore = "iptables-legacy-restore" if legacy else "iptables-nft-restore"
        sh(
            "ip",
            "netns",
            "exec",
            lab.node_ns,
            restore,
            "--noflush",
            input_text=render_iptables([POOL], [POOL]),
        )
        lab.ipt("-t", "nat", "-A", "POSTROUTING", "-j", IPT_CHAIN, legacy=legacy)
        yield env
    finally:
        lab.clean_rules()


def test_cluster_ip_one_and_three_backends(env: Env) -> None:
    env.set(
        service("one", "10.96.0.1", backend("b")),
        service("three", "10.96.0.3", *(backend(p, 8080) for p in "abc")),
        service("three-udp", "10.96.0.3", *(backend(p) for p in "abc"), protocol=UDP, port=53),
        service("sctp", "10.96.0.4", backend("a"), protocol=SCTP),
    )
    one = env.lab.probe("d", "10.96.0.1", 80, tries=3)
    assert served(one) == {"b"} and clients(one) == {PODS["d"]}
    tcp = env.lab.probe("d", "10.96.0.3", 80, tries=30)
    assert served(tcp) == {"a", "b", "c"} and clients(tcp) == {PODS["d"]}
    udp = env.lab.probe("d", "10.96.0.3", 53, "UDP", tries=30)
    assert served(udp) == {"a", "b", "c"} and clients(udp) == {PODS["d"]}
    # SCTP cannot be probed here (no SCTP sockets), but its DNAT is in the kernel.
    sctp = [ln for ln in env.nat().splitlines() if "-p sctp" in ln and "-j DNAT" in ln]
    assert len(sctp) == 1 and f"--to-destination {PODS['a']}:80" in sctp[0]


def test_session_affinity_holds(env: Env) -> None:
    env.set(service("sticky", "10.96.0.5", *(backend(p) for p in "abc"), affinity_timeout_s=600))
    for client in ("d", "c"):
        answers = env.lab.probe(client, "10.96.0.5", 80, tries=15)
        assert len(served(answers)) == 1, answers


def test_no_backends_rejects_then_serves(env: Env) -> None:
    empty_tcp = service("none", "10.96.0.6")
    empty_udp = service("none", "10.96.0.6", protocol=UDP)
    env.set(empty_tcp, empty_udp)
    for proto in ("TCP", "UDP"):
        answers = env.lab.probe("a", "10.96.0.6", 80, proto, tries=2)
        assert all(a.outcome == REFUSED and a.errno == errno.ECONNREFUSED for a in answers), answers
    serving = (backend("b"),)
    env.set(replace(empty_tcp, backends=serving), replace(empty_udp, backends=serving))
    for proto in ("TCP", "UDP"):
        assert served(env.lab.probe("a", "10.96.0.6", 80, proto)) == {"b"}


def test_udp_flows_leave_a_removed_backend(env: Env) -> None:
    """One UDP flow (one source port) stays on its backend through conntrack; once that
    backend is removed, the apply deletes the flow's entry and it moves to the other."""
    dns = service("dns", "10.96.0.23", backend("b", 53), backend("c", 53), protocol=UDP, port=53)
    env.set(dns)
    flow = env.lab.udp_socket("a", "10.96.0.23", 53)
    try:
        first = env.lab.udp_on("a", flow).server
        assert first in ("b", "c")
        assert {env.lab.udp_on("a", flow).server for _ in range(10)} == {first}
        other = "c" if first == "b" else "b"
        env.set(replace(dns, backends=(backend(other, 53),)))
        assert {env.lab.udp_on("a", flow).server for _ in range(5)} == {other}
    finally:
        flow.close()


def test_hairpin(env: Env) -> None:
    env.set(
        service("self", "10.96.0.7", backend("a")),
        service("self", "10.96.0.7", backend("a"), protocol=UDP),
    )
    for proto in ("TCP", "UDP"):
        answers = env.lab.probe("a", "10.96.0.7", 80, proto, tries=3)
        # Served by itself, source-NATed to the node (else the reply would not come back).
        assert served(answers) == {"a"} and PODS["a"] not in clients(answers), answers
    assert clients(env.lab.probe("b", "10.96.0.7", 80)) == {PODS["b"]}


def test_node_ports(env: Env) -> None:
    env.set(
        service("np", "10.96.0.8", backend("b"), node_port=30080),
        service("np", "10.96.0.8", backend("b"), node_port=30080, protocol=UDP),
        service(
            "local",
            "10.96.0.9",
            backend("a"),
            backend("d", local=False),
            node_port=30081,
            external_local=True,
        ),
        service(
            "remote", "10.96.0.10", backend("d", local=False), node_port=30082, external_local=True
        ),
        service("empty", "10.96.0.11", node_port=30083),
    )
    for proto in ("TCP", "UDP"):
        answers = env.lab.probe(OUTSIDE, NODE_IP, 30080, proto, tries=3)
        assert served(answers) == {"b"} and clients(answers) == {NODE_IP}  # masqueraded
    local = env.lab.probe(OUTSIDE, NODE_IP, 30081, tries=10)
    assert served(local) == {"a"} and clients(local) == {OUTSIDE_IP}  # client address kept
    assert env.lab.probe(OUTSIDE, NODE_IP, 30082, timeout=0.5)[0].outcome == NO_ANSWER
    assert env.lab.probe(OUTSIDE, NODE_IP, 30083)[0].outcome == REFUSED
    # The cluster IP of a NodePort service keeps the pod's source; a pod reaches the node
    # port on its own node's address too (masqueraded, as external traffic).
    assert clients(env.lab.probe("c", "10.96.0.8", 80)) == {PODS["c"]}
    assert served(env.lab.probe("c", NODE_IP, 30080)) == {"b"}


def test_from_the_node_itself(env: Env) -> None:
    """nat OUTPUT: a host process reaches a cluster IP (masqueraded: its source is no pod's)
    and is refused by one without backends (filter OUTPUT)."""
    env.set(service("web", "10.96.0.20", backend("b")), service("none", "10.96.0.21"))
    answers = env.lab.probe(NODE, "10.96.0.20", 80, tries=3)
    assert served(answers) == {"b"} and clients(answers) <= {NODE_IP}
    assert env.lab.probe(NODE, "10.96.0.21", 80)[0].errno == errno.ECONNREFUSED


def test_external_ips(env: Env) -> None:
    env.set(service("ext", "10.96.0.12", backend("c"), external_ips=("203.0.113.10",)))
    answers = env.lab.probe(OUTSIDE, "203.0.113.10", 80, tries=3)
    assert served(answers) == {"c"} and clients(answers) == {NODE_IP}
    assert clients(env.lab.probe("a", "10.96.0.12", 80)) == {PODS["a"]}


def test_internal_traffic_policy_local(env: Env) -> None:
    env.set(
        service("itp", "10.96.0.13", backend("a"), backend("d", local=False), internal_local=True),
        service("itp-remote", "10.96.0.14", backend("d", local=False), internal_local=True),
    )
    assert served(env.lab.probe("c", "10.96.0.13", 80, tries=10)) == {"a"}
    assert env.lab.probe("c", "10.96.0.14", 80, timeout=0.5)[0].outcome == NO_ANSWER


def test_policy_applies_after_dnat(env: Env) -> None:
    env.state.policies["deny-c"] = PolicyProgram(
        "deny-c",
        inbound=(
            Rule(Action.DENY, src=Match(nets=(f"{PODS['c']}/32",))),
            Rule(Action.ALLOW),
        ),
    )
    env.set(service("web", "10.96.0.15", backend("b")))
    env.endpoints(b=("deny-c",))
    try:
        assert env.lab.probe("c", "10.96.0.15", 80, timeout=0.5)[0].outcome == NO_ANSWER
        answers = env.lab.probe("a", "10.96.0.15", 80)
        assert served(answers) == {"b"} and clients(answers) == {PODS["a"]}
    finally:
        env.endpoints(b=())
    assert served(env.lab.probe("c", "10.96.0.15", 80)) == {"b"}


def test_delta_rewrites_only_that_service(env: Env) -> None:
    web = service("web", "10.96.0.16", backend("a"), backend("b"))
    other = service("other", "10.96.0.17", backend("c"), node_port=30090)
    env.set(web, other)
    writes = env.set(replace(web, backends=(backend("a"), backend("c"))), other)
    text = "".join(writes)
    declared = {ln[1:].split()[0] for ln in text.splitlines() if ln.startswith(":")}
    assert declared == {svc.svc_chain(web.id)}, text  # its pick rewritten, nothing else
    assert svc.svc_chain(other.id) not in text and svc.SERVICES not in declared
    assert served(env.lab.probe("d", "10.96.0.16", 80, tries=20)) == {"a", "c"}
    # A cluster IP change edits its dispatch line in place: -D the old, -I the new.
    writes = env.set(replace(web, cluster_ips=("10.96.0.18",)), other)
    edits = [ln.split()[:2] for ln in "".join(writes).splitlines() if ln.startswith(("-D", "-I"))]
    assert edits == [["-D", svc.SERVICES], ["-I", svc.SERVICES]]
    assert served(env.lab.probe("d", "10.96.0.18", 80)) <= {"a", "b"}
    assert asyncio.run(env.dp.reconcile(env.state)) == 0  # line edits left the kernel right


def test_refresh_repairs_and_restart_keeps_rules(env: Env) -> None:
    web = service("web", "10.96.0.19", backend("b"))
    env.set(web)
    nat = env.nat().splitlines()
    for line in (
        next(ln for ln in nat if f"-j {svc.svc_chain(web.id)}" in ln),  # its dispatch line
        next(ln for ln in nat if ln.startswith("-A PREROUTING") and svc.SERVICES in ln),
    ):
        env.lab.ipt("-t", "nat", *shlex.split(line.replace("-A", "-D", 1)), legacy=env.legacy)
    env.lab.ipt("-t", "nat", "-F", svc.svc_chain(web.id), legacy=env.legacy)
    assert env.lab.probe("a", "10.96.0.19", 80, timeout=0.5)[0].outcome != CONNECTED
    assert asyncio.run(env.dp.reconcile(env.state)) == 3
    assert served(env.lab.probe("a", "10.96.0.19", 80)) == {"b"}
    assert IPT_CHAIN in env.nat()  # outgoing NAT's chain is not ours to remove
    # A restarted Felix (after kill -9) writes nothing at start, nothing when in sync.
    fresh = Recording(env.lab.node_path, env.legacy)
    asyncio.run(fresh.start())
    assert fresh.writes == []
    assert asyncio.run(fresh.reconcile(env.state)) == 0
    assert served(env.lab.probe("a", "10.96.0.19", 80)) == {"b"}


def test_rendering_pick_affinity_and_denials() -> None:
    """Without a kernel: equal-weight probabilities, affinity before the pick, and which of
    reject / drop / DNAT each kind of traffic gets."""
    three = service("t", "10.96.1.1", *(backend(p) for p in "abc"), affinity_timeout_s=30)
    pick = svc.render_service(three).chains[svc.svc_chain(three.id)]
    assert pick[0].startswith("-j CONNMARK --set-xmark 0x8000/0x8000")  # cluster-IP traffic
    assert all("--update --seconds 30 --reap -p tcp -j DNAT" in rule for rule in pick[1:4])
    probabilities = [rule.split("--probability ")[1].split()[0] for rule in pick[4:6]]
    assert probabilities == ["0.3333333333", "0.5000000000"] and "statistic" not in pick[6]
    assert all("--set -p tcp -j DNAT --to-destination" in rule for rule in pick[4:7])
    udp_empty = service("e", "10.96.1.2", protocol=UDP, node_port=30001)
    rendered = svc.render_service(udp_empty)
    assert not rendered.chains and not rendered.services and not rendered.nodeports
    assert len(rendered.reject) == 2
    assert all("--reject-with icmp-port-unreachable" in r for r in rendered.reject)
    remote = service("r", "10.96.1.3", backend("d", local=False), node_port=30002,
                     external_local=True)  # fmt: skip
    rendered = svc.render_service(remote)
    assert len(rendered.services) == 1 and not rendered.nodeports  # cluster IP still served
    assert len(rendered.reject) == 1 and "-j DROP" in rendered.reject[0]


def test_pod_cidrs_decide_cluster_ip_masquerade(env: Env) -> None:
    env.set(service("web", "10.96.0.22", backend("b")))
    assert clients(env.lab.probe("a", "10.96.0.22", 80)) == {PODS["a"]}
    env.state.pod_cidrs = ()  # the pool is gone: pods are off the pod network now
    env.dp.writes.clear()
    try:
        asyncio.run(env.dp.apply(env.state, StateDelta(pod_cidrs=True)))
        declared = {ln for w in env.dp.writes for ln in w.splitlines() if ln.startswith(":")}
        assert declared == {f":{svc.POSTROUTING} - [0:0]"}  # only the masquerade chain
        assert PODS["a"] not in clients(env.lab.probe("a", "10.96.0.22", 80))
    finally:
        env.state.pod_cidrs = (POOL,)
        asyncio.run(env.dp.apply(env.state, StateDelta(pod_cidrs=True)))
    assert clients(env.lab.probe("a", "10.96.0.22", 80)) == {PODS["a"]}
