"""Fail closed and drift: refresh repairs, kill -9 restarts, unknown cali* veths."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from libcalico.datastore.embedded import EmbeddedDatastore
from services.felix.endpoints.naming import host_veth_name
from tests.felix_policy.cases import object_key, topology
from tests.felix_policy.conftest import clean_node, start_engine
from tests.felix_policy.netlab import NetLab, sh

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]

# x/a accepts ingress only from pod b of its own namespace.
ALLOW_B_TO_A = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "a-from-b", "namespace": "x"},
    "spec": {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        "policyTypes": ["Ingress"],
    },
}


async def wait_for(cond: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {limit_s}s waiting for {what}")


async def test_refresh_repairs_deleted_table_and_flushed_chains(netlab: NetLab) -> None:
    netlab.nft("delete", "table", "inet", "calico", check=False)
    driver = await start_engine(netlab, "nftables", [*topology({}), ALLOW_B_TO_A], refresh=1.0)
    try:
        assert netlab.probe("x/b", "x/a", "TCP", 80)
        assert not netlab.probe("y/b", "x/a", "TCP", 80)

        netlab.nft("delete", "table", "inet", "calico")
        started = time.monotonic()
        await wait_for(lambda: not netlab.probe("y/b", "x/a", "TCP", 80), 3.0, "table rebuilt")
        print(f"deleted table repaired after {time.monotonic() - started:.2f}s")
        assert netlab.probe("x/b", "x/a", "TCP", 80)

        # Flush x/a's ingress chain: x/b -> x/a would now be accepted... and so would y/b.
        chain = "cali-tw-" + host_veth_name("x", "a")
        netlab.nft("flush", "chain", "inet", "calico", chain)
        assert netlab.probe("y/b", "x/a", "TCP", 80)
        await wait_for(lambda: not netlab.probe("y/b", "x/a", "TCP", 80), 3.0, "chain refilled")
        assert netlab.probe("x/b", "x/a", "TCP", 80)

        # Flush the dispatch chain: every pod would be reachable again until repaired.
        netlab.nft("flush", "chain", "inet", "calico", "cali-to-wl")
        await wait_for(lambda: not netlab.probe("y/b", "x/a", "TCP", 80), 3.0, "dispatch repaired")
        assert driver.engine.last_refresh_repairs >= 1
        # With the kernel as intended, a refresh finds nothing to repair.
        assert await driver.engine.dataplane.reconcile(driver.engine.graph.state) == 0
    finally:
        await driver.engine.stop()
        netlab.nft("delete", "table", "inet", "calico", check=False)


class ContinuousProber:
    """Probes pairs over and over on a thread; remembers every result."""

    def __init__(self, lab: NetLab, pairs: list[tuple[str, str]]) -> None:
        self.lab = lab
        self.pairs = pairs
        self.results: dict[tuple[str, str], list[bool]] = {p: [] for p in pairs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            futures = [
                (p, self.lab.probe_async(p[0], self.lab.pods[p[1]].ip, "TCP", 80, 0.2))
                for p in self.pairs
            ]
            for pair, future in futures:
                self.results[pair].append(future.result())

    def __enter__(self) -> ContinuousProber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def start_agent(lab: NetLab, db: Path, status: Path) -> subprocess.Popen[bytes]:
    status.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "services.felix.policy.agent",
        "--datastore-type",
        "embedded",
        "--datastore-path",
        str(db),
        "--nodename",
        "node-1",
        "--netns",
        lab.node_path,
        "--refresh-interval",
        "1",
        "--status-file",
        str(status),
    ]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def agent_ready(status: Path) -> bool:
    try:
        return bool(json.loads(status.read_text())["ready"])
    except (OSError, ValueError, KeyError):
        return False


async def test_kill_9_and_restart_never_lets_denied_traffic_through(
    netlab: NetLab, tmp_path: Path
) -> None:
    netlab.nft("delete", "table", "inet", "calico", check=False)
    db, status = tmp_path / "calico.db", tmp_path / "status.json"
    store = EmbeddedDatastore(str(db))
    for obj in [*topology({}), ALLOW_B_TO_A]:
        await store.put(object_key(obj), json.dumps(obj).encode())
    await store.close()
    agent = start_agent(netlab, db, status)
    try:
        await wait_for(lambda: agent_ready(status), 20.0, "agent ready")
        await wait_for(lambda: not netlab.probe("y/b", "x/a", "TCP", 80), 5.0, "policy")
        chain = "cali-tw-" + host_veth_name("x", "a")
        before = netlab.nft("-a", "list", "chain", "inet", "calico", chain)
        denied, allowed = ("y/b", "x/a"), ("x/b", "x/a")
        with ContinuousProber(netlab, [denied, allowed]) as prober:
            await asyncio.sleep(0.5)
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(timeout=10)
            await asyncio.sleep(0.5)  # Felix down: the kernel keeps enforcing
            agent = start_agent(netlab, db, status)
            await wait_for(lambda: agent_ready(status), 20.0, "agent ready again")
            await asyncio.sleep(1.5)  # a refresh has run too
        print(
            f"probes: {len(prober.results[denied])} denied-pair, "
            f"{sum(prober.results[allowed])}/{len(prober.results[allowed])} allowed-pair ok"
        )
        assert prober.results[denied], "the prober never ran"
        assert not any(prober.results[denied]), "a denied connection succeeded during restart"
        assert all(prober.results[allowed]), "an allowed connection failed during restart"
        # Nothing was rewritten: identical state means identical rule handles.
        assert netlab.nft("-a", "list", "chain", "inet", "calico", chain) == before
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        netlab.nft("delete", "table", "inet", "calico", check=False)


async def test_unknown_cali_interface_carries_no_traffic(netlab: NetLab) -> None:
    netlab.nft("delete", "table", "inet", "calico", check=False)
    driver = await start_engine(netlab, "nftables", topology({}))
    try:
        netlab.add_pod("w/stray", "10.65.9.9", "cali0stray00000")
        assert netlab.probe("x/a", "x/b", "TCP", 80)  # known pods still talk
        assert not netlab.probe("w/stray", "x/a", "TCP", 80)
        assert not netlab.probe("x/a", "w/stray", "TCP", 80)
        assert not netlab.probe("w/stray", "x/a", "UDP", 80)
        assert not netlab.ping("w/stray", "x/a")
    finally:
        await driver.engine.stop()
        netlab.nft("delete", "table", "inet", "calico", check=False)


@pytest.mark.parametrize("kind", ["iptables", "iptables-legacy"])
async def test_iptables_refresh_repairs_flushed_chains(netlab: NetLab, kind: str) -> None:
    clean_node(netlab)
    tool = "iptables-legacy" if kind == "iptables-legacy" else "iptables"
    driver = await start_engine(netlab, kind, [*topology({}), ALLOW_B_TO_A], refresh=1.0)
    try:
        assert netlab.probe("x/b", "x/a", "TCP", 80)
        assert not netlab.probe("y/b", "x/a", "TCP", 80)
        save = sh("ip", "netns", "exec", netlab.node_ns, f"{tool}-save", "-t", "filter")
        chains = sorted(
            {line[1:].split()[0] for line in save.splitlines() if line.startswith(":cali-")}
        )
        for chain in chains:  # flush every cali-* chain by hand
            sh("ip", "netns", "exec", netlab.node_ns, tool, "-F", chain)
        assert netlab.probe("y/b", "x/a", "TCP", 80)  # policy gone from the kernel
        started = time.monotonic()
        await wait_for(lambda: not netlab.probe("y/b", "x/a", "TCP", 80), 3.0, "repair")
        print(f"{kind}: flushed chains repaired after {time.monotonic() - started:.2f}s")
        assert netlab.probe("x/b", "x/a", "TCP", 80)
        assert await driver.engine.dataplane.reconcile(driver.engine.graph.state) == 0
        netlab.add_pod(
            f"w/stray-{kind[-6:]}", f"10.65.9.{len(netlab.pods)}", f"cali0stray{kind[-5:]}"
        )
        stray = f"w/stray-{kind[-6:]}"
        assert not netlab.probe(stray, "x/b", "TCP", 80)
        assert not netlab.probe("x/b", stray, "TCP", 80)
    finally:
        await driver.engine.stop()
        clean_node(netlab)
