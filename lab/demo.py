"""`calico-lab demo`: the project's main job in one command.

Brings the lab up (one node, or `--nodes N` peering over BGP), runs three labelled pods (spread
round-robin over the nodes), shows who reaches whom, applies a Kubernetes NetworkPolicy that
lets only the client reach the web pod, shows the table again (polled until it takes effect,
at most 10 s), and takes the lab down whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lab.cluster import bring_down
from lab.lab import Lab
from lab.matrix import lab_endpoints, probe_all, render
from lab.pods import PodSpec, create_pods
from lab.store import LabStore

PODS = (
    PodSpec("shop", "web", {"app": "web"}, [("tcp", 80), ("udp", 80)]),
    PodSpec("shop", "client", {"app": "client"}, [("tcp", 80), ("udp", 80)]),
    PodSpec("other", "intruder", {"app": "intruder"}, [("tcp", 80), ("udp", 80)]),
)
POLICY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web-from-client", "namespace": "shop"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "UDP", "port": 80}],
            }
        ],
    },
}
PROTOCOLS = ("tcp", "udp")
DEADLINE = 10.0


def _say(text: str = "") -> None:
    print(text, flush=True)


def expected_after_policy(keys: list[str]) -> dict[tuple[str, str], bool]:
    """Only shop/client may reach shop/web; everything else stays open."""
    return {
        (src, dst): not (dst == "shop/web" and src != "shop/client")
        for src in keys
        for dst in keys
        if src != dst
    }


async def _tables(lab: Lab) -> dict[str, dict[tuple[str, str], bool]]:
    endpoints = lab_endpoints(lab)
    return {proto: await probe_all(endpoints, 80, proto) for proto in PROTOCOLS}


async def _run(lab: Lab) -> bool:
    nodes = [n.name for n in lab.nodes]
    placed = [dataclasses.replace(p, node=nodes[i % len(nodes)]) for i, p in enumerate(PODS)]
    _say("$ calico-lab pod run shop/web --labels app=web   (and shop/client, other/intruder)")
    await create_pods(lab, placed)
    for pod in sorted(lab.state.pods.values(), key=lambda p: p.key):
        labels = ",".join(f"{k}={v}" for k, v in pod.labels.items())
        _say(f"  {pod.key:16} {pod.ip:15} {pod.node:8} {pod.host_interface:16} {labels}")
    keys = sorted(lab.state.pods)
    _say("\nReachability without policy ('.' connects, 'X' blocked):")
    for proto, table in (await _tables(lab)).items():
        _say(render(keys, table, f"\n{proto.upper()}/80"))
    _say("\nApplying a NetworkPolicy: only shop/client may reach shop/web")
    _say(yaml.safe_dump(POLICY, sort_keys=False).rstrip())
    async with LabStore(lab.state) as store:
        await store.apply_all([POLICY])
    expected = expected_after_policy(keys)
    deadline = time.monotonic() + DEADLINE
    while True:
        tables = await _tables(lab)
        ok = all(table == expected for table in tables.values())
        if ok or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    _say("\nReachability with the policy:")
    for proto, table in tables.items():
        _say(render(keys, table, f"\n{proto.upper()}/80", expected))
    if ok:
        _say("\nThe policy is enforced: only shop/client reaches shop/web.")
    else:
        _say("\nThe policy is NOT enforced as expected (cells marked '!' differ).")
    return ok


def run_demo(state_dir: Path, up_command: str, bring_up: Callable[[], Lab]) -> int:
    """`bring_up` makes the lab `up_command` describes; the lab goes down whatever happens."""
    _say(f"$ {up_command}")
    lab = bring_up()
    for node in lab.nodes:
        _say(f"  node {node.name} {node.address} in network namespace {node.netns}")
        for daemon, record in node.state.processes.items():
            _say(f"    {daemon:14} pid {record.pid:<7} {node.state.sockets.get(daemon, '')}")
    if lab.state.bgp != "none":
        _say(f"  BGP {lab.state.bgp}: every session Established")
    ok = False
    problems: list[str] = []
    try:
        ok = asyncio.run(_run(lab))
    finally:
        # Clean up before saying so: stdout may be a closed pipe (`calico-lab demo | head`).
        problems = bring_down(state_dir)
        with contextlib.suppress(OSError):
            _say("\n$ calico-lab down")
            for problem in problems:
                _say(f"  left behind: {problem}")
            if not problems:
                _say("  lab removed")
    return 0 if ok and not problems else 1
