"""Probe sources and targets by name, as `calico-lab probe` and the conformance runners
write them.

Sources: `NS/NAME` (a lab pod) or `@outside` (a client in the lab network's namespace, off
the pod network, at network.OUTSIDE_CLIENT: it reaches every node's address and routes
192.0.2.0/24 via node-1).

Targets: `pod:NS/NAME` (or plain `NS/NAME`: the pod's address), `svc:NS/NAME` (the Service's
cluster IP), `node:NAME` (the node's address on the lab network), `extip:ADDR` and `ip:ADDR`
(the address as written).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from lab import netns, network
from lab.prober import Endpoint
from lab.state import LabState

OUTSIDE = "@outside"
TARGET_KINDS = ("pod", "svc", "node", "extip", "ip")


class TargetError(ValueError):
    pass


def outside_endpoint(state: LabState) -> Endpoint:
    if not state.network_netns:
        raise TargetError(f"lab {state.name!r} has no lab network namespace for {OUTSIDE}")
    return Endpoint(
        OUTSIDE, str(netns.netns_path(state.network_netns)), str(network.OUTSIDE_CLIENT), True
    )


def pod_endpoint(state: LabState, key: str) -> Endpoint:
    pod = state.pods.get(key)
    if pod is None:
        raise TargetError(f"no pod {key} in lab {state.name!r}")
    return Endpoint(pod.key, str(netns.netns_path(pod.netns)), pod.ip)


def source(state: LabState, text: str) -> Endpoint:
    """FROM: a pod `NS/NAME` or `@outside`."""
    if text == OUTSIDE:
        return outside_endpoint(state)
    if text.startswith("pod:"):
        text = text[4:]
    if "/" not in text:
        raise TargetError(f"source {text!r}: expected NS/NAME or {OUTSIDE}")
    return pod_endpoint(state, text)


def split(text: str) -> tuple[str, str]:
    """ "svc:y/web" -> ("svc", "y/web"); a bare "NS/NAME" is a pod."""
    kind, sep, rest = text.partition(":")
    if sep and kind in TARGET_KINDS:
        return kind, rest
    if "/" in text and not sep:
        return "pod", text
    raise TargetError(
        f"target {text!r}: expected pod:NS/NAME, svc:NS/NAME, node:NAME, extip:ADDR or ip:ADDR"
    )


def _address(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise TargetError(f"{where}: {text!r} is not an IP address") from None


def node_address(state: LabState, name: str) -> str:
    for node in state.nodes:
        if node.name == name:
            return node.address
    known = ", ".join(n.name for n in state.nodes)
    raise TargetError(f"node:{name}: no such node (nodes: {known})")


def address(
    state: LabState, text: str, services: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """The address a target names; `services` maps "ns/name" to Service objects (needed
    only for `svc:`)."""
    kind, rest = split(text)
    if kind == "pod":
        pod = state.pods.get(rest)
        if pod is None or not pod.ip:
            raise TargetError(f"{text}: no pod {rest} with an address in lab {state.name!r}")
        return pod.ip
    if kind == "node":
        return node_address(state, rest)
    if kind == "svc":
        service = (services or {}).get(rest)
        if service is None:
            raise TargetError(f"{text}: no Service {rest}")
        ip = str((service.get("spec") or {}).get("clusterIP") or "")
        if not ip or ip == "None":
            raise TargetError(f"{text}: Service {rest} has no cluster IP (headless)")
        return ip
    return _address(rest, text)
