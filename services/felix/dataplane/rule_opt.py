"""Shortening a run of inline policy rules without changing any packet's verdict.

A new connection pays for every rule it is evaluated against; measured here, one set lookup
per policy is what 100 policies on a server cost. Two exact rewrites remove most of them:

- **Dead rules**: a terminal rule (Allow/Deny/Pass: not Log) identical to an earlier one can
  never decide anything (a packet it matches was decided by the earlier copy; the optional
  pass-mark guard is part of the identity and the mark is only ever set along a chain).
- **Unions**: terminal rules identical except for one side's selector IP set become one rule
  matching the union of those sets. A rule may move up to join an earlier such rule only past
  rules it cannot overlap (different protocol), so the first rule matching any packet keeps
  its action. Typical case: many policies allowing TCP to the same port from different
  selectors, separated by their UDP rules.

Union sets are named ``u:<hash of the sorted constituent ids>``; the dataplane keeps their
members equal to the union of the constituents' members.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from libcalico.selector import make_unique_id
from services.felix.calc.model import Action, Rule

UNION_KIND = "u"
# (guard, rule): guard is an opaque match prefix (the pass-mark check) the rule carries.
Item = tuple[str, Rule]


def union_id(constituents: tuple[str, ...]) -> str:
    return make_unique_id(UNION_KIND, ",".join(constituents))


def is_union(set_id: str) -> bool:
    return set_id.startswith(f"{UNION_KIND}:")


def _keys(rule: Rule) -> dict[str, Rule]:
    """The rule with one side's selector set blanked, per side that has one."""
    out: dict[str, Rule] = {}
    if rule.src.ipset:
        out["src"] = replace(rule, src=replace(rule.src, ipset=None))
    if rule.dst.ipset:
        out["dst"] = replace(rule, dst=replace(rule.dst, ipset=None))
    return out


def disjoint(a: Rule, b: Rule) -> bool:
    """True when no packet can match both rules (decided on protocol only)."""
    if a.protocol is not None and b.protocol is not None:
        return a.protocol != b.protocol
    if a.protocol is not None and a.protocol == b.not_protocol:
        return True
    return b.protocol is not None and b.protocol == a.not_protocol


@dataclass(slots=True)
class _Entry:
    guard: str
    rule: Rule
    keys: dict[str, Rule]
    side: str | None = None  # fixed once a second rule joined
    sets: list[str] = field(default_factory=list)

    def joins(self, guard: str, keys: dict[str, Rule]) -> str | None:
        if guard != self.guard:
            return None
        for side, key in keys.items():
            if self.side in (None, side) and self.keys.get(side) == key:
                return side
        return None


def optimise(items: list[Item], unions: dict[str, tuple[str, ...]]) -> list[Item]:
    """The rules to render, in order; union sets used are added to ``unions``."""
    out: list[_Entry] = []
    terminal_seen: set[Item] = set()
    for guard, rule in items:
        terminal = rule.action is not Action.LOG
        if terminal and (guard, rule) in terminal_seen:
            continue  # dead: an identical earlier rule decides every packet it matches
        keys = _keys(rule) if terminal else {}
        joined = False
        if keys:
            for entry in reversed(out):
                side = entry.joins(guard, keys)
                if side is not None:
                    if entry.side is None:
                        entry.side = side
                        entry.sets.append(_side_set(entry.rule, side))
                    entry.sets.append(_side_set(rule, side))
                    joined = True
                    break
                if not disjoint(entry.rule, rule):
                    break
        if terminal:
            terminal_seen.add((guard, rule))
        if not joined:
            out.append(_Entry(guard, rule, keys))
    result: list[Item] = []
    for entry in out:
        if entry.side is None:
            result.append((entry.guard, entry.rule))
            continue
        constituents = tuple(sorted(set(entry.sets)))
        uid = union_id(constituents)
        unions[uid] = constituents
        side_match = getattr(entry.rule, entry.side)
        merged = replace(entry.rule, **{entry.side: replace(side_match, ipset=uid)})
        result.append((entry.guard, merged))
    return result


def _side_set(rule: Rule, side: str) -> str:
    value: str | None = (rule.src if side == "src" else rule.dst).ipset
    assert value is not None
    return value
