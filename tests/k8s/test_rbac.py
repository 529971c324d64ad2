"""Each service account can do what its service does against the API server, and no more:
`kubectl auth can-i` as the account, against the real API server with k8s/rbac.yaml applied.

The "needs" rows come from the code (k8s/README.md, RBAC, says where); the "never" rows are
what least privilege forbids: nobody reads Secrets, calico-node cannot write Pods' or Nodes'
specs, Typha writes nothing, the CNI plugin's account can do nothing at all.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.apiserver import ApiServer
from tests.k8s.k8skit import NAMESPACE, can_i

CRD = "crd.projectcalico.org"
# The kinds Felix's and BGP's syncers follow (libcalico/syncer: FELIX_PREFIXES, BGP_PREFIXES).
SYNCED_CRDS = [
    "globalnetworkpolicies", "networkpolicies", "globalnetworksets", "networksets", "profiles",
    "felixconfigurations", "bgpconfigurations", "bgppeers", "bgpfilters", "ippools",
]  # fmt: skip
IPAM_CRDS = ["ipamblocks", "blockaffinities", "ipamhandles"]
CORE_READ = ["pods", "namespaces", "serviceaccounts", "nodes"]
# Felix load-balances Services (FELIX_PREFIXES): calico-node and Typha read them, write nothing.
SERVICE_KINDS = ["services", "endpointslices.discovery.k8s.io"]
READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete"]

# (account, verb, resource, subresource, namespace or None for all, allowed)
Row = tuple[str, str, str, str, str | None, bool]


def rows(sa: str, verbs: list[str], resources: list[str], allowed: bool,
         sub: str = "", ns: str | None = None) -> list[Row]:  # fmt: skip
    return [(sa, v, r, sub, ns, allowed) for v in verbs for r in resources]


NODE = "calico-node"
TYPHA = "calico-typha"
KC = "calico-kube-controllers"
CNI = "calico-cni-plugin"

TABLE: list[Row] = [
    # calico-node: Felix, calico-ipamd, calico-bgpd.
    *rows(NODE, READ, CORE_READ, True),
    *rows(NODE, READ, ["networkpolicies.networking.k8s.io"], True),
    *rows(NODE, READ, [f"{k}.{CRD}" for k in SYNCED_CRDS], True),
    *rows(NODE, ["get", "list"], [f"ipamconfigs.{CRD}"], True),
    *rows(NODE, [*READ, "create", "update", "delete"], [f"{k}.{CRD}" for k in IPAM_CRDS], True),
    (NODE, "create", f"ippools.{CRD}", "", None, True),  # the default pool, once
    (NODE, "patch", "pods", "status", None, True),  # endpoint annotations
    (NODE, "update", "nodes", "status", None, True),  # Calico's node annotations
    (NODE, "list", "endpointslices.discovery.k8s.io", "", NAMESPACE, True),  # finding Typha
    *rows(NODE, READ, SERVICE_KINDS, True),
    *rows(NODE, WRITE, SERVICE_KINDS, False),
    (NODE, "update", "services", "status", None, False),
    *rows(NODE, ["create", "update", "patch", "delete"], ["pods", "nodes"], False),
    *rows(NODE, ["update", "delete"], [f"ippools.{CRD}"], False),
    *rows(NODE, WRITE, [f"{k}.{CRD}" for k in SYNCED_CRDS if k != "ippools"], False),
    *rows(NODE, WRITE, ["networkpolicies.networking.k8s.io", "namespaces"], False),
    (NODE, "create", "pods", "eviction", None, False),
    (NODE, "create", "serviceaccounts", "token", NAMESPACE, False),
    # calico-typha: reads what it fans out, writes nothing.
    *rows(TYPHA, READ, CORE_READ, True),
    *rows(TYPHA, READ, ["networkpolicies.networking.k8s.io"], True),
    *rows(TYPHA, READ, SERVICE_KINDS, True),
    *rows(TYPHA, WRITE, SERVICE_KINDS, False),
    *rows(TYPHA, READ, [f"{k}.{CRD}" for k in SYNCED_CRDS + IPAM_CRDS[:2]], True),
    *rows(TYPHA, WRITE, CORE_READ + [f"{k}.{CRD}" for k in SYNCED_CRDS + IPAM_CRDS], False),
    (TYPHA, "patch", "pods", "status", None, False),
    (TYPHA, "get", f"ipamhandles.{CRD}", "", None, False),
    # calico-kube-controllers (kubernetes datastore: the node controller, IPAM GC).
    *rows(KC, READ, ["nodes", "pods"], True),
    (KC, "list", "namespaces", "", None, True),
    *rows(KC, [*READ, "create", "update"], [f"kubecontrollersconfigurations.{CRD}"], True),
    # create: a release that fails half way writes back what it deleted (ordered_txn.py).
    *rows(KC, [*READ, "create", "update", "delete"], [f"{k}.{CRD}" for k in IPAM_CRDS], True),
    *rows(KC, READ, [f"ippools.{CRD}", f"ipamconfigs.{CRD}"], True),
    (KC, "create", "leases.coordination.k8s.io", "", NAMESPACE, True),
    (KC, "get", "leases.coordination.k8s.io/calico-kube-controllers", "", NAMESPACE, True),
    (KC, "update", "leases.coordination.k8s.io/calico-kube-controllers", "", NAMESPACE, True),
    (KC, "update", "leases.coordination.k8s.io/kube-scheduler", "", NAMESPACE, False),
    (KC, "create", "leases.coordination.k8s.io", "", "kube-system", False),
    *rows(KC, WRITE, ["pods", "nodes", "namespaces", f"ippools.{CRD}"], False),
    (KC, "update", "nodes", "status", None, False),
    (KC, "patch", "pods", "status", None, False),
    # The CNI plugin calls only the node's daemons over Unix sockets: no rights at all.
    *rows(CNI, [*READ, *WRITE], ["pods", "nodes", "namespaces", f"ipamblocks.{CRD}"], False),
    (CNI, "patch", "pods", "status", None, False),
    # Nobody reads Secrets or ConfigMaps through the API (the kubelet mounts them), and
    # nobody administers RBAC.
    *[
        (sa, v, "secrets", "", ns, False)
        for sa in (NODE, TYPHA, KC, CNI)
        for v in READ
        for ns in (None, NAMESPACE)
    ],
    *[(sa, "get", "configmaps", "", NAMESPACE, False) for sa in (NODE, TYPHA, KC, CNI)],
    *[
        (sa, "create", r, "", None, False)
        for sa in (NODE, TYPHA, KC, CNI)
        for r in (
            "clusterroles.rbac.authorization.k8s.io",
            "clusterrolebindings.rbac.authorization.k8s.io",
        )
    ],
]


def _describe(row: Row) -> str:
    sa, verb, resource, sub, ns, allowed = row
    target = f"{resource}/{sub}" if sub else resource
    return f"{sa} {'can' if allowed else 'cannot'} {verb} {target} in {ns or 'all namespaces'}"


def test_each_account_can_do_what_its_service_needs_and_no_more(
    kube_api: ApiServer, installed: Path
) -> None:
    def check(row: Row) -> str:
        sa, verb, resource, sub, ns, allowed = row
        return "" if can_i(kube_api, sa, verb, resource, ns, sub) == allowed else _describe(row)

    with ThreadPoolExecutor(max_workers=4) as pool:
        wrong = [problem for problem in pool.map(check, TABLE) if problem]
    print(f"{len(TABLE)} kubectl auth can-i checks")
    assert not wrong, "expected: " + "; ".join(wrong)


def test_cluster_roles_grant_nothing_beyond_the_table(kube_api: ApiServer, installed: Path) -> None:
    # The table's "needs" rows asked the other way round: every rule in an account's
    # ClusterRole is covered by an allowed row, so a rule added without a reason fails here.
    allowed = {(r[0], r[1], r[2].split("/")[0], r[3]) for r in TABLE if r[5]}
    for sa in (NODE, TYPHA, KC):
        role = json.loads(kube_api.kubectl(["get", "clusterrole", sa, "-o", "json"]).stdout)
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    name, _, sub = resource.partition("/")
                    qualified = f"{name}.{group}" if group else name
                    for verb in rule["verbs"]:
                        assert (sa, verb, qualified, sub) in allowed, (sa, verb, resource)
