"""The two sides of the BGP convergence benchmark.

Reference: the ToR of lab/tor.py (BIRD) in a namespace of its own with a bridge, and N bare
BIRDs (tests/tor/bgpkit.py: hand-written config, AS 64512) as receivers. Nothing of the
project's node side is in it, so it is what BIRD → BIRD costs on this machine.

Project: a calico-lab with N nodes (calico-ipamd, calico-felix, calico-bgpd + BIRD each),
`--bgp mesh --tor bird`, driven through the calico-lab CLI as a user would.

Both expose the same things: the ToR's state directory (lab.tor's announce/withdraw work on
either) and one RouteWatcher per receiving namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.route_watch import RouteWatcher
from lab import netns, tor
from tests.tor.bgpkit import BareBird, Network, random_suffix

REPO = Path(__file__).resolve().parents[1]
TOR_ASN = 65000
NODE_ASN = 64512
REFERENCE_SUBNET = "10.79.0"  # away from the lab's 10.66.0.0/24


def wait_established(state_dir: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = tor.sessions("bird", state_dir)
        if len(states) == count and all(s == "Established" for s in states.values()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"ToR sessions not all Established after {timeout:.0f} s: {states}")


class Reference:
    """ToR → N bare BIRD receivers, each installing into its own namespace's kernel."""

    def __init__(self, receivers: int, work: Path) -> None:
        self.receivers = receivers
        self.work = work
        self.tor_state = work / "ref"
        self.network = Network(prefix=f"bgpb-{random_suffix()}", subnet=REFERENCE_SUBNET)
        self.birds: list[BareBird] = []
        self._watchers: dict[int, RouteWatcher] = {}
        self.tor_record: Any = None

    def up(self) -> Reference:
        self.network.create()
        neighbors = []
        for i in range(1, self.receivers + 1):
            name, address = self.network.add_host(i)
            neighbors.append((address, NODE_ASN))
            self.birds.append(
                BareBird(
                    namespace=name,
                    directory=self.work / f"ref-receiver-{i}",
                    router_id=address,
                    asn=NODE_ASN,
                    peers=[(self.network.router_address, TOR_ASN)],
                ).start()
            )
        with netns.inside(netns.netns_path(self.network.net)):
            self.tor_record = tor.start_tor(
                "bird", self.tor_state, TOR_ASN, self.network.router_address, neighbors
            )
        wait_established(self.tor_state, self.receivers)
        return self

    def watcher(self, index: int) -> RouteWatcher:
        """The route watcher of receiver `index` (1-based), made on first use."""
        if index not in self._watchers:
            self._watchers[index] = RouteWatcher(self.birds[index - 1].namespace)
        return self._watchers[index]

    def close_watchers(self) -> None:
        # An open watcher parses every route event: close the ones a part no longer needs.
        for watcher in self._watchers.values():
            watcher.close()
        self._watchers.clear()

    def close(self) -> list[str]:
        problems = []
        self.close_watchers()
        if self.tor_record is not None and not tor.stop_tor(self.tor_record):
            problems.append(f"reference ToR pid {self.tor_record.pid} still running")
        for bird in self.birds:
            if not bird.stop():
                problems.append(f"reference BIRD in {bird.namespace} still running")
        problems += [f"namespace {n} left" for n in self.network.close()]
        return problems


class LabRun:
    """A calico-lab brought up and taken down through its CLI."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._watchers: dict[str, RouteWatcher] = {}
        self.started = False

    def cli(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "lab.main", "--state-dir", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"calico-lab {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def up(self, nodes: int) -> LabRun:
        self.started = True
        self.cli("up", "--nodes", str(nodes), "--bgp", "mesh", "--tor", "bird")
        wait_established(self.state_dir, nodes)
        return self

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        return data

    def node(self, name: str) -> dict[str, Any]:
        for node in self.state()["nodes"]:
            if node["name"] == name:
                return dict(node)
        raise KeyError(f"lab has no node {name!r}")

    def watcher(self, node_name: str) -> RouteWatcher:
        """The route watcher of a node's namespace, made on first use."""
        if node_name not in self._watchers:
            self._watchers[node_name] = RouteWatcher(self.node(node_name)["netns"])
        return self._watchers[node_name]

    def close_watchers(self) -> None:
        for watcher in self._watchers.values():
            watcher.close()
        self._watchers.clear()

    def close(self) -> list[str]:
        self.close_watchers()
        if not self.started:
            return []
        from tests.lab.labkit import force_down

        try:
            force_down(self.state_dir)
        except (AssertionError, RuntimeError, subprocess.SubprocessError) as exc:
            return [f"lab down: {exc}"]
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return []


def bgpd_available() -> str:
    """ "" when calico-bgpd is built (its --help answers), else why not."""
    program = Path(sys.executable).parent / "calico-bgpd"
    if not os.access(program, os.X_OK):
        return f"{program} does not exist"
    proc = subprocess.run([str(program), "--help"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"calico-bgpd --help exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return ""
