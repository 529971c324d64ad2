"""Selector rewriting: namespace and service-account selectors as label selectors.

Endpoints inherit their namespace's labels prefixed ``pcns.`` and their service account's
prefixed ``pcsa.`` (through the label index's parents), as Calico's profiles do. A
``namespaceSelector: ns == 'x'`` therefore becomes ``pcns.ns == 'x'`` over endpoint labels.
"""

from __future__ import annotations

import dataclasses

from libcalico.selector import NAMESPACE_LABEL, Selector, parse
from libcalico.selector.nodes import (
    AllNode,
    AndNode,
    EqualsNode,
    GlobalNode,
    HasNode,
    InSetNode,
    Node,
    NotNode,
    OrNode,
    make_and,
    make_not,
    make_or,
)

NAMESPACE_PREFIX = "pcns."
SERVICE_ACCOUNT_PREFIX = "pcsa."
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
NAME_LABEL = "projectcalico.org/name"


def prefix_keys(node: Node, prefix: str) -> Node:
    """The same expression reading ``prefix + key`` wherever it read ``key``."""
    if isinstance(node, NotNode):
        return make_not(prefix_keys(node.operand, prefix))
    if isinstance(node, AndNode):
        return make_and([prefix_keys(n, prefix) for n in node.operands])
    if isinstance(node, OrNode):
        return make_or([prefix_keys(n, prefix) for n in node.operands])
    key = getattr(node, "key", None)
    if isinstance(key, str):
        return dataclasses.replace(node, key=prefix + key)  # type: ignore[type-var]
    return node


def namespace_selector_node(text: str) -> Node:
    """A rule/policy ``namespaceSelector`` as a node over endpoint labels.

    ``global()`` means non-namespaced entities; ``all()`` every namespaced one; anything else
    selects namespaced entities whose namespace labels match.
    """
    root = parse(text).root
    if isinstance(root, GlobalNode):
        return make_not(HasNode(NAMESPACE_LABEL))
    has_namespace = HasNode(NAMESPACE_LABEL)
    if isinstance(root, AllNode):
        return has_namespace
    return make_and([has_namespace, prefix_keys(root, NAMESPACE_PREFIX)])


def service_accounts_node(names: list[str], selector: str | None) -> Node | None:
    parts: list[Node] = []
    if names:
        parts.append(InSetNode(SERVICE_ACCOUNT_LABEL, tuple(sorted(set(names))), False))
    if selector:
        parts.append(prefix_keys(parse(selector).root, SERVICE_ACCOUNT_PREFIX))
    return make_and(parts) if parts else None


def in_namespace(namespace: str) -> Node:
    return EqualsNode(NAMESPACE_LABEL, namespace)


def combine(parts: list[Node]) -> Selector:
    """AND of the parts (``all()`` when empty) as a Selector."""
    if not parts:
        return Selector(AllNode())
    return Selector(make_and(parts) if len(parts) > 1 else parts[0])
