"""Kubernetes NetworkPolicy cases not in cases-public.json.

The ``tcp-NN`` / ``udp-02`` / ``sctp-02`` cases restate the upstream e2e tests
(kubernetes/kubernetes test/e2e/network/netpol/network_policy.go) that sit between the public
ones (the public file holds the odd-numbered ones); ``k8s-extra-*`` are further scenarios.
Run ``python -m tests.conformance_extra.gen_k8s`` to rewrite cases-k8s-extra.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conformance_extra.casegen import Table as T
from tests.conformance_extra.casegen import (
    case,
    knp,
    mexpr,
    ml,
    ns_is,
    ns_label,
    pod_label,
    ref,
    step,
)

CTX = "NetworkPolicy between server and client"
SRC = "network_policy.go (upstream e2e): "
EXTRA = "k8s NetworkPolicy semantics (extra)"
ING = ["Ingress"]
EGR = ["Egress"]
BOTH = ["Ingress", "Egress"]
TCP81 = {"protocol": "TCP", "port": 81}
TCP80 = {"protocol": "TCP", "port": 80}


def upstream() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(num: str, name: str, steps: list[dict[str, Any]], **kw: Any) -> None:
        words = "".join(c if c.isalnum() else " " for c in name.lower()).split()
        slug = "-".join(words)[:48].rstrip("-")
        out.append(case(f"{num}-{slug}", name, CTX, SRC + name, steps, **kw))

    add(
        "tcp-02",
        "should support a 'default-deny-all' policy",
        [
            step(
                [T().set("*", "x", False).set("x", "*", False).probe(80)],
                apply=[knp("deny-all", "x", {}, ingress=[], egress=[], types=BOTH)],
            )
        ],
    )
    add(
        "tcp-04",
        "should enforce policy to allow ingress traffic for a target",
        [
            step(
                [T().set("*", ["x/b", "x/c"], False).probe(80)],
                apply=[
                    knp("deny-all", "x", {}, ingress=[], types=ING),
                    knp(
                        "allow-all-to-a",
                        "x",
                        ml(pod="a"),
                        ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}],
                        types=ING,
                    ),
                ],
            )
        ],
    )
    from_y_to_xa = T().set(["x", "z"], "x/a", False)
    add(
        "tcp-06",
        "should enforce policy to allow traffic only from a different namespace, based on "
        "NamespaceSelector",
        [
            step(
                [from_y_to_xa.probe(80)],
                apply=[
                    knp(
                        "allow-client-a-via-ns-selector",
                        "x",
                        ml(pod="a"),
                        ingress=[{"from": [{"namespaceSelector": ns_is("y")}]}],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        "tcp-08",
        "should enforce policy based on NamespaceSelector with MatchExpressions",
        [
            step(
                [from_y_to_xa.probe(80)],
                apply=[
                    knp(
                        "allow-ns-y-match-selector",
                        "x",
                        ml(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {
                                        "namespaceSelector": mexpr(
                                            "kubernetes.io/metadata.name", "In", ["y"]
                                        )
                                    }
                                ]
                            }
                        ],
                        types=ING,
                    )
                ],
            )
        ],
    )
    not_x = mexpr("kubernetes.io/metadata.name", "NotIn", ["x"])
    add(
        "tcp-10",
        "should enforce policy based on PodSelector and NamespaceSelector",
        [
            step(
                [T().set("*", "x/a", False).set(["y/b", "z/b"], "x/a", True).probe(80)],
                apply=[
                    knp(
                        "allow-ns-y-podselector-and-nsselector",
                        "x",
                        ml(pod="a"),
                        ingress=[
                            {"from": [{"namespaceSelector": not_x, "podSelector": ml(pod="b")}]}
                        ],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        "tcp-12",
        "should enforce policy based on any PodSelectors",
        [
            step(
                [T().set("*", "x/a", False).set(["x/b", "x/c"], "x/a", True).probe(80)],
                apply=[
                    knp(
                        "allow-ns-x-pod-b-c",
                        "x",
                        ml(pod="a"),
                        ingress=[
                            {"from": [{"podSelector": ml(pod="b")}, {"podSelector": ml(pod="c")}]}
                        ],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        "tcp-14",
        "should enforce policy based on Ports",
        [
            step(
                [
                    T().set(["x", "z"], "x/a", False).probe(81),
                    T().set("*", "x/a", False).probe(80),
                ],
                apply=[
                    knp(
                        "allow-client-a-via-ns-selector",
                        "x",
                        ml(pod="a"),
                        ingress=[{"from": [{"namespaceSelector": ns_is("y")}], "ports": [TCP81]}],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        "tcp-16",
        "should support allow-all policy",
        [
            step(
                [T().probe(80), T().probe(81)],
                apply=[knp("allow-all", "x", {}, ingress=[{}], types=ING)],
            )
        ],
    )
    add(
        "tcp-18",
        "should allow ingress access from namespace on one named port",
        [
            step(
                [
                    T().set(["x", "z"], "x/a", False).probe(80),
                    T().set("*", "x/a", False).probe(81),
                ],
                apply=[
                    knp(
                        "allow-client-a-via-ns-selector-80",
                        "x",
                        ml(pod="a"),
                        ingress=[
                            {
                                "from": [{"namespaceSelector": ns_is("y")}],
                                "ports": [{"protocol": "TCP", "port": "serve-80-tcp"}],
                            }
                        ],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        "tcp-20",
        "should enforce updated policy",
        [
            step(
                [T().probe(81)],
                apply=[knp("allow-all-mutate-to-deny-all", "x", {}, ingress=[{}], types=ING)],
            ),
            step(
                [T().set("*", "x", False).probe(81)],
                apply=[knp("allow-all-mutate-to-deny-all", "x", {}, ingress=[], types=ING)],
            ),
        ],
    )
    add(
        "tcp-22",
        "should allow ingress access from updated pod",
        [
            step(
                [T().set("*", "x/a", False).probe(80)],
                apply=[
                    knp(
                        "allow-client-a-via-pod-selector",
                        "x",
                        ml(pod="a"),
                        ingress=[{"from": [{"podSelector": ml(pod="b", pod2="updated")}]}],
                        types=ING,
                    )
                ],
            ),
            step(
                [T().set("*", "x/a", False).set("x/b", "x/a", True).probe(80)],
                label_changes=[
                    pod_label("x/b", {"pod": "b", "pod2": "updated"}, {"pod2": "updated"})
                ],
            ),
        ],
    )
    add(
        "tcp-24",
        "should deny ingress access to updated pod",
        [
            step(
                [T().probe(80)],
                apply=[
                    knp(
                        "deny-ingress-via-label-selector",
                        "x",
                        ml(target="isolated"),
                        ingress=[],
                        types=ING,
                    )
                ],
            ),
            step(
                [T().set("*", "x/a", False).probe(80)],
                label_changes=[
                    pod_label("x/a", {"pod": "a", "target": "isolated"}, {"target": "isolated"})
                ],
            ),
        ],
    )
    add(
        "tcp-26",
        "should deny egress from all pods in a namespace",
        [
            step(
                [T().set("x", "*", False).probe(80)],
                apply=[knp("deny-egress-ns-x", "x", {}, egress=[], types=EGR)],
            )
        ],
    )
    xa_ya = {"namespaceSelector": ns_is("x"), "podSelector": ml(pod="a")}
    add(
        "tcp-28",
        "should support denying of egress traffic on the client side (even if the server "
        "explicitly allows this traffic)",
        [
            step(
                [
                    T()
                    .set("x/a", "*", False)
                    .set("*", "y/a", False)
                    .set("x/a", "y/a", True)
                    .set("*", "y/b", False)
                    .probe(80)
                ],
                apply=[
                    knp(
                        "allow-to-ns-y-pod-a",
                        "x",
                        ml(pod="a"),
                        egress=[
                            {"to": [{"namespaceSelector": ns_is("y"), "podSelector": ml(pod="a")}]}
                        ],
                        types=EGR,
                    ),
                    knp(
                        "allow-from-xa-on-ya-match-selector",
                        "y",
                        ml(pod="a"),
                        ingress=[{"from": [xa_ya]}],
                        types=ING,
                    ),
                    knp(
                        "allow-from-xa-on-yb-match-selector",
                        "y",
                        ml(pod="b"),
                        ingress=[{"from": [xa_ya]}],
                        types=ING,
                    ),
                ],
            )
        ],
    )
    add(
        "tcp-30",
        "should enforce ingress policy allowing any port traffic to a server on a specific "
        "protocol",
        [
            step(
                [T().probe(80), T().probe(81), T().set("*", "x/a", False).probe(80, "UDP")],
                apply=[
                    knp(
                        "allow-ingress-by-proto",
                        "x",
                        ml(pod="a"),
                        ingress=[{"ports": [{"protocol": "TCP"}]}],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        "tcp-32",
        "should enforce multiple egress policies with egress allow-all policy taking precedence",
        [
            step(
                [T().set("x", "*", False).probe(81)],
                apply=[
                    knp(
                        "allow-egress-port-80",
                        "x",
                        {},
                        egress=[{"ports": [{"port": 80}]}],
                        types=EGR,
                    )
                ],
            ),
            step(
                [T().probe(81)],
                apply=[knp("allow-egress", "x", {}, egress=[{}], types=EGR)],
            ),
        ],
    )
    add(
        "tcp-34",
        "should allow egress access to server in CIDR block",
        [
            step(
                [T().set("x/a", "*", False).set("x/a", "y/b", True).probe(80)],
                apply=[
                    knp(
                        "allow-client-a-via-cidr-egress-rule",
                        "x",
                        ml(pod="a"),
                        egress=[{"to": [{"ipBlock": {"cidr": "{{hostcidr:y/b}}"}}]}],
                        types=EGR,
                    )
                ],
            )
        ],
    )
    add(
        "tcp-36",
        "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
        [
            step(
                [T().set("x/a", "x/b", False).probe(80)],
                apply=[
                    knp(
                        "allow-client-a-via-cidr-egress-rule",
                        "x",
                        ml(pod="a"),
                        egress=[
                            {
                                "to": [
                                    {
                                        "ipBlock": {
                                            "cidr": "{{supernet:x/b:4}}",
                                            "except": ["{{hostcidr:x/b}}"],
                                        }
                                    }
                                ]
                            }
                        ],
                        types=EGR,
                    )
                ],
            ),
            step(
                [T().set("x/a", "*", False).set("x/a", "x/b", True).probe(80)],
                apply=[
                    knp(
                        "allow-client-a-via-cidr-egress-rule",
                        "x",
                        ml(pod="a"),
                        egress=[{"to": [{"ipBlock": {"cidr": "{{hostcidr:x/b}}"}}]}],
                        types=EGR,
                    )
                ],
            ),
        ],
        notes="Upstream updates the same policy (same name): the second spec replaces the first.",
    )
    add(
        "tcp-38",
        "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin "
        "doesn't support SCTP",
        [
            step(
                [T().set("*", "x", False).probe(81)],
                apply=[
                    knp("deny-ingress", "x", {}, ingress=[], types=ING),
                    knp(
                        "allow-only-sctp-ingress-on-port-81",
                        "x",
                        ml(pod="a"),
                        ingress=[{"ports": [{"protocol": "SCTP", "port": 81}]}],
                        types=ING,
                    ),
                ],
            )
        ],
    )
    add(
        "tcp-40",
        "should not allow access by TCP when a policy specifies only UDP",
        [
            step(
                [T().set("*", "x/a", False).probe(81), T().probe(81, "UDP")],
                apply=[
                    knp(
                        "allow-only-udp-ingress-on-port-81",
                        "x",
                        ml(pod="a"),
                        ingress=[{"ports": [{"protocol": "UDP", "port": 81}]}],
                        types=ING,
                    )
                ],
            )
        ],
        notes="Adds a UDP/81 probe (allowed from everywhere) to the upstream TCP one.",
    )
    add(
        "tcp-42",
        "should enforce policy based on NamespaceSelector with MatchExpressions using default "
        "ns label",
        [
            step(
                [T().set("x/a", "y", False).probe(80)],
                apply=[
                    knp(
                        "allow-ns-y-match-selector-for-immutable-ns-label",
                        "x",
                        ml(pod="a"),
                        egress=[
                            {
                                "to": [
                                    {
                                        "namespaceSelector": mexpr(
                                            "kubernetes.io/metadata.name", "NotIn", ["y"]
                                        )
                                    }
                                ]
                            }
                        ],
                        types=EGR,
                    )
                ],
            )
        ],
    )
    port_notes = {
        "UDP": "TCP/81 probe added: x/a is isolated for ingress and only UDP/81 from y is allowed.",
        "SCTP": "SCTP probe is skipped by the runner; the TCP/81 probe checks isolation.",
    }
    for protocol, notes in port_notes.items():
        add(
            f"{protocol.lower()}-02",
            "should enforce policy based on Ports",
            [
                step(
                    [
                        T().set(["x", "z"], "x/a", False).probe(81, protocol),
                        T().set("*", "x/a", False).probe(81),
                    ],
                    apply=[
                        knp(
                            "allow-ingress-on-port-81-ns-x",
                            "x",
                            ml(pod="a"),
                            ingress=[
                                {
                                    "from": [{"namespaceSelector": ns_is("y")}],
                                    "ports": [{"protocol": protocol, "port": 81}],
                                }
                            ],
                            types=ING,
                        )
                    ],
                )
            ],
            notes=notes,
        )
    return out


def extra() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(num: int, slug: str, name: str, steps: list[dict[str, Any]], **kw: Any) -> None:
        out.append(case(f"k8s-extra-{num:02d}-{slug}", name, EXTRA, EXTRA, steps, **kw))

    add(
        1,
        "endport-range",
        "Ingress port 79 with endPort 80 (TCP) on x/a: TCP 80 open, TCP 81 and UDP 80 closed",
        [
            step(
                [
                    T().probe(80),
                    T().set("*", "x/a", False).probe(81),
                    T().set("*", "x/a", False).probe(80, "UDP"),
                ],
                apply=[
                    knp(
                        "range",
                        "x",
                        ml(pod="a"),
                        ingress=[{"ports": [{"protocol": "TCP", "port": 79, "endPort": 80}]}],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        2,
        "ingress-ipblock-except",
        "Ingress to x/a from an ipBlock holding every pod except y/b: only y/b is refused",
        [
            step(
                [T().set("y/b", "x/a", False).probe(80)],
                apply=[
                    knp(
                        "cidr-in",
                        "x",
                        ml(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {
                                        "ipBlock": {
                                            "cidr": "{{supernet:x/a:4}}",
                                            "except": ["{{hostcidr:y/b}}"],
                                        }
                                    }
                                ]
                            }
                        ],
                        types=ING,
                    )
                ],
            )
        ],
        notes="An ipBlock peer matches pods of every namespace by address.",
    )
    add(
        3,
        "mixed-protocol-ports",
        "Ingress to all x pods on UDP 80 and on port 81 (no protocol = TCP): only those open",
        [
            step(
                [
                    T().probe(80, "UDP"),
                    T().probe(81),
                    T().set("*", "x", False).probe(80),
                    T().set("*", "x", False).probe(81, "UDP"),
                ],
                apply=[
                    knp(
                        "mixed",
                        "x",
                        {},
                        ingress=[{"ports": [{"protocol": "UDP", "port": 80}, {"port": 81}]}],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        4,
        "egress-named-udp-port",
        "Egress from x pods only to the named port serve-81-udp (UDP)",
        [
            step(
                [
                    T().probe(81, "UDP"),
                    T().set("x", "*", False).probe(80, "UDP"),
                    T().set("x", "*", False).probe(81),
                ],
                apply=[
                    knp(
                        "egress-named-udp",
                        "x",
                        {},
                        egress=[{"ports": [{"protocol": "UDP", "port": "serve-81-udp"}]}],
                        types=EGR,
                    )
                ],
            )
        ],
    )
    add(
        5,
        "named-port-protocol-mismatch",
        "Ingress to x pods on named port serve-80-udp with the default protocol TCP: no pod "
        "has a TCP port of that name, so nothing is allowed (TCP and UDP 80 closed)",
        [
            step(
                [T().set("*", "x", False).probe(80), T().set("*", "x", False).probe(80, "UDP")],
                apply=[knp("mismatch", "x", {}, ingress=[{"ports": [{"port": "serve-80-udp"}]}])],
            )
        ],
        notes="policyTypes omitted with no egress rules: Ingress only.",
    )
    add(
        6,
        "types-omitted-with-egress-rules",
        "policyTypes omitted, egress rules only: the policy governs Ingress (no rules: "
        "isolated) and Egress (only to x/b)",
        [
            step(
                [
                    T()
                    .set("*", "x/a", False)
                    .set("x/a", "*", False)
                    .set("x/a", "x/b", True)
                    .probe(80)
                ],
                apply=[
                    knp(
                        "implied", "x", ml(pod="a"), egress=[{"to": [{"podSelector": ml(pod="b")}]}]
                    )
                ],
            )
        ],
    )
    add(
        7,
        "types-omitted-ingress-only",
        "policyTypes omitted with ingress rules only: Ingress only; x/a egress unaffected",
        [
            step(
                [T().set("*", "x/a", False).set("x/b", "x/a", True).probe(80)],
                apply=[
                    knp(
                        "implied",
                        "x",
                        ml(pod="a"),
                        ingress=[{"from": [{"podSelector": ml(pod="b")}]}],
                    )
                ],
            )
        ],
    )
    add(
        8,
        "egress-rules-ignored-without-egress-type",
        "policyTypes [Ingress] with an allow-all ingress rule and a restrictive egress rule: "
        "the egress rule is ignored, everything allowed",
        [
            step(
                [T().probe(80), T().probe(81, "UDP")],
                apply=[
                    knp(
                        "ingress-only",
                        "x",
                        ml(pod="a"),
                        ingress=[{}],
                        egress=[{"to": [{"podSelector": ml(pod="b")}]}],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        9,
        "one-peer-and-vs-two-peers-or",
        "x/a from one peer {namespaceSelector: {}, podSelector: pod=b} (pods b anywhere); then "
        "the same selectors as two peers (ORed: every pod)",
        [
            step(
                [T().set("*", "x/a", False).set(["x/b", "y/b", "z/b"], "x/a", True).probe(80)],
                apply=[
                    knp(
                        "peers",
                        "x",
                        ml(pod="a"),
                        ingress=[{"from": [{"namespaceSelector": {}, "podSelector": ml(pod="b")}]}],
                        types=ING,
                    )
                ],
            ),
            step(
                [T().probe(80)],
                apply=[
                    knp(
                        "peers",
                        "x",
                        ml(pod="a"),
                        ingress=[
                            {"from": [{"namespaceSelector": {}}, {"podSelector": ml(pod="b")}]}
                        ],
                        types=ING,
                    )
                ],
            ),
        ],
    )
    add(
        10,
        "match-expressions-does-not-exist",
        "All x pods accept only x pods without label pod2 (DoesNotExist); then x/c gets pod2",
        [
            step(
                [T().set(["y", "z"], "x", False).probe(80)],
                apply=[
                    knp(
                        "no-pod2",
                        "x",
                        {},
                        ingress=[{"from": [{"podSelector": mexpr("pod2", "DoesNotExist")}]}],
                        types=ING,
                    )
                ],
            ),
            step(
                [T().set(["y", "z"], "x", False).set("x/c", "x", False).probe(80)],
                label_changes=[pod_label("x/c", {"pod": "c", "pod2": "yes"}, {"pod2": "yes"})],
            ),
        ],
    )
    blue = {"ns": "y", "kubernetes.io/metadata.name": "y", "team": "blue"}
    add(
        11,
        "namespace-label-removed-and-added",
        "x/a accepts namespaces with team=blue (y at start); y turns red (no access); z turns "
        "blue (access)",
        [
            step(
                [T().set(["x", "z"], "x/a", False).probe(80)],
                apply=[
                    knp(
                        "blue",
                        "x",
                        ml(pod="a"),
                        ingress=[{"from": [{"namespaceSelector": ml(team="blue")}]}],
                        types=ING,
                    )
                ],
            ),
            step(
                [T().set("*", "x/a", False).probe(80)],
                label_changes=[ns_label("y", {**blue, "team": "red"}, {"team": "red"})],
            ),
            step(
                [T().set(["x", "y"], "x/a", False).probe(80)],
                label_changes=[
                    ns_label(
                        "z",
                        {"ns": "z", "kubernetes.io/metadata.name": "z", "team": "blue"},
                        {"team": "blue"},
                    )
                ],
            ),
        ],
        namespaces={"y": blue},
    )
    deny_all = knp("deny-all", "x", {}, ingress=[], types=ING)
    add(
        12,
        "delete-stacked-policies-one-by-one",
        "x: deny-all ingress + allow from y; delete the allow (all into x denied); delete the "
        "deny (all allowed)",
        [
            step(
                [T().set(["x", "z"], "x", False).probe(80)],
                apply=[
                    deny_all,
                    knp(
                        "allow-from-y",
                        "x",
                        {},
                        ingress=[{"from": [{"namespaceSelector": ns_is("y")}]}],
                        types=ING,
                    ),
                ],
            ),
            step([T().set("*", "x", False).probe(80)], delete=["x/allow-from-y"]),
            step([T().probe(80)], delete=[ref(deny_all)]),
        ],
    )
    add(
        13,
        "pod-relabel-leaves-target-and-peer",
        "x/a isolated (deny ingress); y accepts only x/a.  x/a relabelled pod=a2: no longer "
        "isolated and no longer admitted into y",
        [
            step(
                [T().set("*", "x/a", False).set("*", "y", False).set("x/a", "y", True).probe(80)],
                apply=[
                    knp("isolate-a", "x", ml(pod="a"), ingress=[], types=ING),
                    knp(
                        "only-xa",
                        "y",
                        {},
                        ingress=[
                            {
                                "from": [
                                    {"namespaceSelector": ns_is("x"), "podSelector": ml(pod="a")}
                                ]
                            }
                        ],
                        types=ING,
                    ),
                ],
            ),
            step(
                [T().set("*", "y", False).probe(80)],
                label_changes=[pod_label("x/a", {"pod": "a2"}, {"pod": "a2"})],
            ),
        ],
    )
    add(
        14,
        "egress-ipblock-except-with-port",
        "x/a egress only to TCP 80 in an ipBlock of all pods except y/a and z/a",
        [
            step(
                [
                    T().set("x/a", ["y/a", "z/a"], False).probe(80),
                    T().set("x/a", "*", False).probe(81),
                    T().set("x/a", "*", False).probe(80, "UDP"),
                ],
                apply=[
                    knp(
                        "cidr-out",
                        "x",
                        ml(pod="a"),
                        egress=[
                            {
                                "to": [
                                    {
                                        "ipBlock": {
                                            "cidr": "{{supernet:x/a:4}}",
                                            "except": ["{{hostcidr:y/a}}", "{{hostcidr:z/a}}"],
                                        }
                                    }
                                ],
                                "ports": [TCP80],
                            }
                        ],
                        types=EGR,
                    )
                ],
            )
        ],
    )
    add(
        15,
        "egress-namespace-and-named-port",
        "x pods egress only to namespace z on named port serve-81-tcp",
        [
            step(
                [T().set("x", ["x", "y"], False).probe(81), T().set("x", "*", False).probe(80)],
                apply=[
                    knp(
                        "to-z-81",
                        "x",
                        {},
                        egress=[
                            {
                                "to": [{"namespaceSelector": ns_is("z")}],
                                "ports": [{"port": "serve-81-tcp"}],
                            }
                        ],
                        types=EGR,
                    )
                ],
            )
        ],
    )
    add(
        16,
        "ipblock-or-podselector-peers",
        "x/a from peers [ipBlock z/c/32, podSelector pod=b]: only x/b and z/c get in",
        [
            step(
                [T().set("*", "x/a", False).set(["x/b", "z/c"], "x/a", True).probe(80)],
                apply=[
                    knp(
                        "two-kinds",
                        "x",
                        ml(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {"ipBlock": {"cidr": "{{hostcidr:z/c}}"}},
                                    {"podSelector": ml(pod="b")},
                                ]
                            }
                        ],
                        types=ING,
                    )
                ],
            )
        ],
    )
    add(
        17,
        "per-rule-ports-and-peers",
        "x/a: rule 1 from y on TCP 80, rule 2 from z on TCP 81 (ports bind to their own rule)",
        [
            step(
                [
                    T().set("*", "x/a", False).set("y", "x/a", True).probe(80),
                    T().set("*", "x/a", False).set("z", "x/a", True).probe(81),
                ],
                apply=[
                    knp(
                        "per-rule",
                        "x",
                        ml(pod="a"),
                        ingress=[
                            {"from": [{"namespaceSelector": ns_is("y")}], "ports": [TCP80]},
                            {"from": [{"namespaceSelector": ns_is("z")}], "ports": [TCP81]},
                        ],
                        types=ING,
                    )
                ],
            )
        ],
    )
    return out


def main() -> None:
    path = Path(__file__).with_name("cases-k8s-extra.json")
    path.write_text(json.dumps(upstream() + extra(), indent=1) + "\n")


if __name__ == "__main__":
    main()
