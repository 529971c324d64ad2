"""Services under faults, at lab level with the real Felix daemon and real traffic (issue 14,
Done-when 2 and 3).

One node, embedded datastore, Felix on nftables with a 1 s refresh interval (module-scoped):
a ClusterIP Service `y/web` over two backends (y/a, y/b) and a NodePort Service `y/np` over
the same pods, the client pod x/c.

- Felix killed (-9, by the PID the lab recorded): a TCP connection opened through the cluster
  IP before the kill keeps exchanging data, new connections through the cluster IP (both
  backends) and the node port keep working while Felix is down; restarted the lab way, it
  adopts the table: the service chains' rule handles are unchanged and traffic still works.
- Drift: the cluster IP's verdict-map element deleted and the service chain flushed by hand
  in the node's namespace: the cluster IP rejects, then Felix's refresh repairs both and
  traffic works again. The same on an iptables lab (its `cali-SVC-*` chain flushed and its
  `cali-SERVICES` line deleted).
- Endpoint churn under a connection loop: y/b set not ready; once its address is gone from the
  service chain no new connection reaches it; ready again, it serves again.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.processes import process_start_time
from tests.lab.labkit import (
    LabCli,
    force_down,
    host_snapshot,
    lab_namespaces,
    make_cli,
    missing_programs,
    require_root,
)

pytestmark = pytest.mark.netns

REFRESH_S = 1.0  # Felix's refresh interval in these labs (FELIX_REFRESHINTERVAL)
SETTLE_S = 10.0  # a Service change programmed and reachable
NODE_PORT = 30081
BACKENDS = {"y/a", "y/b"}


def _needs_lab() -> None:
    require_root()
    missing = missing_programs()
    if missing:
        reason = f"calico services not available yet: {', '.join(missing)}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@dataclass
class SvcLab:
    state_dir: Path
    cli: LabCli
    cluster_ip: str

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        return data

    @property
    def node_netns(self) -> str:
        return str(self.state()["nodes"][0]["netns"])

    def pod_netns(self, pod: str) -> str:
        return str(self.state()["pods"][pod]["netns"])

    def pod_ip(self, pod: str) -> str:
        return str(self.state()["pods"][pod]["ips"][0])

    def felix(self) -> dict[str, Any]:
        record: dict[str, Any] = self.state()["nodes"][0]["processes"]["calico-felix"]
        return record

    def probe(self, source: str, target: str, port: int) -> dict[str, Any]:
        out = self.cli(
            "probe", source, target, "--port", str(port), "--protocol", "tcp", "--json", check=False
        )
        assert out.returncode in (0, 1), out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def served(self, source: str, target: str, port: int, tries: int) -> list[str | None]:
        """Who served each of `tries` probes (None: not connected)."""
        return [
            r["served_by"] if r["outcome"] == "connected" else None
            for r in (self.probe(source, target, port) for _ in range(tries))
        ]

    def felix_status(self) -> Any:
        import grpc

        from calico.felix.v1 import status_pb2, status_pb2_grpc

        socket = self.state()["nodes"][0]["sockets"]["calico-felix"]
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            return status_pb2_grpc.StatusStub(channel).GetStatus(
                status_pb2.GetStatusRequest(), timeout=2
            )


def wait_until(check: Callable[[], bool], what: str, within: float = SETTLE_S) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not within {within}s: {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def _bring_up(state_dir: Path, dataplane: str) -> SvcLab:
    cli = make_cli(state_dir)
    cli("up", "--dataplane", dataplane)
    cli("pod", "run", "y/a", "--labels", "app=web")
    cli("pod", "run", "y/b", "--labels", "app=web")
    cli("pod", "run", "x/c")
    cli("svc", "create", "y/web", "--selector", "app=web", "--port", "80")
    cli(
        "svc", "create", "y/np", "--selector", "app=web", "--port", "80",
        "--type", "NodePort", "--node-port", str(NODE_PORT),
    )  # fmt: skip
    web = {s["metadata"]["name"]: s for s in json.loads(cli("svc", "ls", "--json").stdout)}
    lab = SvcLab(state_dir, cli, web["web"]["spec"]["clusterIP"])
    wait_until(
        lambda: lab.probe("x/c", "svc:y/web", 80)["outcome"] == "connected",
        "the cluster IP serves",
    )
    return lab


@contextmanager
def _lab(dataplane: str) -> Iterator[SvcLab]:
    _needs_lab()
    state_dir = Path(f"/tmp/clf{os.getpid()}{dataplane[:3]}")
    before = host_snapshot()
    # The daemons (and those `node restart` starts) inherit the short refresh interval.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FELIX_REFRESHINTERVAL", str(REFRESH_S))
        try:
            started = time.monotonic()
            lab = _bring_up(state_dir, dataplane)
            print(f"{dataplane} lab with two Services up: {time.monotonic() - started:.1f}s")
            yield lab
            make_cli(state_dir)("down")
        finally:
            force_down(state_dir)
    assert not lab_namespaces(state_dir)
    assert host_snapshot() == before, "the host's namespace changed"


@pytest.fixture(scope="module")
def nft_lab() -> Iterator[SvcLab]:
    with _lab("nftables") as lab:
        yield lab


# ---- the node's nftables table ----


def nft_json(netns: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "-a", "list", "table", "inet", "calico"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["nftables"]
    return items


def service_rules(netns: str) -> dict[str, list[int]]:
    """Rule handles per service chain (`cali-svc-*`, `cali-sxt-*`, `svc-*`)."""
    out: dict[str, list[int]] = {}
    for item in nft_json(netns):
        if "chain" in item and item["chain"]["name"].startswith(("cali-svc-", "cali-sxt-", "svc-")):
            out.setdefault(item["chain"]["name"], [])
        rule = item.get("rule")
        if rule and rule["chain"].startswith(("cali-svc-", "cali-sxt-", "svc-")):
            out.setdefault(rule["chain"], []).append(rule["handle"])
    return out


def svc_ips_entries(netns: str) -> list[Any]:
    for item in nft_json(netns):
        if "map" in item and item["map"]["name"] == "cali-svc-ips":
            elems: list[Any] = item["map"].get("elem", [])
            return elems
    return []


def chain_for(netns: str, cluster_ip: str) -> str:
    """The chain `cali-svc-ips` sends the cluster IP's TCP port 80 to."""
    for key, verdict in (e for e in svc_ips_entries(netns)):
        if cluster_ip in json.dumps(key):
            target = verdict.get("goto") or verdict.get("jump")
            return str(target["target"])
    raise AssertionError(f"{cluster_ip} not in cali-svc-ips: {svc_ips_entries(netns)}")


def chain_text(netns: str, chain: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "chain", "inet", "calico", chain],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def nft(netns: str, command: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", command], check=True)


def watch_repair(
    lab: SvcLab, edit: Callable[[], None], repaired: Callable[[], bool], within: float
) -> tuple[str, float, float]:
    """A hand edit of the node's rules, repaired by Felix's refresh: made once to find the
    refresh loop's phase (the repair is a refresh tick), then again at once, so that the probe
    through the cluster IP (in a thread) runs while the rules are broken and the kernel is
    polled for the repair meanwhile. Returns the probe's outcome, when it ended and when the
    repair was seen, both in seconds after the second edit."""
    edit()
    wait_until(repaired, "the first hand edit repaired", within)
    started = time.monotonic()
    edit()
    outcome: list[tuple[str, float]] = []

    def probe() -> None:
        result = lab.probe("x/c", "svc:y/web", 80)["outcome"]
        outcome.append((result, time.monotonic() - started))

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        wait_until(repaired, "the hand edit repaired", within)
        took = time.monotonic() - started
    finally:
        prober.join()
    return outcome[0][0], outcome[0][1], took


# ---- a long-lived connection from a pod ----

# Run inside a pod: one TCP connection to argv[1]:argv[2]; prints the server's identity line,
# then for each line read on stdin sends it and prints what came back ("echo <line>"), or
# "error ..." once the connection fails.
HELD = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
f = c.makefile("rb")
print(f.readline().decode().strip(), flush=True)
for line in sys.stdin:
    try:
        c.sendall(line.encode())
        got = b""
        while not got.endswith(b"\\n"):
            chunk = c.recv(4096)
            if not chunk:
                raise OSError("closed")
            got += chunk
        print("echo " + got.decode().strip(), flush=True)
    except OSError as exc:
        print(f"error {exc}", flush=True)
"""


class HeldConnection:
    def __init__(self, netns: str, address: str, port: int) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", HELD, address, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.identity = self.proc.stdout.readline().strip()

    def exchange(self, word: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# ---- tests ----


def test_felix_killed_services_keep_working_and_restart_rewrites_nothing(
    nft_lab: SvcLab,
) -> None:
    lab = nft_lab
    netns = lab.node_netns
    held = HeldConnection(lab.pod_netns("x/c"), lab.cluster_ip, 80)
    try:
        assert held.identity.startswith("calico-lab-pod "), held.identity
        assert json.loads(held.identity.split(" ", 1)[1])["pod"] in BACKENDS
        assert held.exchange("before") == "echo before"
        handles = service_rules(netns)
        assert any(c.startswith("cali-svc-") for c in handles), handles

        felix = lab.felix()
        assert process_start_time(felix["pid"]) == felix["start_time"], "recorded PID reused"
        os.kill(felix["pid"], signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: process_start_time(felix["pid"]) != felix["start_time"], "Felix gone")

        # Felix down: the kernel keeps serving what it programmed.
        assert held.exchange("while-down") == "echo while-down"
        served = lab.served("x/c", "svc:y/web", 80, tries=12)
        print(f"cluster IP with Felix down: {served}")
        assert None not in served and set(served) == BACKENDS, served
        node_port = lab.served("@outside", "node:node-1", NODE_PORT, tries=4)
        assert None not in node_port and set(node_port) <= BACKENDS, node_port
        down_for = time.monotonic() - killed

        log = Path(felix["log"])
        log_before = log.stat().st_size  # the restarted Felix appends to the same log
        out = lab.cli("node", "restart", "node-1", "calico-felix").stdout
        assert "was not running" in out, out
        took = wait_until(lambda: lab.felix_status().ready, "restarted Felix ready")
        applies = lab.felix_status().applies
        # Its first reconcile, then two refresh ticks: none of them rewrote anything.
        time.sleep(REFRESH_S * 2.2)
        status = lab.felix_status()
        with log.open("rb") as f:
            f.seek(log_before)
            new_log = f.read().decode(errors="replace")
        print(
            f"Felix down {down_for:.1f}s (16 probes, all connected); restarted, ready after "
            f"{took:.2f}s; applies {applies}, last refresh repaired {status.last_refresh_repairs}"
        )
        assert applies >= 1 and status.in_sync, status
        assert service_rules(netns) == handles, "the restart rewrote service rules"
        assert status.last_refresh_repairs == 0 and "refresh repaired" not in new_log, new_log
        assert held.exchange("after") == "echo after"
        assert set(lab.served("x/c", "svc:y/web", 80, tries=12)) == BACKENDS
        assert lab.probe("@outside", "node:node-1", NODE_PORT)["outcome"] == "connected"
    finally:
        held.close()


def test_nft_drift_repaired_within_refresh(nft_lab: SvcLab) -> None:
    lab = nft_lab
    netns = lab.node_netns
    chain = chain_for(netns, lab.cluster_ip)
    rules_before = chain_text(netns, chain)
    assert all(lab.pod_ip(p) in rules_before for p in BACKENDS), rules_before

    def edit() -> None:  # the map element for the cluster IP and the chain's rules
        nft(netns, f"delete element inet calico cali-svc-ips {{ {lab.cluster_ip} . tcp . 80 }}")
        nft(netns, f"flush chain inet calico {chain}")

    def repaired() -> bool:
        try:
            return (
                chain_for(netns, lab.cluster_ip) == chain
                and chain_text(netns, chain) == rules_before
            )
        except AssertionError:
            return False

    first, probed, took = watch_repair(lab, edit, repaired, within=REFRESH_S + 1.5)
    print(
        f"nft drift: probe right after it {first} (done {probed:.2f}s after the edit); map "
        f"element and chain back {took:.2f}s after the edit (refresh interval {REFRESH_S}s); "
        f"repairs counted {lab.felix_status().last_refresh_repairs}"
    )
    # Broken until repaired: a probe may only connect if the repair came before it ended.
    assert first == "refused" or took <= probed, (first, probed, took)
    assert set(lab.served("x/c", "svc:y/web", 80, tries=12)) == BACKENDS


# Run inside a pod: connect to argv[1]:80 every 20 ms for at most argv[2] seconds; one JSON line per
# attempt: {"t": wall-clock start, "pod": serving pod or null}.
LOOP = """
import json, socket, sys, time
end = time.time() + float(sys.argv[2])
while time.time() < end:
    t = time.time()
    pod = None
    try:
        c = socket.create_connection((sys.argv[1], 80), timeout=1)
        line = c.makefile("rb").readline().decode()
        pod = json.loads(line.split(" ", 1)[1])["pod"]
        c.close()
    except (OSError, ValueError, IndexError):
        pass
    print(json.dumps({"t": t, "pod": pod}), flush=True)
    time.sleep(0.02)
"""


def test_endpoint_churn_under_connection_loop(nft_lab: SvcLab) -> None:
    lab = nft_lab
    netns = lab.node_netns
    chain = chain_for(netns, lab.cluster_ip)
    b_ip = lab.pod_ip("y/b")
    loop = subprocess.Popen(
        ["ip", "netns", "exec", lab.pod_netns("x/c"), sys.executable, "-c", LOOP,
         lab.cluster_ip, "30"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # connections to both backends first
        marked = time.time()
        lab.cli("pod", "ready", "y/b", "false")
        wait_until(lambda: b_ip not in chain_text(netns, chain), "y/b out of the chain", 5)
        removed = time.time()
        print(f"not ready -> out of the service chain in {removed - marked:.2f}s")
        time.sleep(2.0)
        unmarked = time.time()
        lab.cli("pod", "ready", "y/b", "true")
        wait_until(lambda: b_ip in chain_text(netns, chain), "y/b back in the chain", 5)
        restored = time.time()
        print(f"ready -> back in the service chain in {restored - unmarked:.2f}s")
        time.sleep(1.5)  # connections to both backends again
        loop.terminate()  # each attempt's line is flushed as it ends
        out, _ = loop.communicate(timeout=10)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    # A line cut by the SIGTERM (last, unterminated) is not an attempt.
    attempts = [json.loads(line) for line in out.split("\n")[:-1]]
    before = [a["pod"] for a in attempts if a["t"] < marked]
    during = [a["pod"] for a in attempts if removed <= a["t"] < restored - 0.05]
    after = [a["pod"] for a in attempts if a["t"] > restored]
    print(
        f"connection loop: {len(attempts)} attempts; before {len(before)} "
        f"(y/b {before.count('y/b')}), while not ready {len(during)} (y/b "
        f"{during.count('y/b')}, failed {during.count(None)}), after {len(after)} "
        f"(y/b {after.count('y/b')}, failed {after.count(None)})"
    )
    assert None not in before and set(before) == BACKENDS, before
    assert len(during) >= 20 and set(during) == {"y/a"}, during
    assert None not in after and set(after) == BACKENDS, after


# ---- the iptables sample ----


def iptables(netns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "iptables", "-w", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def cluster_ip_line(netns: str, cluster_ip: str) -> list[str]:
    """The `cali-SERVICES` rule (as `-S` prints it, split) for the cluster IP's port 80."""
    for line in iptables(netns, "-t", "nat", "-S", "cali-SERVICES").splitlines():
        if f"-d {cluster_ip}/32" in line and "--dport 80" in line:
            return shlex.split(line)  # the comment is quoted
    raise AssertionError(f"{cluster_ip} not in cali-SERVICES")


def test_iptables_drift_repaired_within_refresh() -> None:
    with _lab("iptables") as lab:
        netns = lab.node_netns
        line = cluster_ip_line(netns, lab.cluster_ip)
        chain = line[line.index("-j") + 1]
        assert chain.startswith("cali-SVC-"), line
        rules_before = iptables(netns, "-t", "nat", "-S", chain)
        assert all(lab.pod_ip(p) in rules_before for p in BACKENDS), rules_before

        def edit() -> None:  # the dispatch line (its spec after `-A cali-SERVICES`), the chain
            iptables(netns, "-t", "nat", "-D", "cali-SERVICES", *line[2:])
            iptables(netns, "-t", "nat", "-F", chain)

        def repaired() -> bool:
            try:
                cluster_ip_line(netns, lab.cluster_ip)
            except AssertionError:
                return False
            return iptables(netns, "-t", "nat", "-S", chain) == rules_before

        first, probed, took = watch_repair(lab, edit, repaired, within=REFRESH_S + 1.5)
        print(
            f"iptables drift: probe right after it {first} (done {probed:.2f}s after the "
            f"edit); line and chain back {took:.2f}s after the edit (refresh interval "
            f"{REFRESH_S}s)"
        )
        assert first != "connected" or took <= probed, (first, probed, took)
        served = lab.served("x/c", "svc:y/web", 80, tries=12)
        assert set(served) == BACKENDS, served
        assert lab.probe("@outside", "node:node-1", NODE_PORT)["outcome"] == "connected"
