"""Selector syntax tree: canonical rendering, compilation to matchers, label restrictions.

Every node can
- ``render`` itself in canonical form (the same spelling libcalico-go's ``String()`` gives:
  values in double quotes unless they contain one, ``&&``/``||`` groups in parentheses,
  set members sorted);
- ``compile`` itself once into a closure, so matching never re-walks the tree;
- report ``restrictions``: labels that must be present (optionally with one of a set of
  values) for it to match, which the label index uses to avoid scanning every selector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Labels = Mapping[str, str]
Matcher = Callable[[Labels], bool]

# key -> allowed values, or None when any value will do but the key must be present.
Restrictions = dict[str, frozenset[str] | None]

# Label Calico puts on every namespaced entity; global() matches entities without it.
NAMESPACE_LABEL = "projectcalico.org/namespace"


def quote(value: str) -> str:
    """Quote a literal as Calico does: double quotes unless the value contains one."""
    return f"'{value}'" if '"' in value else f'"{value}"'


def _always(_labels: Labels) -> bool:
    return True


class Node(ABC):
    """A selector expression."""

    __slots__ = ()

    @abstractmethod
    def render(self, out: list[str]) -> None:
        """Append this node's canonical text to ``out``."""

    @abstractmethod
    def compile(self) -> Matcher:
        """Build a closure that evaluates this node against a label mapping."""

    @abstractmethod
    def restrictions(self, negated: bool) -> Restrictions:
        """Labels required for this node (or its negation, if ``negated``) to be true."""

    @abstractmethod
    def collect_keys(self, into: set[str]) -> None:
        """Add every label key this node reads to ``into``."""


@dataclass(frozen=True, slots=True)
class AllNode(Node):
    def render(self, out: list[str]) -> None:
        out.append("all()")

    def compile(self) -> Matcher:
        return _always

    def restrictions(self, negated: bool) -> Restrictions:
        return {}

    def collect_keys(self, into: set[str]) -> None:
        pass


@dataclass(frozen=True, slots=True)
class GlobalNode(Node):
    """Matches non-namespaced entities: those without a ``projectcalico.org/namespace`` label."""

    def render(self, out: list[str]) -> None:
        out.append("global()")

    def compile(self) -> Matcher:
        key = NAMESPACE_LABEL
        return lambda labels: key not in labels

    def restrictions(self, negated: bool) -> Restrictions:
        return {NAMESPACE_LABEL: None} if negated else {}

    def collect_keys(self, into: set[str]) -> None:
        into.add(NAMESPACE_LABEL)


@dataclass(frozen=True, slots=True)
class HasNode(Node):
    key: str

    def render(self, out: list[str]) -> None:
        out.extend(("has(", self.key, ")"))

    def compile(self) -> Matcher:
        key = self.key
        return lambda labels: key in labels

    def restrictions(self, negated: bool) -> Restrictions:
        return {} if negated else {self.key: None}

    def collect_keys(self, into: set[str]) -> None:
        into.add(self.key)


@dataclass(frozen=True, slots=True)
class EqualsNode(Node):
    key: str
    value: str

    def render(self, out: list[str]) -> None:
        out.extend((self.key, " == ", quote(self.value)))

    def compile(self) -> Matcher:
        key, value = self.key, self.value
        return lambda labels: labels.get(key) == value

    def restrictions(self, negated: bool) -> Restrictions:
        return {} if negated else {self.key: frozenset((self.value,))}

    def collect_keys(self, into: set[str]) -> None:
        into.add(self.key)


@dataclass(frozen=True, slots=True)
class NotEqualsNode(Node):
    """True when the label is absent or has another value."""

    key: str
    value: str

    def render(self, out: list[str]) -> None:
        out.extend((self.key, " != ", quote(self.value)))

    def compile(self) -> Matcher:
        key, value = self.key, self.value
        return lambda labels: labels.get(key) != value

    def restrictions(self, negated: bool) -> Restrictions:
        return {self.key: frozenset((self.value,))} if negated else {}

    def collect_keys(self, into: set[str]) -> None:
        into.add(self.key)


@dataclass(frozen=True, slots=True)
class InSetNode(Node):
    """``key in {...}`` or, when ``negated``, ``key not in {...}`` (true when absent)."""

    key: str
    values: tuple[str, ...]  # sorted, without duplicates
    negated: bool

    def render(self, out: list[str]) -> None:
        op = " not in {" if self.negated else " in {"
        out.extend((self.key, op, ", ".join(quote(v) for v in self.values), "}"))

    def compile(self) -> Matcher:
        key, values = self.key, frozenset(self.values)
        if self.negated:
            return lambda labels: labels.get(key) not in values
        return lambda labels: labels.get(key) in values

    def restrictions(self, negated: bool) -> Restrictions:
        if negated == self.negated:
            return {self.key: frozenset(self.values)}
        return {}

    def collect_keys(self, into: set[str]) -> None:
        into.add(self.key)


# The string operators: canonical spelling -> test of (label value, literal).
STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "contains": str.__contains__,
    "starts with": str.startswith,
    "ends with": str.endswith,
}


@dataclass(frozen=True, slots=True)
class StringMatchNode(Node):
    """``key contains 'x'``, ``key starts with 'x'``, ``key ends with 'x'``: the label must
    be present and its value pass the operator's test."""

    key: str
    operator: str  # a key of STRING_TESTS
    value: str

    def render(self, out: list[str]) -> None:
        out.extend((self.key, f" {self.operator} ", quote(self.value)))

    def compile(self) -> Matcher:
        key, literal, test = self.key, self.value, STRING_TESTS[self.operator]

        def matcher(labels: Labels) -> bool:
            found = labels.get(key)
            return found is not None and test(found, literal)

        return matcher

    def restrictions(self, negated: bool) -> Restrictions:
        return {} if negated else {self.key: None}

    def collect_keys(self, into: set[str]) -> None:
        into.add(self.key)


@dataclass(frozen=True, slots=True)
class NotNode(Node):
    operand: Node

    def render(self, out: list[str]) -> None:
        out.append("!")
        self.operand.render(out)

    def compile(self) -> Matcher:
        inner = self.operand.compile()
        return lambda labels: not inner(labels)

    def restrictions(self, negated: bool) -> Restrictions:
        return self.operand.restrictions(not negated)

    def collect_keys(self, into: set[str]) -> None:
        self.operand.collect_keys(into)


def _intersect(parts: list[Restrictions]) -> Restrictions:
    """Restrictions that all hold at once (every part's requirements)."""
    merged: Restrictions = {}
    for part in parts:
        for key, values in part.items():
            if key not in merged:
                merged[key] = values
            elif values is not None:
                current = merged[key]
                merged[key] = values if current is None else current & values
    return merged


def _union(parts: list[Restrictions]) -> Restrictions:
    """Restrictions implied by any one part holding (only keys every part requires)."""
    merged = dict(parts[0])
    for part in parts[1:]:
        for key in list(merged):
            if key not in part:
                del merged[key]
                continue
            current, values = merged[key], part[key]
            merged[key] = None if current is None or values is None else current | values
    return merged


@dataclass(frozen=True, slots=True)
class AndNode(Node):
    operands: tuple[Node, ...]  # two or more, none of them an AndNode

    def render(self, out: list[str]) -> None:
        _render_group(out, self.operands, " && ")

    def compile(self) -> Matcher:
        matchers = tuple(op.compile() for op in self.operands)
        if len(matchers) == 2:
            first, second = matchers
            return lambda labels: first(labels) and second(labels)
        if len(matchers) == 3:
            first, second, third = matchers
            return lambda labels: first(labels) and second(labels) and third(labels)

        def matcher(labels: Labels) -> bool:
            for each in matchers:  # noqa: SIM110 (a loop beats all(<generator>) here)
                if not each(labels):
                    return False
            return True

        return matcher

    def restrictions(self, negated: bool) -> Restrictions:
        parts = [op.restrictions(negated) for op in self.operands]
        # De Morgan: not (a and b) == (not a) or (not b).
        return _union(parts) if negated else _intersect(parts)

    def collect_keys(self, into: set[str]) -> None:
        for op in self.operands:
            op.collect_keys(into)


@dataclass(frozen=True, slots=True)
class OrNode(Node):
    operands: tuple[Node, ...]  # two or more, none of them an OrNode

    def render(self, out: list[str]) -> None:
        _render_group(out, self.operands, " || ")

    def compile(self) -> Matcher:
        matchers = tuple(op.compile() for op in self.operands)
        if len(matchers) == 2:
            first, second = matchers
            return lambda labels: first(labels) or second(labels)
        if len(matchers) == 3:
            first, second, third = matchers
            return lambda labels: first(labels) or second(labels) or third(labels)

        def matcher(labels: Labels) -> bool:
            for each in matchers:  # noqa: SIM110 (a loop beats any(<generator>) here)
                if each(labels):
                    return True
            return False

        return matcher

    def restrictions(self, negated: bool) -> Restrictions:
        parts = [op.restrictions(negated) for op in self.operands]
        return _intersect(parts) if negated else _union(parts)

    def collect_keys(self, into: set[str]) -> None:
        for op in self.operands:
            op.collect_keys(into)


def _render_group(out: list[str], operands: tuple[Node, ...], separator: str) -> None:
    out.append("(")
    for index, op in enumerate(operands):
        if index:
            out.append(separator)
        op.render(out)
    out.append(")")


def make_not(operand: Node) -> Node:
    """Negate ``operand``, cancelling a double negation."""
    return operand.operand if isinstance(operand, NotNode) else NotNode(operand)


def make_and(operands: list[Node]) -> Node:
    """Join operands with &&, flattening nested && groups (the parentheses are redundant)."""
    flat: list[Node] = []
    for op in operands:
        flat.extend(op.operands if isinstance(op, AndNode) else (op,))
    return flat[0] if len(flat) == 1 else AndNode(tuple(flat))


def make_or(operands: list[Node]) -> Node:
    """Join operands with ||, flattening nested || groups."""
    flat: list[Node] = []
    for op in operands:
        flat.extend(op.operands if isinstance(op, OrNode) else (op,))
    return flat[0] if len(flat) == 1 else OrNode(tuple(flat))
