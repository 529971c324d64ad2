"""Calico-only semantics on the real kernel (every dataplane), with real traffic between pods.

Each test applies Calico resources and checks the full 72-pair matrix against a predicate
(written from Calico's documented semantics, independent of the implementation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from libcalico.syncer.api import Delete
from tests.felix_policy.cases import object_key, pod_ip
from tests.felix_policy.conftest import Driver
from tests.felix_policy.netlab import NetLab, sh

pytestmark = pytest.mark.netns

Pred = Callable[[str, str], bool]


def gnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def check(lab: NetLab, proto: str, port: int, allowed: Pred) -> None:
    got = lab.matrix(proto, port)
    wrong = sorted(pair for pair, ok in got.items() if ok != allowed(*pair))
    assert not wrong, f"{proto}/{port}: unexpected verdicts for {wrong}"


def pod(name: str) -> str:
    return name.split("/")[1]


def ns(name: str) -> str:
    return name.split("/")[0]


async def apply(driver: Driver, *objs: dict[str, Any]) -> None:
    await driver.send([driver.put(o) for o in objs])


async def test_log_is_not_terminal(any_driver: Driver, netlab: NetLab) -> None:
    await apply(
        any_driver,
        gnp(
            "log-to-a",
            {
                "order": 10,
                "selector": "pod == 'a'",
                "types": ["Ingress"],
                "ingress": [{"action": "Log"}],
            },
        ),
        gnp(
            "deny-b-to-a",
            {
                "order": 20,
                "selector": "pod == 'a'",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Deny", "source": {"selector": "pod == 'b'"}},
                    {"action": "Allow"},
                ],
            },
        ),
    )
    if any_driver.engine.dataplane.name == "nftables":
        rules = netlab.nft("list", "table", "inet", "calico")
        assert 'log prefix "calico-packet: "' in rules
    else:
        save = (
            "iptables-legacy-save"
            if "legacy" in any_driver.engine.dataplane.name
            else ("iptables-save")
        )
        rules = sh("ip", "netns", "exec", netlab.node_ns, save, "-t", "filter")
        assert '--log-prefix "calico-packet: "' in rules
    check(netlab, "TCP", 80, lambda s, d: not (pod(d) == "a" and pod(s) == "b"))


async def test_port_ranges_and_not_ports(any_driver: Driver, netlab: NetLab) -> None:
    await apply(
        any_driver,
        gnp(
            "x-range",
            {
                "selector": "projectcalico.org/namespace == 'x'",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["75:80"]}}
                ],
            },
        ),
        gnp(
            "y-not-81",
            {
                "selector": "projectcalico.org/namespace == 'y'",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Allow", "protocol": "UDP", "destination": {"notPorts": [81]}}
                ],
            },
        ),
    )
    check(netlab, "TCP", 80, lambda s, d: ns(d) != "y")
    check(netlab, "TCP", 81, lambda s, d: ns(d) == "z")
    check(netlab, "UDP", 80, lambda s, d: ns(d) != "x")
    check(netlab, "UDP", 81, lambda s, d: ns(d) == "z")


async def test_nets_and_not_nets(any_driver: Driver, netlab: NetLab) -> None:
    x_net = "10.65.0.0/24"
    await apply(
        any_driver,
        gnp(
            "y-from-x-net",
            {
                "selector": "projectcalico.org/namespace == 'y'",
                "types": ["Ingress"],
                "ingress": [
                    {
                        "action": "Allow",
                        "source": {"nets": [x_net], "notNets": [pod_ip("x", "b") + "/32"]},
                    }
                ],
            },
        ),
    )
    check(netlab, "TCP", 80, lambda s, d: ns(d) != "y" or (ns(s) == "x" and pod(s) != "b"))


async def test_gnp_namespace_selector_and_deny(any_driver: Driver, netlab: NetLab) -> None:
    await apply(
        any_driver,
        gnp(
            "z-no-a",
            {
                "namespaceSelector": "ns == 'z'",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Deny", "source": {"selector": "pod == 'a'"}},
                    {"action": "Allow"},
                ],
            },
        ),
    )
    check(netlab, "TCP", 80, lambda s, d: not (ns(d) == "z" and pod(s) == "a"))


async def test_global_network_set(any_driver: Driver, netlab: NetLab) -> None:
    gns: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkSet",
        "metadata": {"name": "gclients", "labels": {"role": "gclients"}},
        "spec": {"nets": [pod_ip("x", "c") + "/32", "10.65.2.0/24"]},
    }
    await apply(
        any_driver,
        gns,
        gnp(
            "b-from-gclients",
            {
                "selector": "pod == 'b'",
                "types": ["Ingress"],
                "ingress": [{"action": "Allow", "source": {"selector": "role == 'gclients'"}}],
            },
        ),
    )
    check(netlab, "TCP", 80, lambda s, d: pod(d) != "b" or s == "x/c" or ns(s) == "z")
    # Shrink the set: the change reaches the kernel's set elements.
    gns["spec"]["nets"] = [pod_ip("x", "c") + "/32"]
    await apply(any_driver, gns)
    check(netlab, "TCP", 80, lambda s, d: pod(d) != "b" or s == "x/c")
    await any_driver.send([Delete(object_key(gns))])
    check(netlab, "TCP", 80, lambda s, d: pod(d) != "b")


def ping(lab: NetLab, src: str, dst: str) -> bool:
    return lab.ping(src, dst)


async def test_icmp_type_and_not_icmp(any_driver: Driver, netlab: NetLab) -> None:
    await apply(
        any_driver,
        gnp(
            "c-ping-only",
            {
                "selector": "pod == 'c' && projectcalico.org/namespace == 'x'",
                "types": ["Ingress"],
                "ingress": [
                    {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}}
                ],
            },
        ),
        gnp(
            "c-no-ping",
            {
                "selector": "pod == 'c' && projectcalico.org/namespace == 'y'",
                "types": ["Ingress"],
                "ingress": [{"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}}],
            },
        ),
    )
    assert ping(netlab, "z/a", "x/c")
    assert not ping(netlab, "z/a", "y/c")
    assert ping(netlab, "z/a", "z/c")
    assert not netlab.probe("z/a", "x/c", "TCP", 80)


def gns(name: str, role: str, nets: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkSet",
        "metadata": {"name": name, "labels": {"role": role}},
        "spec": {"nets": nets},
    }


async def test_merged_rules_keep_first_match(any_driver: Driver, netlab: NetLab) -> None:
    """Allows differing only in their selector set become one union-set rule (nftables);
    a Deny between them stays a barrier, a duplicated UDP Deny is dropped, and the union
    follows its constituents' members (also a hash -> interval change) and regrouping."""
    udp_deny = {"action": "Deny", "protocol": "UDP", "source": {"nets": ["10.99.0.0/16"]}}

    def allow_from(role: str) -> dict[str, Any]:
        return {"action": "Allow", "protocol": "TCP", "source": {"selector": f"role == '{role}'"}}

    def on_b(order: int, rules: list[dict[str, Any]]) -> dict[str, Any]:
        spec = {"order": order, "selector": "pod == 'b'", "types": ["Ingress"], "ingress": rules}
        return gnp(f"merge-{order}", spec)

    sets = [
        gns("g1", "g1", [pod_ip("x", "a") + "/32"]),
        gns("g2", "g2", [pod_ip("y", "a") + "/32", pod_ip("x", "c") + "/32"]),
        gns("g3", "g3", [pod_ip("z", "a") + "/32"]),
    ]
    deny_c = on_b(2, [{"action": "Deny", "protocol": "TCP", "source": {"selector": "pod == 'c'"}}])
    await apply(
        any_driver,
        *sets,
        on_b(1, [allow_from("g1"), udp_deny]),
        deny_c,
        on_b(3, [allow_from("g2"), udp_deny]),
        on_b(4, [allow_from("g3"), udp_deny]),
    )
    allowed = {"x/a", "y/a", "z/a"}
    check(netlab, "TCP", 80, lambda s, d: pod(d) != "b" or s in allowed)
    # g3 gains a prefix (its set becomes an interval set): z/* except pod c (denied first).
    sets[2]["spec"]["nets"] = [pod_ip("z", "a") + "/32", "10.65.2.0/24"]
    await apply(any_driver, sets[2])
    check(netlab, "TCP", 80, lambda s, d: pod(d) != "b" or s in allowed or s in ("z/b", "z/a"))
    # Without the Deny the three Allows form one union: x/c and z/c get in too.
    await any_driver.send([Delete(object_key(deny_c))])
    check(
        netlab,
        "TCP",
        80,
        lambda s, d: pod(d) != "b" or s in allowed or ns(s) == "z" or s == "x/c",
    )
    sets[1]["spec"]["nets"] = [pod_ip("y", "a") + "/32"]
    await apply(any_driver, sets[1])
    check(netlab, "TCP", 80, lambda s, d: pod(d) != "b" or s in allowed or ns(s) == "z")
