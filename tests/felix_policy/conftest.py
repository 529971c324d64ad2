"""Fixtures: the 9-pod conformance topology in throwaway namespaces, and a running engine."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from libcalico.syncer.api import SyncerUpdate, Update
from services.felix.dataplane import make_dataplane
from services.felix.endpoints.naming import host_veth_name
from services.felix.policy import PolicyEngine
from tests.felix_policy.cases import NAMESPACES, NODE, PODS, object_key, pod_ip, topology
from tests.felix_policy.memsyncer import MemorySyncer
from tests.felix_policy.netlab import NetLab, sh

DATAPLANES = ("nftables", "iptables", "iptables-legacy")


def kernel_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("nft") is None:
        return "nft not installed"
    return None


@pytest.fixture(scope="module")
def netlab() -> Iterator[NetLab]:
    reason = kernel_available()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    lab = NetLab()
    try:
        for ns in NAMESPACES:
            for pod in PODS:
                lab.add_pod(f"{ns}/{pod}", pod_ip(ns, pod), host_veth_name(ns, pod))
        yield lab
    finally:
        lab.close()


class Driver:
    """Sends resources to a running engine and waits until they are in the kernel."""

    def __init__(self, engine: PolicyEngine, syncer: MemorySyncer) -> None:
        self.engine = engine
        self.syncer = syncer
        self.revision = 1000

    def put(self, obj: dict[str, Any]) -> SyncerUpdate:
        self.revision += 1
        return Update(object_key(obj), json.dumps(obj).encode(), self.revision)

    async def send(self, batch: list[SyncerUpdate]) -> None:
        self.syncer.send(batch)
        await self.settle()

    async def settle(self) -> None:
        for _ in range(200):
            if self.syncer.drained():
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)
        await self.engine.apply_now()


async def start_engine(
    lab: NetLab, kind: str, objs: list[dict[str, Any]], refresh: float = 30.0
) -> Driver:
    syncer = MemorySyncer([])
    engine = PolicyEngine(syncer, NODE, make_dataplane(kind, lab.node_path), refresh)
    driver = Driver(engine, syncer)
    syncer._queue.get_nowait()  # replace the empty snapshot with the topology
    from libcalico.syncer.api import InSync

    syncer.send([*(driver.put(o) for o in objs), InSync()])
    await engine.start()
    await driver.settle()
    return driver


def clean_node(lab: NetLab) -> None:
    """Remove whatever any dataplane left in the (test-owned) node namespace."""
    lab.nft("delete", "table", "inet", "calico", check=False)
    if shutil.which("iptables-legacy"):
        for flag in ("-F", "-X"):
            sh("ip", "netns", "exec", lab.node_ns, "iptables-legacy", flag, check=False)
    lab.nft("flush", "ruleset", check=False)  # iptables-nft's tables
    sh("ip", "netns", "exec", lab.node_ns, "ipset", "destroy", check=False)


@pytest_asyncio.fixture
async def nft_driver(netlab: NetLab) -> AsyncIterator[Driver]:
    clean_node(netlab)
    driver = await start_engine(netlab, "nftables", topology({}))
    try:
        yield driver
    finally:
        await driver.engine.stop()
        clean_node(netlab)


@pytest_asyncio.fixture(params=DATAPLANES)
async def any_driver(request: pytest.FixtureRequest, netlab: NetLab) -> AsyncIterator[Driver]:
    """One engine per dataplane kind (nftables, iptables nft flavour, iptables legacy)."""
    kind = str(request.param)
    if kind != "nftables" and shutil.which("ipset") is None:
        print(f"SKIP {kind}: ipset not installed")
        pytest.skip("ipset not installed")
    clean_node(netlab)
    driver = await start_engine(netlab, kind, topology({}))
    try:
        yield driver
    finally:
        await driver.engine.stop()
        clean_node(netlab)
