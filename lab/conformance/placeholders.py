"""ipBlock placeholders: `{{ip:x/b}}`, `{{hostcidr:x/b}}`, `{{supernet:x/a:4}}`."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"^\{\{(ip|hostcidr|supernet):([^/:{}]+/[^/:{}]+)(?::(\d+))?\}\}$")


class PlaceholderError(ValueError):
    pass


def resolve(text: str, pod_ips: Mapping[str, str]) -> str:
    """The value a placeholder stands for; any other string unchanged."""
    match = _PLACEHOLDER.match(text.strip())
    if match is None:
        return text
    kind, pod, length = match.groups()
    ip_text = pod_ips.get(pod)
    if not ip_text:
        raise PlaceholderError(f"{text}: pod {pod} has no address")
    ip = ipaddress.ip_address(ip_text)
    if kind == "ip":
        if length is not None:
            raise PlaceholderError(f"{text}: `ip` takes no prefix length")
        return str(ip)
    if kind == "hostcidr":
        if length is not None:
            raise PlaceholderError(f"{text}: `hostcidr` takes no prefix length")
        return f"{ip}/{ip.max_prefixlen}"
    if length is None:
        raise PlaceholderError(f"{text}: `supernet` needs a prefix length")
    if int(length) > ip.max_prefixlen:
        raise PlaceholderError(f"{text}: prefix length {length} is too long")
    return str(ipaddress.ip_network(f"{ip}/{length}", strict=False))


def substitute(value: Any, pod_ips: Mapping[str, str]) -> Any:
    """A copy of `value` with every placeholder string replaced."""
    if isinstance(value, str):
        return resolve(value, pod_ips)
    if isinstance(value, list):
        return [substitute(v, pod_ips) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, pod_ips) for k, v in value.items()}
    return value
