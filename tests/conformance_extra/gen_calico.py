"""Calico policy cases not in calico-cases-public.json.

Run ``python -m tests.conformance_extra.gen_calico`` to rewrite cases-calico-extra.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conformance_extra.casegen import Table as T
from tests.conformance_extra.casegen import (
    case,
    cnp,
    gnp,
    knp,
    netset,
    ns_label,
    pod_label,
    ref,
    step,
)

CTX = "calico-policy"
SRC = "calico-policy semantics (extra)"
ING = ["Ingress"]
EGR = ["Egress"]
IN_X = "projectcalico.org/namespace == 'x'"
IN_Y = "projectcalico.org/namespace == 'y'"
IN_Z = "projectcalico.org/namespace == 'z'"


def cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(num: int, slug: str, name: str, steps: list[dict[str, Any]], **kw: Any) -> None:
        out.append(case(f"calico-extra-{num:02d}-{slug}", name, CTX, SRC, steps, **kw))

    add(
        1,
        "gnp-namespace-selector",
        "GNP with spec.namespaceSelector ns==y and selector pod==a admits only namespace z "
        "into y/a; namespace y relabelled ns=yy: the GNP no longer selects y/a",
        [
            step(
                [T().set("*", "y/a", False).set("z", "y/a", True).probe(80)],
                apply=[
                    gnp(
                        "y-a-from-z",
                        {
                            "namespaceSelector": "ns == 'y'",
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {"action": "Allow", "source": {"namespaceSelector": "ns == 'z'"}}
                            ],
                        },
                    )
                ],
            ),
            step(
                [T().probe(80)],
                label_changes=[
                    ns_label("y", {"ns": "yy", "kubernetes.io/metadata.name": "y"}, {"ns": "yy"})
                ],
            ),
        ],
    )
    add(
        2,
        "service-accounts",
        "Every pod runs as service account 'default'.  GNP: x/b admits serviceAccounts "
        "[default] with selector pod==a (any namespace).  NetworkPolicy in y: y/c admits "
        "serviceAccounts [default] (own namespace only).  GNP selecting by the automatic "
        "label projectcalico.org/serviceaccount: z/a denies pod==b",
        [
            step(
                [
                    T()
                    .set("*", "x/b", False)
                    .set(["x/a", "y/a", "z/a"], "x/b", True)
                    .set("*", "y/c", False)
                    .set(["y/a", "y/b"], "y/c", True)
                    .set(["x/b", "y/b", "z/b"], "z/a", False)
                    .probe(80)
                ],
                apply=[
                    gnp(
                        "sa-to-xb",
                        {
                            "selector": f"{IN_X} && pod == 'b'",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {
                                        "serviceAccounts": {"names": ["default"]},
                                        "selector": "pod == 'a'",
                                    },
                                }
                            ],
                        },
                    ),
                    cnp(
                        "sa-in-y",
                        "y",
                        {
                            "selector": "pod == 'c'",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {"serviceAccounts": {"names": ["default"]}},
                                }
                            ],
                        },
                    ),
                    gnp(
                        "sa-label",
                        {
                            "selector": "projectcalico.org/serviceaccount == 'default' && "
                            f"{IN_Z} && pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {"action": "Deny", "source": {"selector": "pod == 'b'"}},
                                {"action": "Allow"},
                            ],
                        },
                    ),
                ],
            )
        ],
        notes="Kubernetes gives every pod without serviceAccountName the account 'default'.",
    )
    add(
        3,
        "not-ports-not-nets",
        "NetworkPolicy in z: Allow TCP with destination notPorts [81]; Allow UDP with source "
        "notNets [x/a/32]",
        [
            step(
                [
                    T().probe(80),
                    T().set("*", "z", False).probe(81),
                    T().set("x/a", "z", False).probe(80, "UDP"),
                    T().set("x/a", "z", False).probe(81, "UDP"),
                ],
                apply=[
                    cnp(
                        "z-in",
                        "z",
                        {
                            "selector": "all()",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "protocol": "TCP",
                                    "destination": {"notPorts": [81]},
                                },
                                {
                                    "action": "Allow",
                                    "protocol": "UDP",
                                    "source": {"notNets": ["{{hostcidr:x/a}}"]},
                                },
                            ],
                        },
                    )
                ],
            )
        ],
    )
    add(
        4,
        "icmp-only-rules-isolate",
        "GNP for x pods allows only ICMP ingress; GNP for y/c allows only ICMP echo egress: "
        "TCP and UDP into x and out of y/c are denied",
        [
            step(
                [
                    T().set("*", "x", False).set("y/c", "*", False).probe(80),
                    T().set("*", "x", False).set("y/c", "*", False).probe(81, "UDP"),
                ],
                apply=[
                    gnp(
                        "x-icmp-only",
                        {
                            "selector": IN_X,
                            "types": ING,
                            "ingress": [{"action": "Allow", "protocol": "ICMP"}],
                        },
                    ),
                    gnp(
                        "yc-egress-ping",
                        {
                            "selector": f"{IN_Y} && pod == 'c'",
                            "types": EGR,
                            "egress": [
                                {
                                    "action": "Allow",
                                    "protocol": "ICMP",
                                    "icmp": {"type": 8, "code": 0},
                                }
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    add(
        5,
        "log-is-not-a-verdict",
        "GNP for pod==a: Log, then Allow from pod==b (Log goes on: */b reach */a, nothing "
        "else).  GNP for z/c with only a Log rule: no verdict, so end-of-tier deny",
        [
            step(
                [
                    T()
                    .set("*", ["x/a", "y/a", "z/a"], False)
                    .set(["x/b", "y/b", "z/b"], ["x/a", "y/a", "z/a"], True)
                    .set("*", "z/c", False)
                    .probe(80)
                ],
                apply=[
                    gnp(
                        "log-then-allow",
                        {
                            "order": 10,
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {"action": "Log"},
                                {"action": "Allow", "source": {"selector": "pod == 'b'"}},
                            ],
                        },
                    ),
                    gnp(
                        "log-only",
                        {
                            "order": 10,
                            "selector": f"{IN_Z} && pod == 'c'",
                            "types": ING,
                            "ingress": [{"action": "Log"}],
                        },
                    ),
                ],
            )
        ],
    )
    deny_b = {
        "order": 100,
        "selector": "pod == 'a'",
        "types": ING,
        "ingress": [{"action": "Deny", "source": {"selector": "pod == 'b'"}}],
    }
    a_deny = gnp("a-deny", deny_b)
    add(
        6,
        "order-tie-broken-by-name",
        "GNPs 'b-allow' (Allow all) and 'a-deny' (Deny pod==b) both order 100 on pod==a: "
        "'a-deny' sorts first.  Then 'a-deny' is replaced by an identical 'c-deny', which "
        "sorts after 'b-allow'",
        [
            step(
                [T().set(["x/b", "y/b", "z/b"], ["x/a", "y/a", "z/a"], False).probe(80)],
                apply=[
                    gnp(
                        "b-allow",
                        {
                            "order": 100,
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [{"action": "Allow"}],
                        },
                    ),
                    a_deny,
                ],
            ),
            step([T().probe(80)], delete=[ref(a_deny)], apply=[gnp("c-deny", deny_b)]),
        ],
    )
    add(
        7,
        "numeric-order",
        "Orders compare as numbers: GNP order 20 allows namespace z into pod==a before GNP "
        "order 100 denies it (then allows the rest); GNP order 5.5 denies y/b before GNP "
        "order 50 allows it",
        [
            step(
                [T().set("y/b", ["x/a", "y/a", "z/a"], False).probe(80)],
                apply=[
                    gnp(
                        "deny-z",
                        {
                            "order": 100,
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}},
                                {"action": "Allow"},
                            ],
                        },
                    ),
                    gnp(
                        "allow-z",
                        {
                            "order": 20,
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {"action": "Allow", "source": {"namespaceSelector": "ns == 'z'"}}
                            ],
                        },
                    ),
                    gnp(
                        "allow-yb",
                        {
                            "order": 50,
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {"selector": f"{IN_Y} && pod == 'b'"},
                                }
                            ],
                        },
                    ),
                    gnp(
                        "deny-yb",
                        {
                            "order": 5.5,
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Deny",
                                    "source": {"selector": f"{IN_Y} && pod == 'b'"},
                                }
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    add(
        8,
        "pass-ingress-to-profile",
        "GNP order 10 for x pods: Pass from pod==b, Deny from ns y.  GNP order 20 denies all "
        "ingress to x.  */b reach x (Pass skips the tier, the namespace profile allows)",
        [
            step(
                [T().set("*", "x", False).set(["x/b", "y/b", "z/b"], "x", True).probe(80)],
                apply=[
                    gnp(
                        "pass-b",
                        {
                            "order": 10,
                            "selector": IN_X,
                            "types": ING,
                            "ingress": [
                                {"action": "Pass", "source": {"selector": "pod == 'b'"}},
                                {"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}},
                            ],
                        },
                    ),
                    gnp(
                        "deny-rest",
                        {
                            "order": 20,
                            "selector": IN_X,
                            "types": ING,
                            "ingress": [{"action": "Deny"}],
                        },
                    ),
                ],
            )
        ],
    )
    blocked = netset("blocked", None, {"role": "blocked"}, ["{{hostcidr:z/b}}", "{{hostcidr:y/c}}"])
    add(
        9,
        "global-network-set-update-delete",
        "GlobalNetworkSet role=blocked holds z/b and y/c; a GNP denies ingress from "
        "role==blocked then allows.  The set shrinks to z/b, then is deleted",
        [
            step(
                [T().set(["z/b", "y/c"], "*", False).probe(80)],
                apply=[
                    blocked,
                    gnp(
                        "deny-blocked",
                        {
                            "order": 10,
                            "selector": "all()",
                            "types": ING,
                            "ingress": [
                                {"action": "Deny", "source": {"selector": "role == 'blocked'"}},
                                {"action": "Allow"},
                            ],
                        },
                    ),
                ],
            ),
            step(
                [T().set("z/b", "*", False).probe(80)],
                apply=[netset("blocked", None, {"role": "blocked"}, ["{{hostcidr:z/b}}"])],
            ),
            step([T().probe(80)], delete=[ref(blocked)]),
        ],
    )
    add(
        10,
        "global-namespace-selector",
        "NetworkPolicy in x admits source namespaceSelector global() && role==trusted: the "
        "GlobalNetworkSet (y/a) matches, the NetworkSet x/trusted (z/a) does not",
        [
            step(
                [T().set("*", "x", False).set("y/a", "x", True).probe(80)],
                apply=[
                    netset("trusted", None, {"role": "trusted"}, ["{{hostcidr:y/a}}"]),
                    netset("trusted", "x", {"role": "trusted"}, ["{{hostcidr:z/a}}"]),
                    cnp(
                        "from-global-trusted",
                        "x",
                        {
                            "selector": "all()",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {
                                        "namespaceSelector": "global()",
                                        "selector": "role == 'trusted'",
                                    },
                                }
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    tiers = {
        "x": {"ns": "x", "kubernetes.io/metadata.name": "x", "tier": "frontend-web"},
        "y": {"ns": "y", "kubernetes.io/metadata.name": "y", "tier": "backend-db"},
        "z": {"ns": "z", "kubernetes.io/metadata.name": "z", "tier": "frontend-api"},
    }
    c_pods = ["x/c", "y/c", "z/c"]
    add(
        11,
        "string-selector-operators",
        "GNP for y pods: Allow from namespaces with tier starting 'front' and ending 'api' (z), "
        "Allow from pods whose pod label contains 'c'.  x/b relabelled pod=bc gets in",
        [
            step(
                [T().set("*", "y", False).set("z", "y", True).set(c_pods, "y", True).probe(80)],
                apply=[
                    gnp(
                        "into-y",
                        {
                            "selector": IN_Y,
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {
                                        "namespaceSelector": "tier starts with 'front' && "
                                        "tier ends with 'api'"
                                    },
                                },
                                {"action": "Allow", "source": {"selector": "pod contains 'c'"}},
                            ],
                        },
                    )
                ],
            ),
            step(
                [
                    T()
                    .set("*", "y", False)
                    .set("z", "y", True)
                    .set([*c_pods, "x/b"], "y", True)
                    .probe(80)
                ],
                label_changes=[pod_label("x/b", {"pod": "bc"}, {"pod": "bc"})],
            ),
        ],
        namespaces=tiers,
    )
    add(
        12,
        "do-not-track-and-pre-dnat-skip-workloads",
        "doNotTrack and preDNAT GNPs (applyOnForward) denying all ingress apply to host "
        "endpoints only: pods unaffected.  A plain applyOnForward GNP still applies: */b "
        "cannot reach x/a",
        [
            step(
                [T().set(["x/b", "y/b", "z/b"], "x/a", False).probe(80)],
                apply=[
                    gnp(
                        "untracked-deny",
                        {
                            "selector": "all()",
                            "doNotTrack": True,
                            "applyOnForward": True,
                            "types": ING,
                            "ingress": [{"action": "Deny"}],
                        },
                    ),
                    gnp(
                        "prednat-deny",
                        {
                            "selector": "all()",
                            "preDNAT": True,
                            "applyOnForward": True,
                            "types": ING,
                            "ingress": [{"action": "Deny"}],
                        },
                    ),
                    gnp(
                        "forward-deny",
                        {
                            "selector": f"{IN_X} && pod == 'a'",
                            "applyOnForward": True,
                            "types": ING,
                            "ingress": [
                                {"action": "Deny", "source": {"selector": "pod == 'b'"}},
                                {"action": "Allow"},
                            ],
                        },
                    ),
                ],
            )
        ],
        notes="Felix puts doNotTrack / preDNAT policies in the untracked / preDNAT tiers, "
        "which only host endpoints get (event_sequencer tierInfoToProtoTierInfo).",
    )
    add(
        13,
        "kubernetes-and-calico-order",
        "Calico NetworkPolicy in x at order 500 denies ns y; a Kubernetes allow-all in x "
        "(order 1000) admits the rest, even z which a GNP without order (last) denies for "
        "pod==a; y/a and z/a (GNP only) refuse z",
        [
            step(
                [T().set("y", "x", False).set("z", ["y/a", "z/a"], False).probe(80)],
                apply=[
                    cnp(
                        "deny-y",
                        "x",
                        {
                            "order": 500,
                            "selector": "all()",
                            "types": ING,
                            "ingress": [
                                {"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}}
                            ],
                        },
                    ),
                    knp("allow-all", "x", {}, ingress=[{}], types=ING),
                    gnp(
                        "deny-z-to-a",
                        {
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}},
                                {"action": "Allow"},
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    add(
        14,
        "types-deduced-from-rules",
        "GNPs without types: egress rules only -> Egress (x/a may not reach pods b); no rules "
        "-> Ingress (z/c isolated); both -> both (y/b talks only with pods a)",
        [
            step(
                [
                    T()
                    .set("x/a", ["x/b", "y/b", "z/b"], False)
                    .set("*", "z/c", False)
                    .set("*", "y/b", False)
                    .set(["y/a", "z/a"], "y/b", True)
                    .set("y/b", "*", False)
                    .set("y/b", ["x/a", "y/a", "z/a"], True)
                    .probe(80)
                ],
                apply=[
                    gnp(
                        "egress-rules-only",
                        {
                            "selector": f"{IN_X} && pod == 'a'",
                            "egress": [
                                {"action": "Deny", "destination": {"selector": "pod == 'b'"}},
                                {"action": "Allow"},
                            ],
                        },
                    ),
                    gnp("no-rules", {"selector": f"{IN_Z} && pod == 'c'"}),
                    gnp(
                        "both",
                        {
                            "selector": f"{IN_Y} && pod == 'b'",
                            "ingress": [{"action": "Allow", "source": {"selector": "pod == 'a'"}}],
                            "egress": [
                                {"action": "Allow", "destination": {"selector": "pod == 'a'"}}
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    deny_db = {
        "selector": "all()",
        "types": EGR,
        "egress": [
            {"action": "Deny", "destination": {"selector": "role == 'db'"}},
            {"action": "Allow"},
        ],
    }
    add(
        15,
        "egress-deny-to-network-set",
        "NetworkSet y/dbs (role=db) holds x/c.  NetworkPolicies in y and z deny egress to "
        "role==db then allow: y pods cannot reach x/c; z's policy cannot see y's set",
        [
            step(
                [T().set("y", "x/c", False).probe(80)],
                apply=[
                    netset("dbs", "y", {"role": "db"}, ["{{hostcidr:x/c}}"]),
                    cnp("no-db", "y", deny_db),
                    cnp("no-db", "z", deny_db),
                ],
            )
        ],
    )
    add(
        16,
        "namespaced-policy-namespace-selector-all",
        "NetworkPolicy in x for pod==a admits source namespaceSelector all() && pod==b: pods b "
        "of every namespace",
        [
            step(
                [T().set("*", "x/a", False).set(["x/b", "y/b", "z/b"], "x/a", True).probe(80)],
                apply=[
                    cnp(
                        "b-anywhere",
                        "x",
                        {
                            "selector": "pod == 'a'",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {
                                        "namespaceSelector": "all()",
                                        "selector": "pod == 'b'",
                                    },
                                }
                            ],
                        },
                    )
                ],
            )
        ],
    )
    add(
        17,
        "port-range-and-named-port",
        "GNP for y pods: Allow TCP to ports '79:80', Allow UDP to named port serve-81-udp",
        [
            step(
                [
                    T().probe(80),
                    T().set("*", "y", False).probe(81),
                    T().set("*", "y", False).probe(80, "UDP"),
                    T().probe(81, "UDP"),
                ],
                apply=[
                    gnp(
                        "y-ports",
                        {
                            "selector": IN_Y,
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "protocol": "TCP",
                                    "destination": {"ports": ["79:80"]},
                                },
                                {
                                    "action": "Allow",
                                    "protocol": "UDP",
                                    "destination": {"ports": ["serve-81-udp"]},
                                },
                            ],
                        },
                    )
                ],
            )
        ],
    )
    add(
        18,
        "policy-selector-update",
        "GNP 'isolate' (Ingress, no rules) selects pod==a, then is updated to select pod==b",
        [
            step(
                [T().set("*", ["x/a", "y/a", "z/a"], False).probe(80)],
                apply=[gnp("isolate", {"selector": "pod == 'a'", "types": ING})],
            ),
            step(
                [T().set("*", ["x/b", "y/b", "z/b"], False).probe(80)],
                apply=[gnp("isolate", {"selector": "pod == 'b'", "types": ING})],
            ),
        ],
    )
    np_p = cnp(
        "p",
        "x",
        {
            "order": 10,
            "selector": "all()",
            "types": ING,
            "ingress": [{"action": "Allow", "source": {"selector": "pod == 'c'"}}],
        },
    )
    gnp_p = gnp("p", {"order": 20, "selector": IN_X, "types": ING, "ingress": [{"action": "Deny"}]})
    add(
        19,
        "same-name-namespaced-and-global",
        "NetworkPolicy x/p (order 10, allow from pod==c of x) and GlobalNetworkPolicy p (order "
        "20, deny into x).  Delete x/p: all into x denied.  Delete GNP p: all allowed",
        [
            step([T().set("*", "x", False).set("x/c", "x", True).probe(80)], apply=[np_p, gnp_p]),
            step([T().set("*", "x", False).probe(80)], delete=[ref(np_p)]),
            step([T().probe(80)], delete=[ref(gnp_p)]),
        ],
    )
    add(
        20,
        "ip-version-6-rule-does-not-match-v4",
        "GNP for z pods allows only ipVersion 6 (so IPv4 is denied); GNP for y pods allows "
        "ipVersion 4 from pod==a",
        [
            step(
                [
                    T()
                    .set("*", "z", False)
                    .set("*", "y", False)
                    .set(["x/a", "y/a", "z/a"], "y", True)
                    .probe(80)
                ],
                apply=[
                    gnp(
                        "v6-only",
                        {
                            "selector": IN_Z,
                            "types": ING,
                            "ingress": [{"action": "Allow", "ipVersion": 6}],
                        },
                    ),
                    gnp(
                        "v4-from-a",
                        {
                            "selector": IN_Y,
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "ipVersion": 4,
                                    "source": {"selector": "pod == 'a'"},
                                }
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    add(
        21,
        "egress-pass-then-ingress",
        "x pods: egress Pass (order 10) before an egress Deny (order 20): profile allows.  "
        "NetworkPolicy in y admits only namespace x",
        [
            step(
                [T().set(["y", "z"], "y", False).probe(80)],
                apply=[
                    gnp(
                        "pass-out",
                        {
                            "order": 10,
                            "selector": IN_X,
                            "types": EGR,
                            "egress": [{"action": "Pass"}],
                        },
                    ),
                    gnp(
                        "deny-out",
                        {
                            "order": 20,
                            "selector": IN_X,
                            "types": EGR,
                            "egress": [{"action": "Deny"}],
                        },
                    ),
                    cnp(
                        "only-x",
                        "y",
                        {
                            "selector": "all()",
                            "types": ING,
                            "ingress": [
                                {"action": "Allow", "source": {"namespaceSelector": "ns == 'x'"}}
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    add(
        22,
        "selector-and-not-selector",
        "GNP for x pods: Allow from has(pod) but notSelector pod==c: pods c cannot reach x",
        [
            step(
                [T().set(c_pods, "x", False).probe(80)],
                apply=[
                    gnp(
                        "not-c",
                        {
                            "selector": IN_X,
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {"selector": "has(pod)", "notSelector": "pod == 'c'"},
                                }
                            ],
                        },
                    )
                ],
            )
        ],
    )
    add(
        23,
        "egress-nets-with-not-nets",
        "NetworkPolicy in x for pod==b: egress only to the /4 of all pods but notNets z/a, z/b",
        [
            step(
                [T().set("x/b", ["z/a", "z/b"], False).probe(80)],
                apply=[
                    cnp(
                        "egress-nets",
                        "x",
                        {
                            "selector": "pod == 'b'",
                            "types": EGR,
                            "egress": [
                                {
                                    "action": "Allow",
                                    "destination": {
                                        "nets": ["{{supernet:x/a:4}}"],
                                        "notNets": ["{{hostcidr:z/a}}", "{{hostcidr:z/b}}"],
                                    },
                                }
                            ],
                        },
                    )
                ],
            )
        ],
    )
    add(
        24,
        "namespace-name-label",
        "NetworkPolicy in z admits source namespaceSelector projectcalico.org/name == 'x' "
        "(the automatic namespace name label)",
        [
            step(
                [T().set(["y", "z"], "z", False).probe(80)],
                apply=[
                    cnp(
                        "by-name",
                        "z",
                        {
                            "selector": "all()",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {
                                        "namespaceSelector": "projectcalico.org/name == 'x'"
                                    },
                                }
                            ],
                        },
                    )
                ],
            )
        ],
    )
    add(
        25,
        "quarantine-by-label",
        "GNP 'quarantine' (types Ingress+Egress, no rules) selects has(quarantine).  y/b "
        "labelled quarantine=true: cut off both ways; label removed: back",
        [
            step(
                [T().probe(80)],
                apply=[
                    gnp(
                        "quarantine",
                        {"order": 1, "selector": "has(quarantine)", "types": ["Ingress", "Egress"]},
                    )
                ],
            ),
            step(
                [T().set("*", "y/b", False).set("y/b", "*", False).probe(80)],
                label_changes=[
                    pod_label("y/b", {"pod": "b", "quarantine": "true"}, {"quarantine": "true"})
                ],
            ),
            step([T().probe(80)], label_changes=[pod_label("y/b", {"pod": "b"}, {})]),
        ],
    )
    add(
        26,
        "egress-namespace-selector-set-and-not-equal",
        "GNP for pod==c, Egress: Allow to namespaceSelector ns in {x, y} with selector "
        "pod != 'a': pods c reach only x/b, x/c, y/b, y/c",
        [
            step(
                [
                    T()
                    .set(c_pods, "*", False)
                    .set(c_pods, ["x/b", "x/c", "y/b", "y/c"], True)
                    .probe(80)
                ],
                apply=[
                    gnp(
                        "c-out",
                        {
                            "selector": "pod == 'c'",
                            "types": EGR,
                            "egress": [
                                {
                                    "action": "Allow",
                                    "destination": {
                                        "namespaceSelector": "ns in {'x', 'y'}",
                                        "selector": "pod != 'a'",
                                    },
                                }
                            ],
                        },
                    )
                ],
            )
        ],
    )
    b_and_c = ["x/b", "x/c", "y/b", "y/c", "z/b", "z/c"]
    add(
        27,
        "egress-rule-source-selector",
        "GNP for all pods, Egress: Allow only with source selector pod==a (the sender itself): "
        "pods b and c can send nothing",
        [
            step(
                [
                    T().set(b_and_c, "*", False).probe(80),
                    T().set(b_and_c, "*", False).probe(81, "UDP"),
                ],
                apply=[
                    gnp(
                        "only-a-sends",
                        {
                            "selector": "all()",
                            "types": EGR,
                            "egress": [{"action": "Allow", "source": {"selector": "pod == 'a'"}}],
                        },
                    )
                ],
            )
        ],
    )
    add(
        28,
        "pass-skips-kubernetes-policy",
        "Kubernetes deny-all (Ingress+Egress) in x; GNP order 10 for x pods Passes ingress from "
        "ns y: the Pass skips the Kubernetes policy (same tier), the profile allows y -> x; "
        "everything else into or out of x is denied",
        [
            step(
                [T().set("*", "x", False).set("y", "x", True).set("x", "*", False).probe(80)],
                apply=[
                    knp("deny-all", "x", {}, ingress=[], egress=[], types=["Ingress", "Egress"]),
                    gnp(
                        "pass-x",
                        {
                            "order": 10,
                            "selector": IN_X,
                            "types": ING,
                            "ingress": [
                                {"action": "Pass", "source": {"namespaceSelector": "ns == 'y'"}}
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    add(
        29,
        "not-selector-global-and-with-namespace-selector",
        "GNP for z pods allows source notSelector pod==a (any namespace); NetworkPolicy in y "
        "allows source namespaceSelector ns==x with notSelector pod==a (x/b, x/c only)",
        [
            step(
                [
                    T()
                    .set(["x/a", "y/a", "z/a"], "z", False)
                    .set("*", "y", False)
                    .set(["x/b", "x/c"], "y", True)
                    .probe(80)
                ],
                apply=[
                    gnp(
                        "not-a",
                        {
                            "selector": IN_Z,
                            "types": ING,
                            "ingress": [
                                {"action": "Allow", "source": {"notSelector": "pod == 'a'"}}
                            ],
                        },
                    ),
                    cnp(
                        "x-not-a",
                        "y",
                        {
                            "selector": "all()",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {
                                        "namespaceSelector": "ns == 'x'",
                                        "notSelector": "pod == 'a'",
                                    },
                                }
                            ],
                        },
                    ),
                ],
            )
        ],
    )
    clients = netset("clients", "x", {"role": "clients"}, ["{{hostcidr:z/a}}"])
    add(
        30,
        "network-set-via-namespace-selector-and-relabel",
        "NetworkSet x/clients (role=clients) holds z/a.  NetworkPolicy in y admits source "
        "namespaceSelector ns==x && role==clients: z/a gets in (its address is in a set of "
        "namespace x).  The set is relabelled role=other: z/a is refused",
        [
            step(
                [T().set("*", "y", False).set("z/a", "y", True).probe(80)],
                apply=[
                    clients,
                    cnp(
                        "from-x-clients",
                        "y",
                        {
                            "selector": "all()",
                            "types": ING,
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "source": {
                                        "namespaceSelector": "ns == 'x'",
                                        "selector": "role == 'clients'",
                                    },
                                }
                            ],
                        },
                    ),
                ],
            ),
            step(
                [T().set("*", "y", False).probe(80)],
                apply=[netset("clients", "x", {"role": "other"}, ["{{hostcidr:z/a}}"])],
            ),
        ],
    )
    return out


def main() -> None:
    path = Path(__file__).with_name("cases-calico-extra.json")
    path.write_text(json.dumps(cases(), indent=1) + "\n")


if __name__ == "__main__":
    main()
