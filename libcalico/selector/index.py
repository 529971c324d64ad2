"""An incremental index of which selectors match which labelled items.

Felix's calculation graph keeps thousands of selectors (policy selectors, IP-set selectors)
matched against tens of thousands of endpoints; re-evaluating every pair on each change is
quadratic. Instead, each selector is *anchored* on one label it requires (from
``Selector.label_restrictions``): ``app == 'x' && ...`` is anchored on (app, x), ``app in
{'x', 'y'}`` on (app, x) and (app, y), ``has(app)`` on the key app. Items are indexed by
(key, value) and by key. A change then only evaluates the pairs that could possibly match:

- an item change evaluates the selectors anchored on one of its (key, value) pairs or keys,
  plus the unanchored ones (``all()``, ``!has(x)``, ``a != 'b'``, ...);
- a selector change evaluates only the items that carry its anchor (all items if unanchored).

Label inheritance: an item may name parents (profiles, namespaces) whose labels it inherits.
Its effective labels are its own labels, falling back to its parents' labels in the order the
parents are listed (the first parent that has a key wins), as Felix does for profile labels.

``on_match_started(selector_id, item_id)`` / ``on_match_stopped(selector_id, item_id)`` fire
exactly once per change in membership; the index state is already updated when they run.
Callbacks must not modify the index themselves (queue the work instead).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from libcalico.selector.selector import Selector

ItemId = TypeVar("ItemId", bound=Hashable)
SelectorId = TypeVar("SelectorId", bound=Hashable)

MatchCallback = Callable[[SelectorId, ItemId], None]


def _ignore(_selector_id: object, _item_id: object) -> None:
    pass


@dataclass(frozen=True, slots=True)
class _Anchor:
    """Which label a selector is indexed on.

    ``key`` None: unanchored (checked against every item). ``values`` None: anchored on the
    key's presence. Otherwise anchored on each (key, value); an empty set means the selector
    can never match and is checked against nothing.
    """

    key: str | None
    values: frozenset[str] | None


_UNANCHORED = _Anchor(None, None)

# Re-choose selector anchors after at least this many item changes (and at least as many as
# there are selectors, so the rebalancing cost stays amortised O(1) per change).
_REBALANCE_MIN_CHANGES = 1024


def _diff_labels(
    old: Mapping[str, str], new: Mapping[str, str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(pairs removed, pairs added) going from ``old`` to ``new``."""
    removed = [(k, v) for k, v in old.items() if new.get(k) != v]
    added = [(k, v) for k, v in new.items() if old.get(k) != v]
    return removed, added


class LabelIndex(Generic[ItemId, SelectorId]):
    """Tracks, incrementally, which items' labels each selector matches."""

    def __init__(
        self,
        on_match_started: MatchCallback[SelectorId, ItemId] | None = None,
        on_match_stopped: MatchCallback[SelectorId, ItemId] | None = None,
    ) -> None:
        self._on_started: MatchCallback[SelectorId, ItemId] = on_match_started or _ignore
        self._on_stopped: MatchCallback[SelectorId, ItemId] = on_match_stopped or _ignore

        self._selectors: dict[SelectorId, Selector] = {}
        self._anchors: dict[SelectorId, _Anchor] = {}
        self._selectors_by_pair: dict[tuple[str, str], set[SelectorId]] = {}
        self._selectors_by_key: dict[str, set[SelectorId]] = {}
        self._unanchored: set[SelectorId] = set()

        self._own_labels: dict[ItemId, Mapping[str, str]] = {}
        self._parents_of: dict[ItemId, tuple[Hashable, ...]] = {}
        self._labels: dict[ItemId, dict[str, str]] = {}  # effective labels
        self._items_by_pair: dict[tuple[str, str], set[ItemId]] = {}
        self._items_by_key: dict[str, set[ItemId]] = {}
        self._parent_labels: dict[Hashable, Mapping[str, str]] = {}
        self._children: dict[Hashable, set[ItemId]] = {}

        self._items_matching: dict[SelectorId, set[ItemId]] = {}
        self._selectors_matching: dict[ItemId, set[SelectorId]] = {}
        self._changes_since_rebalance = 0

    # -- queries -------------------------------------------------------------------------

    def matching_items(self, selector_id: SelectorId) -> frozenset[ItemId]:
        """Items the selector currently matches (empty if the selector is unknown)."""
        return frozenset(self._items_matching.get(selector_id, ()))

    def matching_selectors(self, item_id: ItemId) -> frozenset[SelectorId]:
        """Selectors currently matching the item (empty if the item is unknown)."""
        return frozenset(self._selectors_matching.get(item_id, ()))

    def effective_labels(self, item_id: ItemId) -> Mapping[str, str] | None:
        """The item's labels including inherited ones, or None if the item is unknown."""
        return self._labels.get(item_id)

    def selector(self, selector_id: SelectorId) -> Selector | None:
        return self._selectors.get(selector_id)

    # -- selectors -----------------------------------------------------------------------

    def update_selector(self, selector_id: SelectorId, selector: Selector) -> None:
        """Add or replace a selector and fire callbacks for the membership that changes."""
        if self._selectors.get(selector_id) == selector:
            return
        if selector_id in self._selectors:
            self._unanchor(selector_id)
        self._selectors[selector_id] = selector
        anchor = self._choose_anchor(selector)
        self._anchor(selector_id, anchor)

        matches = selector.matches
        labels = self._labels
        now_matching = {item for item in self._candidate_items(anchor) if matches(labels[item])}
        previously = self._items_matching.get(selector_id, set())
        for item in [i for i in previously if i not in now_matching]:
            self._stop(selector_id, item)
        for item in [i for i in now_matching if i not in previously]:
            self._start(selector_id, item)

    def delete_selector(self, selector_id: SelectorId) -> None:
        """Remove a selector, firing on_match_stopped for every item it matched."""
        if selector_id not in self._selectors:
            return
        for item in list(self._items_matching.get(selector_id, ())):
            self._stop(selector_id, item)
        self._unanchor(selector_id)
        del self._selectors[selector_id]
        self._items_matching.pop(selector_id, None)

    def _choose_anchor(self, selector: Selector) -> _Anchor:
        """Pick the required label that narrows the candidate items the most.

        The cost of an anchor is the number of items carrying it: both a selector change and
        the item changes that re-evaluate the selector scale with it. Ties (e.g. before any
        item is known) go to the anchor with the fewest selectors already on it, which
        spreads selectors across values instead of piling them on a low-cardinality key.
        """
        best = _UNANCHORED
        best_rank: tuple[int, int, int] | None = None
        for key, values in selector.label_restrictions.items():
            if values is None:
                rank = (
                    len(self._items_by_key.get(key, ())),
                    len(self._selectors_by_key.get(key, ())),
                    1,
                )
            else:
                if not values:
                    return _Anchor(key, values)  # contradictory: matches nothing
                items = self._items_by_pair
                selectors = self._selectors_by_pair
                rank = (
                    sum(len(items.get((key, v), ())) for v in values),
                    sum(len(selectors.get((key, v), ())) for v in values),
                    0,
                )
            if best_rank is None or rank < best_rank:
                best, best_rank = _Anchor(key, values), rank
        return best

    def _maybe_rebalance(self) -> None:
        """Re-choose anchors once item statistics may have shifted (amortised O(1)).

        Anchors chosen before items arrive are guesses; every so many item changes we pick
        again with real counts. Moving an anchor changes no match, so no callbacks fire.
        """
        self._changes_since_rebalance += 1
        if self._changes_since_rebalance < max(_REBALANCE_MIN_CHANGES, len(self._selectors)):
            return
        self._changes_since_rebalance = 0
        for selector_id, selector in self._selectors.items():
            self._unanchor(selector_id)
            self._anchor(selector_id, self._choose_anchor(selector))

    def _anchor(self, selector_id: SelectorId, anchor: _Anchor) -> None:
        self._anchors[selector_id] = anchor
        if anchor.key is None:
            self._unanchored.add(selector_id)
        elif anchor.values is None:
            self._selectors_by_key.setdefault(anchor.key, set()).add(selector_id)
        else:
            for value in anchor.values:
                self._selectors_by_pair.setdefault((anchor.key, value), set()).add(selector_id)

    def _unanchor(self, selector_id: SelectorId) -> None:
        anchor = self._anchors.pop(selector_id)
        if anchor.key is None:
            self._unanchored.discard(selector_id)
        elif anchor.values is None:
            _discard(self._selectors_by_key, anchor.key, selector_id)
        else:
            for value in anchor.values:
                _discard(self._selectors_by_pair, (anchor.key, value), selector_id)

    def _candidate_items(self, anchor: _Anchor) -> Iterable[ItemId]:
        if anchor.key is None:
            return self._labels.keys()
        if anchor.values is None:
            return self._items_by_key.get(anchor.key, ())
        # An item has one value per key, so these sets are disjoint: no duplicates.
        candidates: list[ItemId] = []
        for value in anchor.values:
            candidates.extend(self._items_by_pair.get((anchor.key, value), ()))
        return candidates

    # -- items ---------------------------------------------------------------------------

    def update_labels(
        self,
        item_id: ItemId,
        labels: Mapping[str, str],
        parent_ids: Sequence[Hashable] = (),
    ) -> None:
        """Add or replace an item's own labels and its parents (earlier parents win)."""
        parents = tuple(parent_ids)
        old_parents = self._parents_of.get(item_id, ())
        if (
            item_id in self._own_labels
            and old_parents == parents
            and self._own_labels[item_id] == labels
        ):
            return
        for parent in old_parents:
            if parent not in parents:
                _discard(self._children, parent, item_id)
        for parent in parents:
            self._children.setdefault(parent, set()).add(item_id)
        self._own_labels[item_id] = dict(labels)
        self._parents_of[item_id] = parents
        self._refresh_item(item_id)

    def delete_labels(self, item_id: ItemId) -> None:
        """Remove an item, firing on_match_stopped for every selector that matched it."""
        if item_id not in self._own_labels:
            return
        for selector_id in list(self._selectors_matching.get(item_id, ())):
            self._stop(selector_id, item_id)
        for parent in self._parents_of.pop(item_id):
            _discard(self._children, parent, item_id)
        del self._own_labels[item_id]
        self._reindex_item(item_id, self._labels.pop(item_id), {})
        self._selectors_matching.pop(item_id, None)

    def update_parent_labels(self, parent_id: Hashable, labels: Mapping[str, str]) -> None:
        """Set a parent's labels; items naming this parent are re-evaluated."""
        if self._parent_labels.get(parent_id) == labels:
            return
        self._parent_labels[parent_id] = dict(labels)
        self._refresh_children(parent_id)

    def delete_parent_labels(self, parent_id: Hashable) -> None:
        """Forget a parent's labels (its children keep naming it, but inherit nothing)."""
        if self._parent_labels.pop(parent_id, None) is not None:
            self._refresh_children(parent_id)

    def _refresh_children(self, parent_id: Hashable) -> None:
        for item_id in list(self._children.get(parent_id, ())):
            self._refresh_item(item_id)

    def _effective_labels(self, item_id: ItemId) -> dict[str, str]:
        own = self._own_labels[item_id]
        parents = self._parents_of[item_id]
        if not parents:
            return dict(own)
        merged: dict[str, str] = {}
        for parent in reversed(parents):  # so that earlier parents overwrite later ones
            inherited = self._parent_labels.get(parent)
            if inherited:
                merged.update(inherited)
        merged.update(own)
        return merged

    def _refresh_item(self, item_id: ItemId) -> None:
        """Recompute an item's effective labels and its matches if they changed."""
        new_labels = self._effective_labels(item_id)
        old_labels = self._labels.get(item_id)
        if old_labels == new_labels:
            return
        self._labels[item_id] = new_labels
        self._reindex_item(item_id, old_labels or {}, new_labels)

        now_matching: set[SelectorId] = set()
        selectors = self._selectors
        # Each selector sits in at most one of these buckets for a given item, so none is
        # evaluated twice.
        for bucket in self._candidate_selector_buckets(new_labels):
            for selector_id in bucket:
                if selectors[selector_id].matches(new_labels):
                    now_matching.add(selector_id)
        previously = self._selectors_matching.get(item_id, set())
        for selector_id in [s for s in previously if s not in now_matching]:
            self._stop(selector_id, item_id)
        for selector_id in [s for s in now_matching if s not in previously]:
            self._start(selector_id, item_id)
        self._maybe_rebalance()

    def _candidate_selector_buckets(self, labels: Mapping[str, str]) -> list[set[SelectorId]]:
        buckets = [self._unanchored]
        by_pair, by_key = self._selectors_by_pair, self._selectors_by_key
        for pair in labels.items():
            bucket = by_pair.get(pair)
            if bucket:
                buckets.append(bucket)
            bucket = by_key.get(pair[0])
            if bucket:
                buckets.append(bucket)
        return buckets

    def _reindex_item(
        self, item_id: ItemId, old: Mapping[str, str], new: Mapping[str, str]
    ) -> None:
        removed, added = _diff_labels(old, new)
        for key, value in removed:
            _discard(self._items_by_pair, (key, value), item_id)
            if key not in new:
                _discard(self._items_by_key, key, item_id)
        for key, value in added:
            self._items_by_pair.setdefault((key, value), set()).add(item_id)
            if key not in old:
                self._items_by_key.setdefault(key, set()).add(item_id)

    # -- membership ----------------------------------------------------------------------

    def _start(self, selector_id: SelectorId, item_id: ItemId) -> None:
        self._items_matching.setdefault(selector_id, set()).add(item_id)
        self._selectors_matching.setdefault(item_id, set()).add(selector_id)
        self._on_started(selector_id, item_id)

    def _stop(self, selector_id: SelectorId, item_id: ItemId) -> None:
        _discard(self._items_matching, selector_id, item_id)
        _discard(self._selectors_matching, item_id, selector_id)
        self._on_stopped(selector_id, item_id)


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V", bound=Hashable)


def _discard(index: dict[_K, set[_V]], key: _K, member: _V) -> None:
    """Remove ``member`` from ``index[key]``, dropping the set once it is empty."""
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]
