"""Policy apply: one change to the kernel, full resync vs a raw load, connection rate.

    .venv/bin/python benchmarks/policy_apply.py [--changes 200]
        [--dataplane nftables|iptables|iptables-legacy]

Datastore (embedded SQLite in a temp dir): 100 local endpoints, 10,000 remote endpoints in
10 namespaces, 1,000 Calico NetworkPolicies, all active (each selects 2 local endpoints and
has selector, port-range and CIDR rules; 200 shared selector IP sets of ~50 remote members).
Felix's engine (DatastoreSyncer -> calc graph -> dataplane) programs a throw-away node
namespace; all kernel work happens inside namespaces this script creates and deletes.

(a) one policy change: a policy's port is rewritten in the datastore; time from the put until
    the engine's apply containing it has returned (the rules are in the kernel).
(b) full resync: the ruleset rebuilt from the intended state into an empty kernel (render +
    one transaction), beside the raw load of the identical ruleset from a file
    (``nft -f`` / ``iptables-restore`` + ``ipset restore``) in the same run; plus the periodic
    refresh with everything in place (read back + compare, nothing written).
(c) new TCP connections/s from a client pod to a server pod through the node namespace, with
    100 policies selecting the server (99 it must traverse without a match, the last one
    allows), beside the same with no policy at all; alternated, medians of 3 rounds each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libcalico.datastore.embedded import EmbeddedDatastore
from libcalico.datastore.keys import resource_key
from services.felix.policy.agent import start_policy_engine
from services.felix.policy.engine import PolicyEngine
from tests.felix_policy.netlab import NetLab, sh

NODE = "bench-node"
NAMESPACES = 10
LOCAL = 100
REMOTE = 10_000
POLICIES = 1_000


def wep(i: int, node: str, ip: str, labels: dict[str, str]) -> tuple[str, dict[str, Any]]:
    ns = f"ns{i % NAMESPACES}"
    name = f"{node}-k8s-pod{i}-eth0"
    obj = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "node": node,
            "pod": f"pod{i}",
            "interfaceName": f"calib{i:010d}"[:15] if node == NODE else f"calir{i:010d}"[:15],
            "ipNetworks": [f"{ip}/32"],
            "profiles": [f"kns.{ns}"],
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        },
    }
    return resource_key("projectcalico.org", "workloadendpoints", name, ns), obj


def policy(i: int, port: int = 80) -> tuple[str, dict[str, Any]]:
    ns = f"ns{i % NAMESPACES}"
    obj = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"pol{i}", "namespace": ns},
        "spec": {
            "order": i,
            "selector": f"app == 'app{i % 50}'",
            "types": ["Ingress", "Egress"],
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"selector": f"role == 'r{i % 200}'"},
                    "destination": {"ports": [port, "8000:8100"]},
                },
                {
                    "action": "Deny",
                    "protocol": "UDP",
                    "source": {"nets": [f"172.{i % 200}.0.0/16"]},
                },
            ],
            "egress": [
                {
                    "action": "Allow",
                    "destination": {"nets": ["10.0.0.0/8"], "notNets": [f"10.{i % 200}.0.0/16"]},
                },
            ],
        },
    }
    return resource_key("projectcalico.org", "networkpolicies", f"pol{i}", ns), obj


def cluster() -> dict[str, dict[str, Any]]:
    objs: dict[str, dict[str, Any]] = {}
    for n in range(NAMESPACES):
        key = resource_key("core", "namespaces", f"ns{n}")
        objs[key] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": f"ns{n}", "labels": {"team": f"t{n}"}},
        }
    for i in range(LOCAL):
        key, obj = wep(i, NODE, f"10.200.{i // 250}.{i % 250 + 1}", {"app": f"app{i % 50}"})
        objs[key] = obj
    for i in range(REMOTE):
        ip = f"10.{100 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"
        key, obj = wep(
            i + LOCAL, f"other-{i % 50}", ip, {"app": f"app{i % 100}", "role": f"r{i % 200}"}
        )
        objs[key] = obj
    for i in range(POLICIES):
        key, obj = policy(i)
        objs[key] = obj
    return objs


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(store: EmbeddedDatastore, objs: dict[str, dict[str, Any]]) -> None:
    for key, obj in objs.items():
        await store.put(key, json.dumps(obj).encode())


async def wait_applied(engine: PolicyEngine, after: int, limit_s: float = 10.0) -> None:
    deadline = time.perf_counter() + limit_s
    while engine.applies <= after:
        if time.perf_counter() > deadline:
            raise TimeoutError("engine did not apply")
        await asyncio.sleep(0.0005)


async def bench_change(engine: PolicyEngine, store: EmbeddedDatastore, n: int) -> list[float]:
    times = []
    for k in range(n):
        i = (k * 37) % POLICIES
        key, obj = policy(i, port=1000 + k)
        before = engine.applies
        started = time.perf_counter()
        await store.put(key, json.dumps(obj).encode())
        await wait_applied(engine, before)
        times.append((time.perf_counter() - started) * 1000)
    return times


def timed(argv: list[str], stdin: str | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True)
    return (time.perf_counter() - started) * 1000


async def bench_resync(engine: PolicyEngine, lab: NetLab, kind: str) -> dict[str, float]:
    ns = ["ip", "netns", "exec", lab.node_ns]
    out: dict[str, float] = {}
    if kind == "nftables":
        dump = lab.nft("list", "table", "inet", "calico")
        raw = []
        ours = []
        for _ in range(3):
            lab.nft("delete", "table", "inet", "calico")
            raw.append(timed([*ns, "nft", "-f", "-"], "table inet calico {}\n" + dump))
            lab.nft("delete", "table", "inet", "calico")
            started = time.perf_counter()
            await engine.dataplane.reconcile(engine.graph.state)
            ours.append((time.perf_counter() - started) * 1000)
        out["raw load"] = statistics.median(raw)
        out["full resync"] = statistics.median(ours)
        out["rules"] = float(sum(1 for line in dump.splitlines() if 'comment "cali:' in line))
    else:
        ipt = "iptables-legacy" if kind == "iptables-legacy" else "iptables"
        save = sh(*ns, f"{ipt}-save", "-t", "filter")
        ipsets = sh(*ns, "ipset", "save")
        raw, ours = [], []
        for _ in range(3):
            clear_iptables(lab, ipt)
            started = time.perf_counter()
            # Blocking on purpose: the raw load is timed with nothing else running.
            subprocess.run([*ns, "ipset", "restore"], input=ipsets, text=True, check=True)  # noqa: ASYNC221
            subprocess.run([*ns, f"{ipt}-restore"], input=save, text=True, check=True)  # noqa: ASYNC221
            raw.append((time.perf_counter() - started) * 1000)
            clear_iptables(lab, ipt)
            started = time.perf_counter()
            await engine.dataplane.reconcile(engine.graph.state)
            ours.append((time.perf_counter() - started) * 1000)
        out["raw load"] = statistics.median(raw)
        out["full resync"] = statistics.median(ours)
        out["rules"] = float(sum(1 for line in save.splitlines() if line.startswith("-A cali")))
    started = time.perf_counter()
    repairs = await engine.dataplane.reconcile(engine.graph.state)
    out["refresh (no drift)"] = (time.perf_counter() - started) * 1000
    out["refresh repairs"] = float(repairs)
    return out


def clear_iptables(lab: NetLab, ipt: str = "iptables") -> None:
    ns = ["ip", "netns", "exec", lab.node_ns]
    for flag in ("-F", "-X"):
        sh(*ns, ipt, flag)
    sh(*ns, "ipset", "destroy")


# -- (c) connection rate ------------------------------------------------------------------


def conn_rate(lab: NetLab, client: str, server_ip: str, seconds: float) -> float:
    worker = lab.pods[client].worker
    assert worker is not None

    def loop() -> tuple[int, int]:
        count = failed = 0
        deadline = time.perf_counter() + seconds
        linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
        while time.perf_counter() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)  # RST: no TIME_WAIT
                sock.settimeout(2.0)
                try:
                    sock.connect((server_ip, 80))
                    count += 1
                except OSError:
                    failed += 1
        return count, failed

    count, failed = worker.call(loop)
    if failed:
        print(f"  ({failed} connection attempts failed in a {seconds:.0f} s round)")
    return count / seconds


def serve_forever(port: int) -> None:
    """``--serve``: accept and close TCP connections (run inside the server pod's netns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(4096)
        while True:
            conn, _ = sock.accept()
            conn.close()


def connect_loop(ip: str, port: int, seconds: float) -> None:
    """``--connect``: new connections for ``seconds``; prints connections per second."""
    linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.settimeout(2.0)
            sock.connect((ip, port))
            count += 1
    print(count / seconds)


def process_rate(lab: NetLab, client: str, ip: str, port: int, seconds: float) -> float:
    """Connection rate measured by a separate process in the client pod, so the engine in
    this process (its threads, its garbage collector) does not compete with the client."""
    out = sh(
        "ip",
        "netns",
        "exec",
        lab.pods[client].netns,
        sys.executable,
        __file__,
        "--connect",
        ip,
        "--port",
        str(port),
        "--seconds",
        str(seconds),
    )
    return float(out.strip())


def paired_rates(lab: NetLab, client: str, ip_a: str, ip_b: str, seconds: float) -> list[float]:
    """Connections alternating between two servers, one at a time; per target, connections
    per second of time spent on it. Alternating per connection makes the two figures see the
    same machine noise (other processes share these 2 cores)."""
    worker = lab.pods[client].worker
    assert worker is not None

    def loop() -> list[float]:
        spent = [0.0, 0.0]
        count = [0, 0]
        linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
        deadline = time.perf_counter() + seconds
        clock = time.perf_counter
        while clock() < deadline:
            for side, ip in ((0, ip_a), (1, ip_b)):
                started = clock()
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    sock.settimeout(2.0)
                    sock.connect((ip, 80))
                spent[side] += clock() - started
                count[side] += 1
        return [count[i] / spent[i] for i in (0, 1)]

    return worker.call(loop)


def server_policies(allow_last: bool = True) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(100):
        last = i == 99
        rules = (
            [{"action": "Allow", "source": {"selector": "role == 'client'"}}]
            if last
            else [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"selector": f"role == 'r{i}'"},
                    "destination": {"ports": [80]},
                },
                {"action": "Deny", "protocol": "UDP", "source": {"nets": ["192.168.0.0/16"]}},
            ]
        )
        name = f"srv{i}"
        obj = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name},
            "spec": {
                "order": 5000 + i,
                "selector": "app == 'server'",
                "types": ["Ingress"],
                "ingress": rules,
            },
        }
        out.append((resource_key("projectcalico.org", "globalnetworkpolicies", name), obj))
    return out


async def settle(engine: PolicyEngine, active: int) -> None:
    """Wait until the engine has consumed the writes (``active`` policies) and applied them."""
    deadline = time.perf_counter() + 30
    while engine.graph.active_policy_count != active and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    await engine.apply_now()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--dataplane", default="nftables")
    parser.add_argument("--rate-seconds", type=float, default=2.0)
    parser.add_argument("--interleaved-rounds", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--connect", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8090, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_forever(args.port)
        return
    if args.connect:
        connect_loop(args.connect, args.port, args.seconds)
        return

    lab = NetLab(ports=[("TCP", 80)])
    tmp = tempfile.TemporaryDirectory()
    engine: PolicyEngine | None = None
    servers: list[subprocess.Popen[bytes]] = []
    try:
        client = lab.add_pod("bench/client", "10.201.0.1", "calic0client000")
        server = lab.add_pod("bench/server", "10.201.0.2", "calic0server000")
        plain = lab.add_pod("bench/plain", "10.201.0.3", "calic0plain0000")
        objs = cluster()
        for name, pod, labels in (
            ("client", client, {"role": "client"}),
            ("server", server, {"app": "server"}),
            ("plain", plain, {"app": "plain"}),
        ):
            key, obj = wep(0, NODE, pod.ip, labels)
            obj["metadata"]["name"] = f"{NODE}-k8s-{name}-eth0"
            obj["spec"]["interfaceName"] = pod.iface
            obj["spec"]["pod"] = name
            objs[key.rsplit("/", 1)[0] + "/" + obj["metadata"]["name"]] = obj
        store = EmbeddedDatastore(str(Path(tmp.name) / "calico.db"))
        started = time.perf_counter()
        await load(store, objs)
        load_s = time.perf_counter() - started

        started = time.perf_counter()
        engine = await start_policy_engine(store, NODE, args.dataplane, lab.node_path, 3600)
        while not engine.ready:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        startup_s = time.perf_counter() - started
        status = engine.status()

        changes = await bench_change(engine, store, args.changes)
        resync = await bench_resync(engine, lab, args.dataplane)

        # (c): with 100 policies on the server (plus the 1,000 others), then none at all.
        for key, obj in server_policies():
            await store.put(key, json.dumps(obj).encode())
        await settle(engine, POLICIES + 100)
        # Interleaved: the same client, alternately to the server behind 100 policies and to
        # a server no policy selects; short rounds so machine noise hits both alike.
        ratios = []
        for _ in range(args.interleaved_rounds):
            through, direct = paired_rates(lab, "bench/client", server.ip, plain.ip, 1.0)
            ratios.append(through / direct)
        interleaved = (statistics.median(ratios), through, direct, ratios)
        # Rounds: the whole datastore toggled (every policy deleted, then restored); the load
        # runs in separate processes (a server per pod, a client) on port 8090.
        servers += [
            subprocess.Popen(  # noqa: ASYNC220 (long-lived servers; nothing waits on them)
                [
                    "ip",
                    "netns",
                    "exec",
                    pod.netns,
                    sys.executable,
                    __file__,
                    "--serve",
                    "--port",
                    "8090",
                ]
            )
            for pod in (server, plain)
        ]
        await asyncio.sleep(1.0)
        with_policy, without = [], []
        plain_with: list[float] = []
        plain_without: list[float] = []
        policy_keys = [k for k in objs if "policies" in k] + [k for k, _ in server_policies()]
        for _ in range(3):
            with_policy.append(
                process_rate(lab, "bench/client", server.ip, 8090, args.rate_seconds)
            )
            plain_with.append(process_rate(lab, "bench/client", plain.ip, 8090, args.rate_seconds))
            for key in policy_keys:
                await store.delete(key)
            await settle(engine, 0)
            without.append(process_rate(lab, "bench/client", server.ip, 8090, args.rate_seconds))
            plain_without.append(
                process_rate(lab, "bench/client", plain.ip, 8090, args.rate_seconds)
            )
            for key in policy_keys:
                obj = objs.get(key) or dict(server_policies())[key]
                await store.put(key, json.dumps(obj).encode())
            await settle(engine, POLICIES + 100)
        print(
            f"plain server: with policies {[round(x) for x in plain_with]}, "
            f"without {[round(x) for x in plain_without]}"
        )
        print_report(
            args, load_s, startup_s, status, changes, resync, with_policy, without, interleaved
        )
    finally:
        for proc in servers:
            proc.kill()  # by PID: `ip netns exec` execs the server in place
            proc.wait()
        if engine is not None:
            await engine.stop()
        lab.close()
        tmp.cleanup()


def print_report(
    args: Any,
    load_s: float,
    startup_s: float,
    status: Any,
    changes: list[float],
    resync: dict[str, float],
    with_policy: list[float],
    without: list[float],
    interleaved: tuple[float, float, float, list[float]],
) -> None:
    p50, p99 = statistics.median(changes), pct(changes, 0.99)
    ratio = resync["full resync"] / resync["raw load"]
    rate_ratio = statistics.median(with_policy) / statistics.median(without)
    print(
        f"dataplane {args.dataplane}; datastore: {LOCAL} local + {REMOTE} remote endpoints, "
        f"{POLICIES} policies ({status.active_policies} active, {status.ipsets} IP sets); "
        f"datastore load {load_s:.1f} s; engine start to ready {startup_s:.2f} s"
    )
    print()
    print("| figure | value | target |")
    print("|---|---:|---|")
    print(f"| (a) one policy change -> kernel, p50 | {p50:.1f} ms | |")
    print(
        f"| (a) one policy change -> kernel, p99 | {pct(changes, 0.99):.1f} ms | <= 100 ms: "
        f"{'met' if p99 <= 100 else 'NOT met'} |"
    )
    print(
        f"| (b) full resync into an empty kernel ({resync['rules']:.0f} rules) | "
        f"{resync['full resync']:.0f} ms | |"
    )
    print(f"| (b) raw load of the identical ruleset from a file | {resync['raw load']:.0f} ms | |")
    print(
        f"| (b) ratio resync / raw | {ratio:.2f} | <= 2.0: {'met' if ratio <= 2 else 'NOT met'} |"
    )
    print(
        f"| (b) periodic refresh, nothing to repair ({resync['refresh repairs']:.0f} repairs) | "
        f"{resync['refresh (no drift)']:.0f} ms | |"
    )
    inter = interleaved[0]
    print(
        f"| (c) new connections/s to the server behind 100 policies (alternating) | "
        f"{interleaved[1]:.0f} | |"
    )
    print(
        f"| (c) new connections/s to a server no policy selects (alternating) | "
        f"{interleaved[2]:.0f} | |"
    )
    print(
        f"| (c) ratio, in-process alternating (Python overhead masks the kernel cost) | "
        f"{inter:.2f} | not the target figure |"
    )
    print(
        f"| (c) rounds: 1,100 policies in force, new connections/s | "
        f"{statistics.median(with_policy):.0f} | |"
    )
    print(
        f"| (c) rounds: every policy deleted, new connections/s | "
        f"{statistics.median(without):.0f} | |"
    )
    print(
        f"| (c) rounds ratio | {rate_ratio:.2f} | >= 0.90: "
        f"{'met' if rate_ratio >= 0.9 else 'NOT met'} |"
    )
    print()
    print(f"(c) interleaved ratios: {[round(x, 2) for x in interleaved[3]]}")
    print(
        f"(a) {len(changes)} changes; (c) rounds with policy {[round(x) for x in with_policy]}, "
        f"without {[round(x) for x in without]}"
    )


if __name__ == "__main__":
    asyncio.run(main())
