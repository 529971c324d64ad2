"""Calico's label selector language.

``parse(text)`` returns a ``Selector`` with ``matches(labels)``, a stable ``canonical`` form,
``unique_id`` (the hash that names the selector's IP set), ``label_keys`` and
``label_restrictions``. Malformed text raises ``SelectorError`` carrying the 0-based
``position`` where parsing failed. ``LabelIndex`` (in ``libcalico.selector.index``) tracks
which selectors match which labelled items incrementally.

Semantics, following libcalico-go:

- ``k == 'v'``, ``k in {...}``, ``has(k)``, ``k contains 'v'``, ``k starts with 'v'`` and
  ``k ends with 'v'`` need label ``k`` present; ``k != 'v'`` and ``k not in {...}`` are true
  when ``k`` is absent.
- ``!`` binds tighter than ``&&``, which binds tighter than ``||``. ``!!x`` is ``x``.
- String literals use ``'`` or ``"`` and have no escapes (as in Calico): a literal runs to the
  next matching quote, so a value cannot contain both quote characters.
- Empty (or all-whitespace) text means ``all()``.
- Label keys must be valid Kubernetes label keys (optional lower-case DNS-subdomain prefix and
  ``/``, then a name of at most 63 characters). libcalico-go's tokenizer is laxer
  (``[a-zA-Z0-9_./-]{1,512}``); keys outside the Kubernetes syntax could never be on a
  Kubernetes object, so we reject them up front.
- ``global()``: libcalico-go's parser evaluates ``global()`` as always true and gets its
  meaning from the rule context: a ``namespaceSelector: global()`` widens a rule's scope to
  non-namespaced entities (GlobalNetworkSets, HostEndpoints), which are exactly the entities
  with no ``projectcalico.org/namespace`` label. We fold that meaning into the selector
  itself: ``global()`` matches a label set iff it has no ``projectcalico.org/namespace``
  label. It therefore lists that key in ``label_keys``.

Canonical form and unique ID: the canonical text is libcalico-go's ``String()`` rendering
(double quotes unless the value contains ``"``; each ``&&``/``||`` group in parentheses;
``in`` set members sorted and de-duplicated). In addition, nested groups of the same operator
are flattened (``a && (b && c)`` is ``(a && b && c)``) and double negations cancel, so texts
differing only in redundant parentheses are equal; for such inputs only, the ID differs from
libcalico-go's. ``unique_id`` is Calico's ``MakeUniqueID("s", canonical)``:
``"s:" + base64url(SHA-224("s:" + canonical))`` without padding (Felix names the IP set
``cali40`` + this ID, truncated).
"""

from libcalico.selector.errors import SelectorError
from libcalico.selector.index import LabelIndex
from libcalico.selector.nodes import NAMESPACE_LABEL
from libcalico.selector.selector import Selector, make_unique_id, matches, parse

__all__ = [
    "NAMESPACE_LABEL",
    "LabelIndex",
    "Selector",
    "SelectorError",
    "make_unique_id",
    "matches",
    "parse",
]
