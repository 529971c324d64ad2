"""Kubernetes NetworkPolicy converted to a Calico policy, as libcalico-go does.

- The policy becomes a namespaced Calico policy named ``knp.default.<name>`` at order 1000
  selecting ``podSelector`` (and ``projectcalico.org/orchestrator == 'k8s'``).
- ``policyTypes`` as given; when absent, Ingress, plus Egress if there are egress rules.
- Each rule becomes one Calico Allow rule per (peer, port) pair; no peers means any peer,
  no ports any port. A rule with no rules at all (``ingress: []``) allows nothing, which
  with the types makes the pod isolated.
- A peer's podSelector and namespaceSelector are ANDed; separate peers are ORed (separate
  rules). A peer without namespaceSelector sees the policy's namespace only (the namespaced
  policy's implicit restriction). ``ipBlock`` becomes nets, its ``except`` notNets.
- A port without protocol is TCP; a named port stays a name (resolved on the destination);
  ``endPort`` makes a ``"port:endPort"`` range.
"""

from __future__ import annotations

from typing import Any

K8S_POLICY_ORDER = 1000.0
K8S_POLICY_PREFIX = "knp.default."
ORCHESTRATOR_SELECTOR = "projectcalico.org/orchestrator == 'k8s'"


def _quote(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


def label_selector_to_calico(sel: Any, *, is_pod: bool) -> str | None:
    """A Kubernetes LabelSelector as Calico selector text; None for an absent selector.

    An empty pod selector is every pod; an empty namespace selector is every namespace.
    """
    if sel is None:
        return None
    terms: list[str] = []
    for key, value in sorted((sel.get("matchLabels") or {}).items()):
        terms.append(f"{key} == {_quote(str(value))}")
    for expr in sel.get("matchExpressions") or []:
        key = expr["key"]
        op = expr["operator"]
        values = ", ".join(_quote(str(v)) for v in expr.get("values") or [])
        if op == "In":
            terms.append(f"{key} in {{{values}}}")
        elif op == "NotIn":
            terms.append(f"{key} not in {{{values}}}")
        elif op == "Exists":
            terms.append(f"has({key})")
        elif op == "DoesNotExist":
            terms.append(f"!has({key})")
        else:
            raise ValueError(f"unknown matchExpressions operator {op!r}")
    if not terms:
        return "all()"
    return " && ".join(terms)


def _ports(raw_ports: list[Any] | None) -> list[tuple[str, Any]]:
    """(protocol, port-or-None) per Kubernetes port entry; [("", None)] for "any port"."""
    if not raw_ports:
        return [("", None)]
    out: list[tuple[str, Any]] = []
    for entry in raw_ports:
        protocol = str(entry.get("protocol") or "TCP").upper()
        port = entry.get("port")
        end_port = entry.get("endPort")
        if port is not None and end_port is not None:
            port = f"{port}:{end_port}"
        out.append((protocol, port))
    return out


def _peer_entity(peer: dict[str, Any] | None) -> dict[str, Any]:
    if peer is None:
        return {}
    block = peer.get("ipBlock")
    if block is not None:
        entity: dict[str, Any] = {"nets": [block["cidr"]]}
        if block.get("except"):
            entity["notNets"] = list(block["except"])
        return entity
    entity = {}
    pod = label_selector_to_calico(peer.get("podSelector"), is_pod=True)
    namespace = label_selector_to_calico(peer.get("namespaceSelector"), is_pod=False)
    # The orchestrator term makes a peer match pods only (never network sets).
    entity["selector"] = ORCHESTRATOR_SELECTOR + (f" && ({pod})" if pod else "")
    if namespace is not None:
        entity["namespaceSelector"] = namespace
    return entity


def _rules(raw_rules: list[Any], peer_field: str, ingress: bool) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for raw in raw_rules:
        raw = raw or {}
        peers = raw.get(peer_field) or [None]
        for peer in peers:
            for protocol, port in _ports(raw.get("ports")):
                entity = _peer_entity(peer)
                rule: dict[str, Any] = {"action": "Allow"}
                if protocol:
                    rule["protocol"] = protocol
                dst: dict[str, Any] = {}
                if port is not None:
                    dst["ports"] = [port]
                if ingress:
                    rule["source"] = entity
                    rule["destination"] = dst
                else:
                    rule["source"] = {}
                    rule["destination"] = {**entity, **dst}
                rules.append(rule)
    return rules


def convert_network_policy(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(Calico policy name, Calico NetworkPolicy spec) for a Kubernetes NetworkPolicy."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    pod_selector = label_selector_to_calico(spec.get("podSelector") or {}, is_pod=True)
    selector = ORCHESTRATOR_SELECTOR
    if pod_selector and pod_selector != "all()":
        selector += f" && ({pod_selector})"
    types = list(spec.get("policyTypes") or [])
    if not types:
        types = ["Ingress"]
        if spec.get("egress"):
            types.append("Egress")
    out: dict[str, Any] = {
        "order": K8S_POLICY_ORDER,
        "selector": selector,
        "types": types,
        "ingress": _rules(spec.get("ingress") or [], "from", True) if "Ingress" in types else [],
        "egress": _rules(spec.get("egress") or [], "to", False) if "Egress" in types else [],
    }
    return K8S_POLICY_PREFIX + str(meta.get("name", "")), out
