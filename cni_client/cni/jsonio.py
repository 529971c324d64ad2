"""JSON through the `_json` C accelerator alone: `import json` costs ~8 ms per exec here
(json.decoder compiles regular expressions at import), `_json` next to nothing."""

from __future__ import annotations

import _json

from cni_client.cni.errors import DECODE_FAILURE, CniError

_WHITESPACE = " \t\n\r"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class _ScannerContext:
    # The attributes _json.make_scanner reads (as json.decoder.JSONDecoder has them).
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)
    memo: dict[str, str] = {}


def _unserializable(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# typeshed types the scanner's context argument as the scanner class itself.
_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]
_encode = _json.make_encoder(
    None,  # no circular-reference markers: we only dump trees we built
    _unserializable,
    _json.encode_basestring_ascii,
    None,  # no indent
    ":",
    ",",
    False,  # sort_keys
    False,  # skipkeys
    False,  # allow_nan
)


def loads(data: bytes, what: str = "network config") -> object:
    """Parse one JSON document; CniError(6) naming `what` and the position when it does not
    parse."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CniError(
            DECODE_FAILURE, f"{what} is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    start = len(text) - len(text.lstrip(_WHITESPACE))
    if start == len(text):
        raise CniError(DECODE_FAILURE, f"{what} is empty (expected JSON on stdin)")
    try:
        value, end = _scan(text, start)
    except (StopIteration, ValueError, SystemError, RecursionError):
        # The fast path failed. _json's own error reporting needs json.decoder loaded (without
        # it a syntax error surfaces as SystemError), so let the full module explain.
        return _explain_failure(text, what)
    if text[end:].strip(_WHITESPACE):
        return _explain_failure(text, what)
    return value


def _explain_failure(text: str, what: str) -> object:
    import json

    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # json.JSONDecodeError included
        raise CniError(DECODE_FAILURE, f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CniError(DECODE_FAILURE, f"{what} is nested too deeply") from None


def dumps(value: object) -> str:
    return "".join(_encode(value, 0))
