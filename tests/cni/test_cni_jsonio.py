"""jsonio (the `_json`-only codec) agrees with the json module."""

from __future__ import annotations

import json

import pytest

from cni_client.cni import jsonio
from cni_client.cni.errors import CniError

DOCS = [
    {"cniVersion": "1.1.0", "name": "n", "nested": {"a": [1, 2.5, -3, True, False, None]}},
    {"unicode": "ünïcödé ✓ \u2028", "escapes": 'tab\t"quote" back\\slash\n'},
    [],
    {"big": 10**30, "small": 1e-9},
]


@pytest.mark.parametrize("doc", DOCS)
def test_round_trip_matches_json(doc: object) -> None:
    text = json.dumps(doc, indent=2)
    assert jsonio.loads(text.encode(), "doc") == doc
    assert json.loads(jsonio.dumps(doc)) == doc


@pytest.mark.parametrize(
    "bad", [b"{", b"nul", b"Infinity", b"[1,]", b'{"a" 1}', b"1 2", b"[" * 100000]
)
def test_errors_are_decode_failures(bad: bytes) -> None:
    with pytest.raises(CniError) as err:
        jsonio.loads(bad)
    assert err.value.code == 6
