"""Service rendering without a kernel: shared map keys, deltas of several ServicePorts, the
UDP conntrack selection. Real traffic through the rendered rules: test_nft_services.py."""

from __future__ import annotations

from services.felix.calc.model import DataplaneState, ServiceBackend, ServicePort, StateDelta
from services.felix.dataplane import nft_services as svc
from services.felix.dataplane.svc_conntrack import (
    UdpTargets,
    changed_targets,
    current_targets,
    parse_listing,
)
from services.felix.dataplane.svc_names import cluster_chain, external_chain

B1 = ServiceBackend("10.65.0.11", 8080, True)
B2 = ServiceBackend("10.65.0.12", 8080, False)


def port(name: str, cip: str, *backends: ServiceBackend, **kw: object) -> ServicePort:
    return ServicePort(
        id=f"ns/{name}//6", namespace="ns", service=name, port_name="", protocol=6, port=80,
        cluster_ips=(cip,), backends=backends, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def state_of(*ports: ServicePort) -> DataplaneState:
    return DataplaneState(
        service_ports={p.id: p for p in ports}, pod_cidrs=("10.65.0.0/16", "10.70.0.0/16")
    )


def test_an_external_ip_claimed_twice_goes_to_the_smallest_id_in_full_and_delta() -> None:
    a = port("a", "10.96.0.1", B1, external_ips=("203.0.113.5",))
    b = port("b", "10.96.0.2", B2, external_ips=("203.0.113.5",))
    key = "203.0.113.5 . 6 . 80"
    full = svc.render_services(state_of(a, b))
    assert full.maps[svc.SVC_IPS][key] == f"goto {external_chain(a.id)}"

    # Delta: "a" goes away; the key passes to "b" in the same transaction.
    current = svc.render_services(state_of(a, b))
    state = state_of(b)
    out = svc.apply_delta(current, state, StateDelta(service_ports={a.id}))
    assert current.maps == svc.render_services(state).maps
    text = "\n".join(out.elements)
    assert f"delete element inet calico {svc.SVC_IPS} {{ 10.96.0.1 . 6 . 80, {key} }}" in text
    assert f"{key} : goto {external_chain(b.id)}" in text
    assert cluster_chain(a.id) in out.gone_chains
    assert "10.65.0.11 . 10.65.0.11" in text  # its hairpin pair leaves, b's stays
    assert current.sets[svc.HAIRPIN] == {"10.65.0.12 . 10.65.0.12"}


def test_delta_equals_full_render_through_a_sequence_of_changes() -> None:
    steps = [
        [port("a", "10.96.0.1", B1)],
        [port("a", "10.96.0.1", B1, B2), port("b", "10.96.0.2")],
        [port("a", "10.96.0.1", B2, internal_local=True), port("b", "10.96.0.2", B1)],
        [port("a", "10.96.0.1", B1, B2, node_port=30001, external_local=True)],
        [port("a", "10.96.0.1", B1, B2, affinity_timeout_s=30)],
        [],
    ]
    current = svc.render_services(DataplaneState())
    previous: set[str] = set()
    for ports in steps:
        state = state_of(*ports)
        ids = previous | set(state.service_ports)
        svc.apply_delta(current, state, StateDelta(service_ports=ids, pod_cidrs=True))
        full = svc.render_services(state)
        assert current.maps == full.maps
        assert current.sets == full.sets
        assert current.affinity == full.affinity
        assert current.chains() == full.chains()
        previous = set(state.service_ports)


def test_no_backends_rejects_and_local_policies_drop() -> None:
    empty = port("e", "10.96.0.3", node_port=30003)
    itp = port("i", "10.96.0.4", B2, internal_local=True)
    etp = port("x", "10.96.0.5", B2, node_port=30005, external_local=True)
    maps = svc.render_services(state_of(empty, itp, etp)).maps
    reject = f"goto {svc.REJECT}"
    assert maps[svc.NOEP_IPS]["10.96.0.3 . 6 . 80"] == reject
    assert maps[svc.NOEP_NODEPORTS]["6 . 30003"] == reject
    assert maps[svc.NOEP_IPS]["10.96.0.4 . 6 . 80"] == "drop"
    assert maps[svc.NOEP_NODEPORTS]["6 . 30005"] == "drop"
    # The ETP Local node port still goes to the external chain (pods and the host).
    assert maps[svc.SVC_NODEPORTS]["6 . 30005"] == f"goto {external_chain(etp.id)}"


def test_udp_conntrack_selection() -> None:
    udp = ServicePort(
        "ns/dns//17", "ns", "dns", "", 17, 53, ("10.96.0.10",), node_port=30053,
        backends=(ServiceBackend("10.65.0.11", 53, True), ServiceBackend("10.65.0.12", 53, True)),
    )  # fmt: skip
    after = ServicePort(
        "ns/dns//17", "ns", "dns", "", 17, 53, ("10.96.0.10",), node_port=30053,
        backends=(ServiceBackend("10.65.0.12", 53, True),),
    )  # fmt: skip
    targets = changed_targets({udp.id: udp}, {udp.id: after})
    assert targets.stale(("10.96.0.10", 53), ("10.65.0.11", 53))
    assert not targets.stale(("10.96.0.10", 53), ("10.65.0.12", 53))
    assert targets.stale(("198.18.0.1", 30053), ("10.65.0.11", 53))  # via the node port
    assert not targets.stale(("10.96.0.99", 53), ("10.65.0.11", 53))  # another service
    assert not changed_targets({udp.id: after}, {udp.id: udp})  # gained a backend
    assert not UdpTargets()
    assert current_targets([after]).stale(("10.96.0.10", 53), ("10.65.0.11", 53))
    line = (
        "udp      17 29 src=10.65.0.2 dst=10.96.0.10 sport=41000 dport=53 [UNREPLIED] "
        "src=10.65.0.11 dst=10.65.0.2 sport=53 dport=41000 mark=0 use=1"
    )
    assert parse_listing(line) == [(("10.96.0.10", 53), ("10.65.0.11", 53))]
