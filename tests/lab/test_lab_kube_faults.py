"""Faults of the API server on a 2-node lab on the kubernetes datastore (issue 12, "Done
when" 3), with Felix and calico-bgpd watching the API directly, and through Typha.

- The API server and its etcd are stopped for a few seconds and started again under
  continuous probing: a pair a Kubernetes NetworkPolicy denies never connects (enforcement
  never opens), the allowed pairs connect again once the server is back, and every consumer
  (calico-felix, calico-typha, calico-ipamd, calico-bgpd) resumes without restarting: same
  PIDs, and each one acts on a change made after the outage (a relabel is enforced, a new pod
  gets an address, a service prefix is advertised over BGP).
- Compaction: etcd is restarted and compacted to its latest revision under the running API
  server, whose watch cache starts over and ends every watch; watches resuming from an older
  resourceVersion get 410 Gone, the consumers list again and converge on a change made right
  after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.kubelabkit import MODES, Prober, kubectl, require_kube
from tests.lab.labkit import (
    REPO,
    LabCli,
    force_down,
    host_snapshot,
    ip_json,
    lab_namespaces,
    make_cli,
    missing_bgp,
    missing_programs,
    require_root,
)

pytestmark = pytest.mark.netns

PODS = {"x/a": "node-1", "x/b": "node-2", "x/c": "node-1"}
DENIED = "x/a>x/b"
ALLOWED = ("x/c>x/b", "x/a>x/c")
DOWN_FOR = 4.0
AFTER = 5.0  # seconds probed after the API server is back
CONVERGE = 15.0
SERVICE_PREFIX = "10.97.0.0/24"
# Only pods labelled pod=c may reach pod=b.
POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-c, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: c}}
"""


@dataclass
class FaultLab:
    state_dir: Path
    cli: LabCli
    typha: bool

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        return data

    def consumers(self) -> dict[str, int]:
        """Every process that reads the API (or Typha): name -> PID."""
        state = self.state()
        pids = {
            f"{node['name']}/{name}": int(record["pid"])
            for node in state["nodes"]
            for name, record in node["processes"].items()
            if name != "bird"
        }
        if "typha" in state["infra"]:
            pids["calico-typha"] = int(state["infra"]["typha"]["pid"])
        return pids

    def probe(self, source: str, target: str) -> bool:
        proc = self.cli("probe", source, target, "--port", "80", "--protocol", "tcp", check=False)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode == 0

    def logs(self) -> dict[str, str]:
        state = self.state()
        out = {
            f"{node['name']}/{name}": Path(record["log"]).read_text(errors="replace")
            for node in state["nodes"]
            for name, record in node["processes"].items()
            if name != "bird"
        }
        if "typha" in state["infra"]:
            out["calico-typha"] = Path(state["infra"]["typha"]["log"]).read_text(errors="replace")
        return out


def wait_until(check: Callable[[], bool], what: str, within: float = CONVERGE) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not within {within}s: {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module", params=["direct", "typha"])
def lab(request: pytest.FixtureRequest) -> Iterator[FaultLab]:
    require_root()
    missing = missing_programs() + missing_bgp()
    if missing:
        print(f"SKIP: a lab with BGP needs: {missing}")
        pytest.skip(f"a lab with BGP needs: {missing}")
    require_kube()
    typha = request.param == "typha"
    state_dir = Path(f"/tmp/cklf{'t' if typha else 'd'}{os.getpid()}")
    before = host_snapshot()
    cli = make_cli(state_dir)
    try:
        options = ["--nodes", "2", *MODES["kubernetes"], *(["--typha"] if typha else [])]
        cli("up", *options, timeout=240)
        for key, node in PODS.items():
            label = f"pod={key.split('/')[1]}"
            cli("pod", "run", key, "--node", node, "--serve", "tcp:80", "--labels", label)
        kubectl(state_dir, "apply", "-f", "-", stdin=POLICY)
        fault_lab = FaultLab(state_dir, cli, typha)
        wait_until(lambda: not fault_lab.probe("x/a", "x/b"), "the policy in force")
        yield fault_lab
        cli("down", timeout=240)
        assert lab_namespaces(state_dir) == []
        assert host_snapshot() == before
    finally:
        force_down(state_dir)


def _relabel_is_enforced(lab: FaultLab) -> float:
    """x/a relabelled pod=c (allowed), then back to pod=a (denied); seconds for both."""
    kubectl(lab.state_dir, "label", "--overwrite", "pod", "-n", "x", "a", "pod=c")
    took = wait_until(lambda: lab.probe("x/a", "x/b"), "x/a allowed once labelled pod=c")
    kubectl(lab.state_dir, "label", "--overwrite", "pod", "-n", "x", "a", "pod=a")
    return took + wait_until(lambda: not lab.probe("x/a", "x/b"), "x/a denied again")


def test_api_server_and_etcd_restart_under_probing(lab: FaultLab) -> None:
    pids = lab.consumers()
    assert all(alive(p) for p in pids.values()), pids
    prober = Prober(lab.state_dir, [DENIED, *ALLOWED])
    try:
        time.sleep(1.0)
        stopped = time.time()
        restarted = lab.cli(
            "apiserver", "restart", "--etcd", "--down-for", str(DOWN_FOR), timeout=180
        )
        back = time.time()
        print(restarted.stdout)
        time.sleep(AFTER)
        rounds = prober.finish()
    finally:
        prober.stop()

    opened = [r["t"] for r in rounds if DENIED in r["connected"]]
    assert not opened, f"{DENIED} connected during/after the outage at {opened}"
    after = [r for r in rounds if r["t"] > back + 1.0]
    # A round lasts as long as the denied probe's timeout (0.5 s).
    assert len(after) >= 5, f"too few rounds after the restart: {len(after)}"
    broken = [r for r in after if not all(p in r["connected"] for p in ALLOWED)]
    assert not broken, f"allowed pairs failed after the restart: {broken[:3]}"
    during = [r for r in rounds if stopped <= r["t"] <= back]
    print(
        f"typha={lab.typha}: {len(rounds)} rounds, {len(during)} during the outage "
        f"({back - stopped:.1f}s), none opened {DENIED}"
    )

    # Nobody restarted, and each consumer acts on what changes after the outage.
    assert lab.consumers() == pids
    assert all(alive(p) for p in pids.values()), pids
    print(f"relabel enforced in {_relabel_is_enforced(lab):.1f}s after the outage")  # Felix
    lab.cli("pod", "run", "x/d", "--node", "node-2", "--serve", "tcp:80", "--labels", "pod=d")
    assert lab.probe("x/d", "x/c")  # calico-ipamd allocated; routes to node-1 hold
    _advertise_from_node_2(lab)  # calico-bgpd (directly, or through Typha)
    lab.cli("pod", "rm", "x/d")
    assert lab.consumers() == pids


def _advertise_from_node_2(lab: FaultLab) -> None:
    config = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPConfiguration",
        "metadata": {"name": "node.node-2"},
        "spec": {"serviceExternalIPs": [{"cidr": SERVICE_PREFIX}]},
    }
    path = lab.state_dir / "node-2-services.json"
    path.write_text(json.dumps(config))
    lab.cli("calicoctl", "apply", "-f", str(path))
    netns = f"clab-{lab.state_dir.name}-node-1"

    def learned() -> bool:
        routes = ip_json(netns, "-4", "route", "show")
        return any(
            r.get("dst") == SERVICE_PREFIX and r.get("gateway") == "10.66.0.12" for r in routes
        )

    wait_until(learned, f"{SERVICE_PREFIX} via node-2 on node-1")
    lab.cli("calicoctl", "delete", "-f", str(path))
    path.unlink()


def _gone(lab: FaultLab, revision: int) -> bool:
    """A watch of pods from `revision` answers 410 Gone (too old resource version)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.main",
            "--state-dir",
            str(lab.state_dir),
            "kubectl",
            "get",
            "--raw",
            f"/api/v1/pods?watch=1&resourceVersion={revision}&timeoutSeconds=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    answer = proc.stdout + proc.stderr
    return "410" in answer or "too old resource version" in answer


def test_compacted_watch_relists_and_converges(lab: FaultLab) -> None:
    """etcd restarted and compacted under the running API server: its watch cache starts over
    at the latest revision and ends every client's watch; resuming from an older
    resourceVersion gets 410 Gone (or 429 while the cache refills), and the consumers list
    again and converge on a change made right after."""
    pids = lab.consumers()
    seen = {name: len(text) for name, text in lab.logs().items()}
    restarted = lab.cli("apiserver", "restart", "--etcd-only", "--compact", timeout=180).stdout
    compacted = int(restarted.split("compacted at revision ")[1].split()[0])
    # What a watch resuming from before the compaction meets once the API server's watch
    # cache has started over (a moment after etcd is back).
    wait_until(lambda: _gone(lab, compacted - 5), "410 Gone for a watch from before it")
    # A change right after, while the consumers are listing again.
    print(f"converged {_relabel_is_enforced(lab):.1f}s after the compaction")
    since = {name: text[seen.get(name, 0) :] for name, text in lab.logs().items()}
    readers = [
        name
        for name in since
        if "typha" in name or (not lab.typha and ("felix" in name or "bgpd" in name))
    ]
    gone_410 = {name: since[name].count("needs a resync") for name in readers}
    relisted = [
        name for name in readers if "needs a resync" in since[name] or "retrying" in since[name]
    ]
    print(f"watches resumed into 410 and listed again, per consumer: {gone_410}")
    assert sorted(relisted) == sorted(readers), (
        f"no relist logged by {set(readers) - set(relisted)}"
    )
    assert lab.consumers() == pids
