"""Typed readers for the building blocks of every resource: fields, names, CIDRs, ports.

Each reader takes the raw (YAML/JSON-decoded) value and the path it sits at, and returns the
normalized value or raises ValidationError at that path. Like Calico's Go structs, a field set
to null counts as absent, and a value of the wrong JSON type is an error (no coercion of
`true` to 1 or of 80 to "80" except where Calico's own types accept both).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from libcalico.resources.validation.errors import ValidationError
from libcalico.selector import SelectorError, parse

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_LABEL_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_RE = re.compile(rf"^{_LABEL_FMT}$")
DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_LABEL_FMT}(\.{_LABEL_FMT})*$")
# Kubernetes qualified-name part and label value.
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
ANNOTATIONS_MAX_BYTES = 256 * 1024

# Named ports: Calico's parser takes [a-zA-Z0-9_.-]{1,128}, then checks the Kubernetes (IANA
# service name) rules: at most 15 characters of [a-z0-9-], at least one letter, no '--', and
# no '-' at either end.
_PORT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PORT_NAME_MAX = 15
_PORT_RANGE_RE = re.compile(r"^(\d+):(\d+)$")

PROTOCOL_NAMES = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
_PORT_PROTOCOLS: frozenset[int | str] = frozenset({"TCP", "UDP", "SCTP", 6, 17, 132})


# ---- paths ----


def child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


# ---- JSON types ----


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def as_mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(path, f"must be an object, not a {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ValidationError(path, f"field names must be strings, not {key!r}")
    return value


def as_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ValidationError(path, f"must be a list, not a {_type_name(value)}")
    return list(value)


def as_str(value: Any, path: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValidationError(path, f"must be a string, not a {_type_name(value)}")
    if not allow_empty and not value:
        raise ValidationError(path, "must not be empty")
    return value


def as_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(path, f"must be true or false, not a {_type_name(value)}")
    return value


def as_int(value: Any, path: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(path, f"must be an integer, not a {_type_name(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else (f"at least {low}" if low is not None else f"at most {high}")
        )
        raise ValidationError(path, f"{value} is out of range: must be {bounds}")
    return value


def as_number(value: Any, path: str) -> int | float:
    """A finite number (policy order); ints stay ints so they print as written."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(path, f"must be a number, not a {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(path, "must be a finite number")
    return value


def as_str_list(value: Any, path: str, *, allow_empty_items: bool = False) -> list[str]:
    return [
        as_str(v, item(path, i), allow_empty=allow_empty_items)
        for i, v in enumerate(as_list(value, path))
    ]


def as_str_map(value: Any, path: str) -> dict[str, str]:
    mapping = as_mapping(value, path)
    return {k: as_str(v, child(path, k)) for k, v in mapping.items()}


def one_of(value: Any, path: str, allowed: Collection[str]) -> str:
    text = as_str(value, path)
    if text not in allowed:
        raise ValidationError(path, f"{text!r} is not one of {', '.join(allowed)}")
    return text


class Fields:
    """One object's fields, read each at its own path; unknown fields are refused up front.

    Fields whose value is null are treated as absent (as Go's JSON decoding does).
    """

    def __init__(self, value: Any, path: str, allowed: Collection[str]) -> None:
        source = as_mapping(value, path)
        self.path = path
        self.values = {k: v for k, v in source.items() if v is not None}
        unknown = sorted(k for k in self.values if k not in allowed)
        if unknown:
            raise ValidationError(
                child(path, unknown[0]),
                f"unknown field (allowed here: {', '.join(sorted(allowed))})",
            )

    def at(self, key: str) -> str:
        return child(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str) -> Any:
        return self.values.get(key)


# ---- names and labels ----


def check_dns_label(value: Any, path: str) -> str:
    text = as_str(value, path, allow_empty=False)
    if len(text) > DNS1123_LABEL_MAX:
        raise ValidationError(path, f"must be at most {DNS1123_LABEL_MAX} characters")
    if not DNS1123_LABEL_RE.match(text):
        raise ValidationError(
            path,
            f"{text!r} must consist of lower case alphanumeric characters or '-', and start "
            f"and end with an alphanumeric character (regex: {_LABEL_FMT})",
        )
    return text


def check_dns_subdomain(value: Any, path: str) -> str:
    text = as_str(value, path, allow_empty=False)
    if len(text) > DNS1123_SUBDOMAIN_MAX:
        raise ValidationError(
            path, f"name is too long by {len(text) - DNS1123_SUBDOMAIN_MAX} bytes"
        )
    if not DNS1123_SUBDOMAIN_RE.match(text):
        raise ValidationError(
            path,
            f"{text!r} must consist of lower case alphanumeric characters, '-' or '.', and "
            f"start and end with an alphanumeric character",
        )
    return text


def check_qualified_name(text: str, path: str) -> None:
    """A Kubernetes label/annotation key: `[prefix/]name`, prefix a DNS-1123 subdomain."""
    prefix, slash, name = text.rpartition("/")
    if slash:
        if not prefix:
            raise ValidationError(path, f"key {text!r}: prefix part must not be empty")
        if len(prefix) > DNS1123_SUBDOMAIN_MAX or not DNS1123_SUBDOMAIN_RE.match(prefix):
            raise ValidationError(path, f"key {text!r}: prefix part must be a DNS-1123 subdomain")
    if not name:
        raise ValidationError(path, f"key {text!r}: name part must not be empty")
    if len(name) > _QUALIFIED_NAME_MAX:
        raise ValidationError(
            path, f"key {text!r}: name part must be at most {_QUALIFIED_NAME_MAX} characters"
        )
    if not _QUALIFIED_NAME_RE.match(name):
        raise ValidationError(
            path,
            f"key {text!r}: name part must consist of alphanumeric characters, '-', '_' or "
            f"'.', and must start and end with an alphanumeric character",
        )


def check_label_value(text: str, path: str) -> None:
    if len(text) > LABEL_VALUE_MAX:
        raise ValidationError(path, f"value {text!r} must be at most {LABEL_VALUE_MAX} characters")
    if text and not _QUALIFIED_NAME_RE.match(text):
        raise ValidationError(
            path,
            f"value {text!r} must be empty or consist of alphanumeric characters, '-', '_' "
            f"or '.', and must start and end with an alphanumeric character",
        )


def check_labels(value: Any, path: str) -> dict[str, str]:
    labels = as_mapping(value, path)
    out: dict[str, str] = {}
    for key, raw in labels.items():
        at = child(path, key)
        check_qualified_name(key, at)
        text = as_str(raw, at)
        check_label_value(text, at)
        out[key] = text
    return out


def check_annotations(value: Any, path: str) -> dict[str, str]:
    annotations = as_mapping(value, path)
    out: dict[str, str] = {}
    size = 0
    for key, raw in annotations.items():
        at = child(path, key)
        check_qualified_name(key.lower(), at)
        out[key] = as_str(raw, at)
        size += len(key.encode()) + len(out[key].encode())
    if size > ANNOTATIONS_MAX_BYTES:
        raise ValidationError(
            path,
            f"total size of annotations is too large by {size - ANNOTATIONS_MAX_BYTES} bytes",
        )
    return out


# ---- addresses ----


def parse_ip(value: Any, path: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = as_str(value, path, allow_empty=False)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValidationError(path, f"{text!r} is not a valid IP address") from None


def parse_cidr(value: Any, path: str, *, strict: bool) -> IPNetwork:
    """A CIDR, or a bare address meaning a /32 or /128 (as Calico's ParseCIDROrIP).

    strict: host bits must be zero (Calico's `net` validator); otherwise they are dropped.
    """
    text = as_str(value, path, allow_empty=False)
    _, slash, length = text.partition("/")
    if slash and not length.isdigit():  # Python would also take a netmask; Go does not
        raise ValidationError(path, f"{text!r} is not a valid CIDR")
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValidationError(path, f"{text!r} is not a valid CIDR") from None
    if strict and ipaddress.ip_interface(text).ip != loose.network_address:
        raise ValidationError(
            path,
            f"{text!r} is not a network address: host bits are set (the network is {loose})",
        )
    return loose


def check_selector(value: Any, path: str) -> str:
    """Selector text that parses; kept as written (Calico stores it unchanged)."""
    text = as_str(value, path)
    try:
        parse(text)
    except SelectorError as exc:
        raise ValidationError(path, f"invalid selector {text!r}: {exc.message}") from None
    return text


# ---- ports and protocols ----


def check_port_name(text: str, path: str) -> str:
    if (
        len(text) > PORT_NAME_MAX
        or not _PORT_NAME_RE.match(text)
        or "--" in text
        or not any(c.isalpha() for c in text)
    ):
        raise ValidationError(
            path,
            f"{text!r} is not a valid port name: at most {PORT_NAME_MAX} lower case "
            f"alphanumeric characters or '-', with at least one letter, no '--', and no '-' "
            f"at either end",
        )
    return text


def _port_number(text: str, path: str) -> int:
    number = int(text)
    if not 1 <= number <= 65535:
        raise ValidationError(path, f"port {number} is invalid: must be between 1 and 65535")
    return number


def parse_port(value: Any, path: str) -> int | str:
    """A Calico port: a number, an "a:b" range (a <= b), or a named port.

    Normalized as Calico prints it: a number as an int, a range as "a:b" ("80:80" -> 80).
    """
    if isinstance(value, bool):
        raise ValidationError(path, "must be a port number, range or name, not a boolean")
    if isinstance(value, int):
        return _port_number(str(value), path)
    text = as_str(value, path, allow_empty=False)
    if text.isdigit():
        return _port_number(text, path)
    match = _PORT_RANGE_RE.match(text)
    if match:
        low = _port_number(match.group(1), path)
        high = _port_number(match.group(2), path)
        if low > high:
            raise ValidationError(
                path, f"port range {text!r} is invalid: minimum {low} is greater than {high}"
            )
        return low if low == high else f"{low}:{high}"
    return check_port_name(text, path)


def parse_protocol(value: Any, path: str) -> int | str:
    """A protocol name (exact case, as Calico's validator) or number 1-255."""
    if isinstance(value, bool):
        raise ValidationError(path, "must be a protocol name or number, not a boolean")
    if isinstance(value, int):
        number = value
    else:
        text = as_str(value, path, allow_empty=False)
        if text in PROTOCOL_NAMES:
            return text
        if not text.isdigit():
            raise ValidationError(
                path,
                f"protocol name {text!r} is invalid: must be one of "
                f"{', '.join(PROTOCOL_NAMES)} or a number 1-255",
            )
        number = int(text)
    if not 1 <= number <= 255:
        raise ValidationError(path, f"protocol number {number} is invalid: must be 1-255")
    return number


def protocol_supports_ports(protocol: int | str | None) -> bool:
    return protocol in _PORT_PROTOCOLS
