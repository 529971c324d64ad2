"""Placeholders in case files: each stands for a whole string value.

Network-policy files: `{{ip:x/b}}`, `{{hostcidr:x/b}}`, `{{supernet:x/a:4}}` (a pod's address,
as a /32, as the network of the given length). Services files add names other than pods:
`{{hostcidr:@outside}}`, `{{hostcidr:node-2}}`, `{{ip:@outside}}`, `{{nodeip:node-2}}` (a
node's lab address) and `{{clusterip:y/web}}` (a Service's cluster IP, the last one it had
after it is deleted).

`addresses` maps every name a placeholder may use ("x/b", "@outside", "node-2") to its
address; `cluster_ips` maps "ns/name" of Services.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"^\{\{(ip|hostcidr|supernet|nodeip|clusterip):([^:{}]+)(?::(\d+))?\}\}$")


class PlaceholderError(ValueError):
    pass


def is_placeholder(text: str) -> bool:
    return _PLACEHOLDER.match(text.strip()) is not None


def resolve(
    text: str,
    addresses: Mapping[str, str],
    cluster_ips: Mapping[str, str] | None = None,
) -> str:
    """The value a placeholder stands for; any other string unchanged."""
    match = _PLACEHOLDER.match(text.strip())
    if match is None:
        return text
    kind, name, length = match.groups()
    if kind == "clusterip":
        ip_text = (cluster_ips or {}).get(name)
        if not ip_text or ip_text == "None":
            raise PlaceholderError(f"{text}: Service {name} has no cluster IP")
    else:
        ip_text = addresses.get(name)
        if not ip_text:
            raise PlaceholderError(f"{text}: {name} has no address")
    ip = ipaddress.ip_address(ip_text)
    if kind in ("ip", "nodeip", "clusterip"):
        if length is not None:
            raise PlaceholderError(f"{text}: `{kind}` takes no prefix length")
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


def substitute(
    value: Any,
    addresses: Mapping[str, str],
    cluster_ips: Mapping[str, str] | None = None,
) -> Any:
    """A copy of `value` with every placeholder string replaced."""
    if isinstance(value, str):
        return resolve(value, addresses, cluster_ips)
    if isinstance(value, list):
        return [substitute(v, addresses, cluster_ips) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, addresses, cluster_ips) for k, v in value.items()}
    return value
