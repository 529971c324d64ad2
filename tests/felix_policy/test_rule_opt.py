"""rule_opt: dead-rule removal and union sets (pure; the kernel tests check verdicts)."""

from __future__ import annotations

from services.felix.calc.model import Action, Match, Rule
from services.felix.dataplane.rule_opt import Item, optimise, union_id

TCP, UDP = 6, 17


def allow_tcp(src_set: str, port: int = 80) -> Rule:
    return Rule(
        Action.ALLOW, protocol=TCP, src=Match(ipset=src_set), dst=Match(ports=((port, port),))
    )


UDP_DENY = Rule(Action.DENY, protocol=UDP, src=Match(nets=("192.168.0.0/16",)))


def run(rules: list[Rule], guard: str = "") -> tuple[list[Rule], dict[str, tuple[str, ...]]]:
    unions: dict[str, tuple[str, ...]] = {}
    items: list[Item] = [(guard, r) for r in rules]
    return [r for _, r in optimise(items, unions)], unions


def test_allows_past_other_protocols_merge_and_duplicates_go() -> None:
    out, unions = run([allow_tcp("s:1"), UDP_DENY, allow_tcp("s:2"), UDP_DENY, allow_tcp("s:3")])
    uid = union_id(("s:1", "s:2", "s:3"))
    assert out == [allow_tcp(uid), UDP_DENY]
    assert unions == {uid: ("s:1", "s:2", "s:3")}


def test_overlapping_rule_is_a_barrier() -> None:
    deny_c = Rule(Action.DENY, protocol=TCP, src=Match(ipset="s:c"))
    out, unions = run([allow_tcp("s:1"), deny_c, allow_tcp("s:2"), allow_tcp("s:3")])
    uid = union_id(("s:2", "s:3"))
    assert out == [allow_tcp("s:1"), deny_c, allow_tcp(uid)]
    assert list(unions) == [uid]


def test_different_shapes_actions_and_logs_stay_apart() -> None:
    log = Rule(Action.LOG, protocol=TCP, src=Match(ipset="s:1"))
    rules = [allow_tcp("s:1"), allow_tcp("s:2", port=81), log, log]
    out, unions = run(rules)
    assert out == rules  # a Log is never dropped or merged (it is not terminal)
    assert not unions


def test_guard_is_part_of_identity() -> None:
    unions: dict[str, tuple[str, ...]] = {}
    items: list[Item] = [("", allow_tcp("s:1")), ("g ", allow_tcp("s:1")), ("g ", allow_tcp("s:2"))]
    out = optimise(items, unions)
    assert out[0] == ("", allow_tcp("s:1"))
    assert out[1] == ("g ", allow_tcp(union_id(("s:1", "s:2"))))
