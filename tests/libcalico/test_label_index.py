"""LabelIndex: incremental selector/item matching, inheritance, callbacks, scale."""

import random
import time
from collections.abc import Hashable

import pytest

from libcalico.selector import LabelIndex, parse
from libcalico.selector import index as index_module


class Recorder:
    """Collects callbacks and mirrors the membership they describe."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.pairs: set[tuple[str, str]] = set()

    def started(self, selector_id: str, item_id: str) -> None:
        assert (selector_id, item_id) not in self.pairs, "duplicate start"
        self.pairs.add((selector_id, item_id))
        self.events.append(("start", selector_id, item_id))

    def stopped(self, selector_id: str, item_id: str) -> None:
        assert (selector_id, item_id) in self.pairs, "stop without start"
        self.pairs.remove((selector_id, item_id))
        self.events.append(("stop", selector_id, item_id))

    def take(self) -> list[tuple[str, str, str]]:
        events, self.events = sorted(self.events), []
        return events


def make_index() -> tuple[LabelIndex[str, str], Recorder]:
    recorder = Recorder()
    return LabelIndex[str, str](recorder.started, recorder.stopped), recorder


def test_selector_then_items_and_back() -> None:
    index, rec = make_index()
    index.update_selector("s1", parse("app == 'web'"))
    index.update_labels("ep1", {"app": "web"})
    index.update_labels("ep2", {"app": "db"})
    assert rec.take() == [("start", "s1", "ep1")]
    assert index.matching_items("s1") == {"ep1"}
    assert index.matching_selectors("ep1") == {"s1"}

    index.update_labels("ep2", {"app": "web"})
    index.update_labels("ep1", {"app": "db"})
    assert rec.take() == [("start", "s1", "ep2"), ("stop", "s1", "ep1")]

    index.update_labels("ep2", {"app": "web"})  # unchanged: no events
    assert rec.take() == []

    index.delete_labels("ep2")
    assert rec.take() == [("stop", "s1", "ep2")]
    assert index.matching_items("s1") == frozenset()
    index.delete_labels("ep2")  # deleting an unknown item is a no-op
    assert rec.take() == []


def test_items_then_selector_update_and_delete() -> None:
    index, rec = make_index()
    index.update_labels("a", {"tier": "fe", "env": "prod"})
    index.update_labels("b", {"tier": "be", "env": "prod"})
    index.update_labels("c", {"env": "dev"})
    index.update_selector("s", parse("env == 'prod'"))
    assert rec.take() == [("start", "s", "a"), ("start", "s", "b")]

    index.update_selector("s", parse("env=='prod'"))  # same selector: no events
    assert rec.take() == []

    index.update_selector("s", parse("tier == 'fe' || env == 'dev'"))
    assert rec.take() == [("start", "s", "c"), ("stop", "s", "b")]

    index.delete_selector("s")
    assert rec.take() == [("stop", "s", "a"), ("stop", "s", "c")]
    assert index.matching_selectors("a") == frozenset()
    assert index.selector("s") is None


def test_unanchored_selectors_see_every_item() -> None:
    index, rec = make_index()
    index.update_selector("all", parse("all()"))
    index.update_selector("no-a", parse("!has(a)"))
    index.update_selector("ne", parse("b != 'x'"))
    index.update_selector("global", parse("global()"))
    index.update_labels("i1", {})
    index.update_labels("i2", {"a": "1", "b": "x", "projectcalico.org/namespace": "ns"})
    assert index.matching_items("all") == {"i1", "i2"}
    assert index.matching_items("no-a") == {"i1"}
    assert index.matching_items("ne") == {"i1"}
    assert index.matching_items("global") == {"i1"}
    assert len(rec.take()) == 5


def test_contradictory_selector_matches_nothing() -> None:
    index, rec = make_index()
    index.update_labels("i", {"a": "x"})
    index.update_selector("never", parse("a == 'x' && a == 'y'"))
    assert index.matching_items("never") == frozenset()
    index.update_labels("i", {"a": "y"})
    assert rec.take() == []


def test_parent_labels_are_inherited_and_overridden() -> None:
    index, rec = make_index()
    index.update_selector("ns-prod", parse("env == 'prod'"))
    index.update_selector("web", parse("role == 'web'"))
    index.update_parent_labels("kns.a", {"env": "prod", "role": "web"})
    index.update_labels("pod1", {"role": "db"}, parent_ids=["kns.a"])
    # Own label role=db overrides the parent's role=web.
    assert rec.take() == [("start", "ns-prod", "pod1")]
    assert index.effective_labels("pod1") == {"env": "prod", "role": "db"}

    index.update_parent_labels("kns.a", {"env": "dev"})
    assert rec.take() == [("stop", "ns-prod", "pod1")]

    index.update_parent_labels("kns.a", {"env": "prod"})
    assert rec.take() == [("start", "ns-prod", "pod1")]
    index.delete_parent_labels("kns.a")
    assert rec.take() == [("stop", "ns-prod", "pod1")]

    # A parent whose labels arrive after the item still applies.
    index.update_parent_labels("kns.a", {"env": "prod"})
    assert rec.take() == [("start", "ns-prod", "pod1")]

    # Dropping the parent from the item's list stops inheritance.
    index.update_labels("pod1", {"role": "db"})
    assert rec.take() == [("stop", "ns-prod", "pod1")]
    index.update_parent_labels("kns.a", {"env": "prod", "x": "y"})
    assert rec.take() == []


def test_earlier_parent_wins() -> None:
    index, _ = make_index()
    index.update_parent_labels("p1", {"k": "one"})
    index.update_parent_labels("p2", {"k": "two", "only2": "yes"})
    index.update_labels("item", {}, parent_ids=["p1", "p2"])
    assert index.effective_labels("item") == {"k": "one", "only2": "yes"}
    index.update_labels("item", {}, parent_ids=["p2", "p1"])
    assert index.effective_labels("item") == {"k": "two", "only2": "yes"}
    assert index.effective_labels("unknown") is None


def test_callbacks_are_optional() -> None:
    index: LabelIndex[int, int] = LabelIndex()
    index.update_selector(1, parse("has(x)"))
    index.update_labels(7, {"x": ""})
    assert index.matching_items(1) == {7}


# -- randomized comparison with brute force -----------------------------------------------

_KEYS = ["app", "tier", "env", "projectcalico.org/namespace"]
_VALUES = ["a", "b", "c", "d"]


def _random_selector_text(rng: random.Random, depth: int = 2) -> str:
    if depth == 0 or rng.random() < 0.4:
        key = rng.choice(_KEYS)
        values = ", ".join(f"'{v}'" for v in rng.sample(_VALUES, rng.randint(0, 3)))
        return rng.choice(
            [
                f"{key} == '{rng.choice(_VALUES)}'",
                f"{key} != '{rng.choice(_VALUES)}'",
                f"{key} in {{{values}}}",
                f"{key} not in {{{values}}}",
                f"has({key})",
                f"!has({key})",
                f"{key} starts with '{rng.choice(_VALUES)}'",
                "all()",
                "global()",
            ]
        )
    parts = [_random_selector_text(rng, depth - 1) for _ in range(rng.randint(2, 3))]
    text = "(" + rng.choice([" && ", " || "]).join(parts) + ")"
    return ("!" if rng.random() < 0.15 else "") + text


def _random_labels(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(_VALUES) for k in _KEYS if rng.random() < 0.5}


@pytest.mark.parametrize("rebalance_every", [1024, 1])
def test_randomized_against_brute_force(
    rebalance_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rebalancing after every change exercises anchor moves; they must not change matches.
    monkeypatch.setattr(index_module, "_REBALANCE_MIN_CHANGES", rebalance_every)
    rng = random.Random(42)
    index, rec = make_index()
    selectors: dict[str, str] = {}
    own: dict[str, dict[str, str]] = {}
    parents_of: dict[str, list[Hashable]] = {}
    parent_labels: dict[Hashable, dict[str, str]] = {}

    def effective(item: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for parent in reversed(parents_of[item]):
            merged.update(parent_labels.get(parent, {}))
        merged.update(own[item])
        return merged

    for step in range(3000):
        action = rng.random()
        if action < 0.25:
            sel_id = f"s{rng.randrange(40)}"
            selectors[sel_id] = _random_selector_text(rng)
            index.update_selector(sel_id, parse(selectors[sel_id]))
        elif action < 0.32:
            sel_id = f"s{rng.randrange(40)}"
            selectors.pop(sel_id, None)
            index.delete_selector(sel_id)
        elif action < 0.72:
            item = f"i{rng.randrange(80)}"
            own[item] = _random_labels(rng)
            parents_of[item] = [f"p{rng.randrange(5)}" for _ in range(rng.randrange(3))]
            index.update_labels(item, own[item], parents_of[item])
        elif action < 0.8:
            item = f"i{rng.randrange(80)}"
            own.pop(item, None)
            parents_of.pop(item, None)
            index.delete_labels(item)
        elif action < 0.95:
            parent = f"p{rng.randrange(5)}"
            parent_labels[parent] = _random_labels(rng)
            index.update_parent_labels(parent, parent_labels[parent])
        else:
            parent = f"p{rng.randrange(5)}"
            parent_labels.pop(parent, None)
            index.delete_parent_labels(parent)

        if step % 50 == 0 or step > 2900:
            expected = {
                (sel_id, item)
                for sel_id, text in selectors.items()
                for item in own
                if parse(text).matches(effective(item))
            }
            assert rec.pairs == expected, step
            for sel_id in selectors:
                assert index.matching_items(sel_id) == {i for s, i in expected if s == sel_id}
            for item in own:
                assert index.matching_selectors(item) == {s for s, i in expected if i == item}
                assert index.effective_labels(item) == effective(item)


# -- scale ---------------------------------------------------------------------------------


def test_two_thousand_selectors_by_ten_thousand_items_is_fast() -> None:
    rng = random.Random(7)
    apps = [f"app-{n}" for n in range(200)]
    namespaces = [f"ns-{n}" for n in range(50)]
    matched = 0

    def started(_selector_id: int, _item_id: int) -> None:
        nonlocal matched
        matched += 1

    index: LabelIndex[int, int] = LabelIndex(started)
    # Selectors arrive before any item, so anchors are first chosen blind and later rebalanced.
    begin = time.perf_counter()
    for sel_id in range(2000):
        kind = sel_id % 50
        if kind == 0:
            text = f"!has(quarantine) && tier != '{rng.choice(['fe', 'be'])}'"  # unanchored
        elif kind < 10:
            text = f"projectcalico.org/namespace == '{rng.choice(namespaces)}' && has(app)"
        else:
            picks = ", ".join(f"'{a}'" for a in rng.sample(apps, 2))
            text = f"app in {{{picks}}} && tier == '{rng.choice(['fe', 'be'])}'"
        index.update_selector(sel_id, parse(text))
    for item_id in range(10_000):
        index.update_labels(
            item_id,
            {
                "app": rng.choice(apps),
                "tier": rng.choice(["fe", "be"]),
                "projectcalico.org/namespace": rng.choice(namespaces),
            },
        )
    # Then churn: relabel a tenth of the items and replace a tenth of the selectors.
    for item_id in range(0, 10_000, 10):
        index.update_labels(item_id, {"app": rng.choice(apps), "tier": "fe"})
    for sel_id in range(0, 2000, 10):
        index.update_selector(sel_id, parse(f"app == '{rng.choice(apps)}'"))
    elapsed = time.perf_counter() - begin
    print(f"2,000 selectors x 10,000 items: {elapsed:.2f}s, {matched} match starts")
    assert matched > 10_000
    assert elapsed < 15.0
