"""The parsed, compiled selector and the cached ``parse`` entry point."""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping

from libcalico.selector.nodes import Labels, Matcher, Node
from libcalico.selector.parser import parse_tree

# libcalico-go names a selector "s:" + base64url(SHA-224("s:" + canonical)), unpadded.
_UNIQUE_ID_PREFIX = "s"


def make_unique_id(prefix: str, content: str) -> str:
    """Calico's content hash ID: ``<prefix>:`` + unpadded base64url SHA-224 of the same."""
    tagged = f"{prefix}:{content}"
    digest = hashlib.sha224(tagged.encode()).digest()
    return f"{prefix}:{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


class Selector:
    """A parsed selector, compiled to a matcher.

    Equality and hashing use the canonical form, so selectors that differ only in whitespace,
    quoting, redundant parentheses or the order of ``in {}`` members are equal.
    """

    __slots__ = ("_restrictions", "canonical", "label_keys", "matches", "root", "unique_id")

    root: Node
    canonical: str
    unique_id: str
    label_keys: frozenset[str]
    # ``matches(labels)``: a compiled closure stored on the instance, so a call costs no more
    # than calling the closure itself (this is the hot path in Felix and the label index).
    matches: Matcher
    _restrictions: Mapping[str, frozenset[str] | None]

    def __init__(self, root: Node) -> None:
        fragments: list[str] = []
        root.render(fragments)
        keys: set[str] = set()
        root.collect_keys(keys)
        self.root = root
        self.canonical = "".join(fragments)
        self.unique_id = make_unique_id(_UNIQUE_ID_PREFIX, self.canonical)
        self.label_keys = frozenset(keys)
        self.matches = root.compile()
        self._restrictions = root.restrictions(False)

    @property
    def label_restrictions(self) -> Mapping[str, frozenset[str] | None]:
        """Labels that any matching label set must have.

        Maps a key to the values it must take one of, or to None when any value will do. An
        empty value set means the selector can match nothing. Keys not listed are unconstrained
        (``!has(k)``, ``k != 'v'`` and ``all()`` constrain nothing here).
        """
        return self._restrictions

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selector):
            return NotImplemented
        return self.canonical == other.canonical

    def __lt__(self, other: Selector) -> bool:
        return self.canonical < other.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __repr__(self) -> str:
        return f"Selector({self.canonical!r})"

    def __str__(self) -> str:
        return self.canonical


@functools.lru_cache(maxsize=65536)
def _parse_cached(text: str) -> Selector:
    return Selector(parse_tree(text))


def parse(text: str) -> Selector:
    """Parse selector text (cached); raise SelectorError when it is malformed.

    Empty or all-whitespace text parses as ``all()``.
    """
    return _parse_cached(text)


def matches(text: str, labels: Labels) -> bool:
    """Convenience: parse ``text`` (cached) and match it against ``labels``."""
    return _parse_cached(text).matches(labels)
