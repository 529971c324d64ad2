"""Faults on a 3-node lab with a BIRD top-of-rack router (issue 10, "Done when" 3).

kill -9 of node-2's calico-bgpd under continuous cross-node probing loses no probe and flaps
no session; kill -9 of its BIRD: calico-bgpd starts another, the sessions come back by
themselves and traffic flows again; a configuration BIRD rejects leaves the old one running
with the error in `calico-lab node status`. One lab for the file, brought up by the CLI.

The probes run in a subprocess (`python -c` calling `probe_loop` below): the lab's prober
enters pod namespaces, which the pytest process never does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.labkit import (
    PODS,
    REPO,
    LabCli,
    force_down,
    host_snapshot,
    lab_namespaces,
    make_cli,
    missing_bgp,
    missing_programs,
    require_root,
)

pytestmark = pytest.mark.netns

NODES = {"node-1": "10.66.0.11", "node-2": "10.66.0.12", "node-3": "10.66.0.13"}
TOR_ADDRESS = "10.66.0.1"
# Across node-2 both ways, and between the two nodes that keep running.
PROBED = [("x/a", "x/b"), ("x/c", "x/b"), ("x/b", "x/a"), ("x/a", "x/c")]
PROBE_INTERVAL = 0.1
PROBE_SECONDS = 6.0
PROBE_TIMEOUT = 1.0
SESSIONS_BACK = 15.0
CONVERGE = 15.0
BGPD = "calico-bgpd"
EXTRA_CONFIG_ENV = "CALICO_BGPD_EXTRA_CONFIG_FILE"
SERVICE_PREFIX = "10.97.0.0/24"  # node-2's own serviceExternalIPs: a change only it makes


@dataclass
class FaultsLab:
    state_dir: Path
    files: Path
    cli: LabCli

    def netns(self, node: str) -> str:
        return f"clab-{self.state_dir.name}-{node}"

    def status(self, node: str) -> dict[str, Any]:
        """`calico-lab node status NODE -o json`: calico-bgpd's reply."""
        out = self.cli("node", "status", node, "-o", "json").stdout
        reply: dict[str, Any] = json.loads(out)
        return reply

    def sessions(self, node: str) -> dict[str, tuple[str, str]]:
        """Peer address -> (state, since) as the node's calico-bgpd reports it."""
        return {p["address"]: (p["state"], p["since"]) for p in self.status(node)["peers"]}

    def bird_pid(self, node: str) -> int:
        return int((self.state_dir / "nodes" / node / "bird" / "bird.pid").read_text().split()[0])


def expected_peers(node: str) -> set[str]:
    return (set(NODES.values()) - {NODES[node]}) | {TOR_ADDRESS}


def all_established(lab: FaultsLab, node: str) -> bool:
    sessions = lab.sessions(node)
    return set(sessions) == expected_peers(node) and all(
        state == "Established" for state, _ in sessions.values()
    )


def kernel_routes(netns: str) -> dict[str, str]:
    """Destination -> "via <gateway>" or the route type, of a node's main IPv4 table."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "-4", "route", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {
        str(ipaddress.ip_network(r["dst"])): f"via {r['gateway']}"
        if "gateway" in r
        else r.get("type", "unicast")
        for r in json.loads(out)
        if r["dst"] != "default"
    }


def _since_seconds(since: str) -> float | None:
    """BIRD's "since" (HH:MM:SS.mmm, maybe after a date) as seconds of the day."""
    try:
        hours, minutes, seconds = since.split()[-1].split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def same_sessions(now: dict[str, tuple[str, str]], before: dict[str, tuple[str, str]]) -> bool:
    """The same peers in the same states, none re-established since `before`. BIRD keeps its
    timestamps on the monotonic clock and converts them to wall-clock time as it prints them,
    so one instant can print 1 ms apart from one reading to the next (seen): "since" is
    compared to within 50 ms; a flap moves it by the session's whole set-up time, seconds."""
    if now.keys() != before.keys():
        return False
    for peer, (state, since) in now.items():
        old_state, old_since = before[peer]
        if state != old_state:
            return False
        a, b = _since_seconds(since), _since_seconds(old_since)
        if a is None or b is None:
            if since != old_since:
                return False
        elif abs(a - b) > 0.05:
            return False
    return True


def settled_sessions(lab: FaultsLab) -> dict[str, dict[str, tuple[str, str]]]:
    """Every node's sessions once all are Established and two readings 0.5 s apart agree.

    BIRD reports a BGP session Established a moment before its protocol's "since" takes its
    final value, so a single reading is no baseline for "not flapped"."""
    wait_until(lambda: all(all_established(lab, n) for n in NODES), "every session Established")
    previous: dict[str, dict[str, tuple[str, str]]] = {}

    def stable() -> bool:
        nonlocal previous
        time.sleep(0.5)
        current = {node: lab.sessions(node) for node in NODES}
        same = current.keys() == previous.keys() and all(
            same_sessions(current[n], previous[n]) for n in current
        )
        previous = current
        return same

    wait_until(stable, "session states unchanged for 0.5 s")
    return previous


def wait_until(check: Callable[[], object], what: str, timeout: float = CONVERGE) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.2)
    return time.monotonic() - started


# ---- continuous probing (runs in a subprocess) ----


def probe_loop(state_dir: str, seconds: float, interval: float, pairs: Sequence[str]) -> None:
    """Probe every "FROM>TO" pair over TCP/80 each `interval` seconds for `seconds`; one JSON
    line per round: {"t": unix time, "failed": [pairs that did not connect]}."""
    from lab.lab import Lab
    from lab.matrix import endpoint_of
    from lab.prober import probe_pairs

    lab = Lab.load(Path(state_dir))
    wanted = [tuple(p.split(">")) for p in pairs]
    endpoints = [(endpoint_of(lab.pod(a)), endpoint_of(lab.pod(b))) for a, b in wanted]

    async def rounds() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            result = await probe_pairs(endpoints, 80, "tcp", PROBE_TIMEOUT)
            failed = [f"{s}>{d}" for (s, d), ok in result.items() if not ok]
            print(json.dumps({"t": time.time(), "failed": failed}), flush=True)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    asyncio.run(rounds())


class Prober:
    """`probe_loop` in a subprocess; `rounds()` waits for it and returns what it printed."""

    def __init__(self, state_dir: Path, seconds: float = PROBE_SECONDS) -> None:
        code = (
            "import sys; from tests.lab.test_lab_bgp_faults import probe_loop; "
            "probe_loop(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:])"
        )
        pairs = [f"{a}>{b}" for a, b in PROBED]
        argv = [sys.executable, "-c", code, str(state_dir), str(seconds), str(PROBE_INTERVAL)]
        self.proc = subprocess.Popen(
            [*argv, *pairs], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # probing has started once a round is reported
        assert first, f"the prober printed nothing: {self.proc.stderr and self.proc.stderr.read()}"
        self.first = json.loads(first)

    def rounds(self) -> list[dict[str, Any]]:
        out, err = self.proc.communicate(timeout=PROBE_SECONDS + 30)
        assert self.proc.returncode == 0, err
        return [self.first, *(json.loads(line) for line in out.splitlines())]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---- the lab ----


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultsLab]:
    require_root()
    missing = missing_programs() + missing_bgp()
    if missing:
        reason = f"a lab with BGP needs: {', '.join(missing)}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    # Short (Unix socket paths live under it) and distinctive: the lab and its namespaces
    # are named after it, so parallel runs never collide.
    state_dir = Path(f"/tmp/bgpf-{secrets.token_hex(3)}")
    before = host_snapshot()
    cli = make_cli(state_dir)
    handle = FaultsLab(state_dir, tmp_path_factory.mktemp("faults"), cli)
    birds: set[int] = set()
    try:
        started = time.monotonic()
        cli("up", "--nodes", "3", "--bgp", "mesh", "--tor", "bird", timeout=180)
        for pod, node in PODS.items():
            cli("pod", "run", pod, "--node", node, "--serve", "tcp:80")
        print(f"3 nodes + BIRD ToR up with 3 pods: {time.monotonic() - started:.1f}s")
        yield handle
        birds = {handle.bird_pid(n) for n in NODES}  # including any calico-bgpd restarted
        cli("down")
    finally:
        force_down(state_dir)
    assert not state_dir.exists()
    assert lab_namespaces(state_dir) == []
    assert not [pid for pid in birds if _alive(pid)], f"BIRDs left: {birds}"
    assert host_snapshot() == before


def _alive(pid: int) -> bool:
    """A process, not a zombie (init reaps the lab's orphans when it gets to it)."""
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False


# ---- the faults ----


def test_node_restart_refuses_bad_input_and_changes_nothing(lab: FaultsLab) -> None:
    state = lab.state_dir / "state.json"
    before = state.read_text()
    for args, message in (
        (("node-2", "bird"), "invalid choice: 'bird'"),
        (("node-9", BGPD), "no node 'node-9'"),
        (("node-2", BGPD, "--env", "1X=y"), "--env: expected K=V"),
        (("node-2", BGPD, "--env", "NOVALUE"), "--env: expected K=V"),
    ):
        result = lab.cli("node", "restart", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert state.read_text() == before


def test_kill_bgpd_under_probing_loses_no_probe_and_no_session(lab: FaultsLab) -> None:
    before = settled_sessions(lab)
    bird = lab.bird_pid("node-2")
    prober = Prober(lab.state_dir)
    try:
        time.sleep(1.0)  # probes before the crash too
        killed = time.time()
        out = lab.cli("node", "restart", "node-2", BGPD, "--kill").stdout
        restarted = time.time()
        print(out.strip())
        rounds = prober.rounds()
    finally:
        prober.stop()
    lost = [(r["t"], r["failed"]) for r in rounds if r["failed"]]
    after_restart = [r for r in rounds if r["t"] > restarted]
    span = rounds[-1]["t"] - rounds[0]["t"]
    print(
        f"{len(rounds)} probe rounds x {len(PROBED)} pairs over {span:.1f}s; the restart took "
        f"{restarted - killed:.2f}s, {len(after_restart)} rounds after it"
    )
    assert not lost, lost
    assert rounds[0]["t"] < killed and len(after_restart) >= 10, (killed, restarted, rounds)
    assert len(rounds) >= PROBE_SECONDS / PROBE_INTERVAL / 2

    status = lab.status("node-2")
    assert status["bird_pid"] == bird == lab.bird_pid("node-2")
    assert status["bird_restarts"] == 0 and status["last_apply"]["ok"], status
    # No session flapped, on either side: the restarted calico-bgpd adopted BIRD as it was.
    for node in NODES:
        assert same_sessions(lab.sessions(node), before[node]), (node, before[node])


def test_kill_bird_sessions_come_back_and_traffic_flows(lab: FaultsLab) -> None:
    from lab.node import bird_from_pidfile

    bird = bird_from_pidfile(lab.state_dir / "nodes" / "node-2" / "bird")
    assert bird is not None, "node-2 has no live BIRD in its bird.pid"
    prober = Prober(lab.state_dir, seconds=4.0)
    try:
        subprocess.run(["kill", "-9", str(bird.pid)], check=True)
        killed = time.monotonic()
        took = wait_until(
            lambda: all(all_established(lab, n) for n in NODES),
            "every session Established again",
            timeout=SESSIONS_BACK,
        )
        rounds = prober.rounds()
    finally:
        prober.stop()
    print(f"BIRD killed: every session Established again after {took:.2f}s")
    lost = [r for r in rounds if r["failed"]]
    # Graceful restart keeps the kernel routes meanwhile; only recovery is required here.
    print(f"{len(lost)} of {len(rounds)} probe rounds during the BIRD restart had a failure")
    status = lab.status("node-2")
    assert status["bird_running"] and status["bird_pid"] != bird.pid, status
    assert status["bird_pid"] == lab.bird_pid("node-2") and status["bird_restarts"] == 1
    # Reconverged: every node routes every other node's pods, and traffic flows again.
    recovered = Prober(lab.state_dir, seconds=0.5)
    try:
        again = recovered.rounds()
    finally:
        recovered.stop()
    assert not [r for r in again if r["failed"]], again
    print(f"probes after recovery all connected ({time.monotonic() - killed:.1f}s after the kill)")


def test_rejected_config_keeps_the_old_one_running_and_shows_the_error(lab: FaultsLab) -> None:
    extra = lab.files / "extra.conf"
    extra.write_text("")
    lab.cli("node", "restart", "node-2", BGPD, "--env", f"{EXTRA_CONFIG_ENV}={extra}")
    wait_until(lambda: lab.status("node-2")["last_apply"]["ok"], "a good config first")
    sessions = settled_sessions(lab)
    bird = lab.bird_pid("node-2")
    conf = lab.state_dir / "nodes" / "node-2" / "bird" / "bird.conf"
    good = conf.read_text()

    # What BIRD rejects comes with the next change (here, a service prefix only node-2 adds).
    extra.write_text("protocol bogus {}\n")
    _apply(
        lab, _bgp_configuration("node.node-2", {"serviceExternalIPs": [{"cidr": SERVICE_PREFIX}]})
    )
    wait_until(lambda: not lab.status("node-2")["last_apply"]["ok"], "the rejection")
    text = lab.cli("node", "status", "node-2").stdout
    print(text)
    assert "Last config apply: FAILED" in text and "syntax error" in text, text
    status = lab.status("node-2")
    assert "bird.conf.new" in status["last_apply"]["error"], status["last_apply"]
    # The old configuration runs on: same BIRD, same file, no session flapped, routes in place.
    assert lab.bird_pid("node-2") == bird and conf.read_text() == good
    assert SERVICE_PREFIX not in status["advertised"]
    for node in NODES:
        assert same_sessions(lab.sessions(node), sessions[node]), (node, sessions[node])
    for node in ("node-1", "node-3"):
        routes = kernel_routes(lab.netns(node))
        assert SERVICE_PREFIX not in routes, routes
    assert _routed_everywhere(lab)

    # Fixed (calico-bgpd started without the bad file): the pending change goes through.
    lab.cli("node", "restart", "node-2", BGPD)
    wait_until(lambda: lab.status("node-2")["last_apply"]["ok"], "a good config again")
    wait_until(
        lambda: all(
            kernel_routes(lab.netns(n)).get(SERVICE_PREFIX) == f"via {NODES['node-2']}"
            for n in ("node-1", "node-3")
        ),
        f"{SERVICE_PREFIX} via node-2 on node-1 and node-3",
    )
    assert lab.bird_pid("node-2") == bird
    for node in NODES:
        assert same_sessions(lab.sessions(node), sessions[node]), (node, sessions[node])


def _routed_everywhere(lab: FaultsLab) -> bool:
    """Every node routes every other node's pod block (/26) via that node."""
    state = json.loads((lab.state_dir / "state.json").read_text())
    blocks = {
        str(ipaddress.ip_network(f"{state['pods'][pod]['ips'][0]}/26", strict=False)): NODES[node]
        for pod, node in PODS.items()
    }
    for node, address in NODES.items():
        routes = kernel_routes(lab.netns(node))
        for block, owner in blocks.items():
            if owner != address and routes.get(block) != f"via {owner}":
                return False
    return True


def _bgp_configuration(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPConfiguration",
        "metadata": {"name": name},
        "spec": spec,
    }


def _apply(lab: FaultsLab, obj: dict[str, Any]) -> None:
    path = lab.files / f"{obj['metadata']['name']}.json"
    path.write_text(json.dumps(obj))
    lab.cli("calicoctl", "apply", "-f", str(path))


def test_restart_into_a_rejected_config_keeps_bird_and_shows_the_error(lab: FaultsLab) -> None:
    """calico-bgpd restarted with a configuration BIRD rejects from its first apply on (the
    extra file already bad): BIRD runs on as it was, the error is in `node status`."""
    sessions = settled_sessions(lab)
    bird = lab.bird_pid("node-2")
    conf = lab.state_dir / "nodes" / "node-2" / "bird" / "bird.conf"
    good = conf.read_text()
    bad = lab.files / "bad.conf"
    bad.write_text("protocol bogus {}\n")
    try:
        lab.cli("node", "restart", "node-2", BGPD, "--env", f"{EXTRA_CONFIG_ENV}={bad}")
        wait_until(lambda: lab.status("node-2")["last_apply"]["error"], "the rejection")
        text = lab.cli("node", "status", "node-2").stdout
        assert "Last config apply: FAILED" in text and "syntax error" in text, text
        assert lab.bird_pid("node-2") == bird and conf.read_text() == good
        for node in ("node-1", "node-3"):
            assert same_sessions(lab.sessions(node), sessions[node]), (node, sessions[node])
        assert _routed_everywhere(lab)
        shown = lab.sessions("node-2")
    finally:
        lab.cli("node", "restart", "node-2", BGPD)
    wait_until(lambda: lab.status("node-2")["last_apply"]["ok"], "a good config again")
    for node in NODES:
        assert same_sessions(lab.sessions(node), sessions[node]), (node, sessions[node])
    # Restarted straight into a rejected configuration, calico-bgpd still lists the sessions
    # BIRD runs (from BIRD's own listing: it never held that configuration's intent).
    assert same_sessions(shown, sessions["node-2"]), (shown, sessions["node-2"])
