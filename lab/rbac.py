"""Who may do what on the lab's API server: Calico's daemons and calico-kube-controllers.

The lab's API server authenticates by static tokens (lab/apiserver.py). Besides `admin`
(system:masters: the lab CLI, kubectl, calicoctl), it has two users with only the rights
RBAC grants here, shaped like the roles a Calico install gives its service accounts:

- `calico-node`: calico-felix, calico-ipamd, calico-bgpd and calico-typha. They read
  Kubernetes kinds (pods, namespaces, service accounts, NetworkPolicy, nodes, Services and
  EndpointSlices), write Calico's data on the Node (its BGP and tunnel addresses are Node
  annotations on this backend) and on the Pod (the endpoint's addresses are Pod
  annotations), and read and write Calico's custom resources (IPAM blocks, affinities and
  handles among them).
- `calico-kube-controllers`: reads the Kubernetes kinds it copies or garbage-collects
  against, writes Calico's custom resources, and holds its leader-election Lease.

Neither may create or delete Pods, Namespaces or Nodes, nor touch RBAC.
"""

from __future__ import annotations

from typing import Any

NODE_USER = "calico-node"
CONTROLLERS_USER = "calico-kube-controllers"
USERS = (NODE_USER, CONTROLLERS_USER)

READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete"]


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def node_rules() -> list[dict[str, Any]]:
    return [
        _rule("", ["pods", "namespaces", "serviceaccounts", "endpoints", "services"], READ),
        _rule("", ["nodes"], [*READ, "update", "patch"]),
        _rule("", ["nodes/status"], ["get", "update", "patch"]),
        _rule("", ["pods"], ["update", "patch"]),  # the endpoint's annotations
        _rule("", ["pods/status"], ["get", "update", "patch"]),
        _rule("networking.k8s.io", ["networkpolicies"], READ),
        # Felix load-balances Services: its syncer follows their EndpointSlices too.
        _rule("discovery.k8s.io", ["endpointslices"], READ),
        _rule("crd.projectcalico.org", ["*"], [*READ, *WRITE]),
    ]


def controllers_rules() -> list[dict[str, Any]]:
    return [
        _rule("", ["pods", "namespaces", "serviceaccounts", "nodes"], READ),
        _rule("networking.k8s.io", ["networkpolicies"], READ),
        # Copied into etcd for Felix (services/controllers/copies.py).
        _rule("", ["services"], READ),
        _rule("discovery.k8s.io", ["endpointslices"], READ),
        _rule("crd.projectcalico.org", ["*"], [*READ, *WRITE, "deletecollection"]),
        _rule("coordination.k8s.io", ["leases"], [*READ, *WRITE]),
    ]


def _role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def _binding(name: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def manifests() -> list[dict[str, Any]]:
    """The ClusterRoles and their bindings, one pair per user (role named as the user)."""
    return [
        _role(NODE_USER, node_rules()),
        _binding(NODE_USER, NODE_USER),
        _role(CONTROLLERS_USER, controllers_rules()),
        _binding(CONTROLLERS_USER, CONTROLLERS_USER),
    ]
