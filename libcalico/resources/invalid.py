"""Reporting objects a consumer cannot use: one ERROR per object version, naming it.

With the Kubernetes datastore anyone with kubectl can write an object the CRD schema lets
through but Calico would refuse (a selector that does not parse, a CIDR that is not one).
Every consumer (Felix's calculation graph and overlay view, IPAM's pools, BGP's view) skips
such an object and reports it here: one logged error naming kind/namespace/name and why, and
not again until the object changes (IPAM re-reads pools on every request; a log line per
request would bury the message).
"""

from __future__ import annotations

import logging

from libcalico.datastore.keys import parse_resource_key
from libcalico.resources.kinds import all_kinds

_KINDS = {(info.group, info.plural): info for info in all_kinds()}


def describe_key(key: str) -> str:
    """`GlobalNetworkPolicy(deny-all)`, `NetworkPolicy(ns/name)`; the key for other keys."""
    try:
        rkey = parse_resource_key(key)
    except ValueError:
        return key
    info = _KINDS.get((rkey.group, rkey.plural))
    if info is None:
        return key
    return info.describe(rkey.name, rkey.namespace)


class InvalidObjects:
    """The invalid objects one consumer has reported (by key and value)."""

    def __init__(self, log: logging.Logger, consumer: str) -> None:
        self._log = log
        self._consumer = consumer
        self._reported: dict[str, int] = {}

    def skipped(self, key: str, value: bytes | None, reason: object) -> None:
        """Report that `key` (with `value`) is skipped because of `reason`, once per value."""
        digest = hash(value)
        if self._reported.get(key) == digest:
            return
        self._reported[key] = digest
        self._log.error("%s: skipping invalid %s: %s", self._consumer, describe_key(key), reason)

    def usable(self, key: str) -> None:
        """`key` is fine again (or gone): report it afresh if it turns bad later."""
        self._reported.pop(key, None)
