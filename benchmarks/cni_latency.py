"""ADD and DEL latency of the `calico` CNI plugin next to the reference `bridge` + `host-local`
plugins, in the same run on the same machine, exec'd as a runtime execs them.

Everything happens inside a node network namespace this script creates (the reference bridge
and the calico veths live there; each pod gets a namespace of its own); calico-ipamd (embedded
datastore in a temp dir) and calico-felix run inside it. Iterations alternate between the two
plugins so machine noise hits both alike. Figures are wall time from exec to exit.

    sudo .venv/bin/python benchmarks/cni_latency.py --iterations 40 [--append-results]

calico-felix is the real one (nftables policy dataplane): an ADD returns once the endpoint's
veth, addresses, routes and policy are programmed. The node namespace gets a dummy uplink with
a default route, as a real host has (Felix detects the MTU from it; proxy ARP needs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cni_client.install import install  # noqa: E402
from lab import netns, objects  # noqa: E402

REFERENCE_DIR = Path("/usr/lib/cni")
RESULTS = REPO / "benchmarks" / "RESULTS.md"
POOL_CIDR = "10.98.0.0/16"
REF_SUBNET = "10.99.0.0/16"
NODE = "bench-node"
WARMUP = 3


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def exec_plugin(
    plugin: Path, command: str, conf: dict[str, Any], cid: str, pod_ns: str, cni_path: str
) -> tuple[float, dict[str, Any]]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": str(netns.netns_path(pod_ns)),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": cni_path,
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}",
    }
    data = json.dumps(conf).encode()
    start = time.perf_counter()
    proc = subprocess.run([str(plugin)], input=data, env=env, capture_output=True, timeout=60)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"{plugin.name} {command} failed: {proc.stdout!r} {proc.stderr!r}")
    return elapsed, (json.loads(proc.stdout) if proc.stdout.strip() else {})


class Processes:
    """Daemons this run started, stopped by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str], log: Path, sock: Path) -> None:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[2]} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


async def seed_datastore(store: dict[str, Any]) -> None:
    async with objects.resource_client(store) as client:
        await client.apply_all(
            [
                objects.ippool("bench-pool", POOL_CIDR),
                objects.node(NODE),
                objects.namespace("bench"),
            ],
            "apply",
        )


@contextlib.contextmanager
def node_namespace(name: str) -> Iterator[None]:
    """Create the node namespace and move this process into it (children inherit it)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    netns.create(name)
    try:
        netns.enter(name)
        try:
            yield
        finally:
            netns.setns_fd(home)
    finally:
        os.close(home)
        netns.delete(name)


def start_felix(work: Path, env: dict[str, str], procs: Processes) -> str:
    sock = work / "felix.sock"
    argv = [sys.executable, "-m", "services.felix.main", "--socket", str(sock)]
    procs.start([*argv, "--nodename", NODE], env, work / "felix.log", sock)
    return str(sock)


def node_uplink(uplink_ns: str) -> None:
    """eth0 with a default route in the node namespace (this process is in it), its far end in
    `uplink_ns`, a namespace of ours: nothing leaves for the real network."""
    netns.create(uplink_ns)
    for args in (
        ["link", "set", "lo", "up"],
        ["link", "add", "eth0", "type", "veth", "peer", "name", "up0", "netns", uplink_ns],
        ["addr", "add", "10.97.0.2/30", "dev", "eth0"],
        ["link", "set", "eth0", "up"],
        ["-n", uplink_ns, "addr", "add", "10.97.0.1/30", "dev", "up0"],
        ["-n", uplink_ns, "link", "set", "up0", "up"],
        ["route", "add", "default", "via", "10.97.0.1"],
    ):
        subprocess.run(["ip", *args], check=True)
    subprocess.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)


def wait_serving(ipam_sock: str, felix_sock: str) -> None:
    """Until both daemons report SERVING, so no measured ADD is told to try again later."""
    from cni_client.cni.daemons import health_problem

    deadline = time.monotonic() + 60
    while True:
        problems = [
            p
            for p in (health_problem("ipamd", ipam_sock, 2), health_problem("felix", felix_sock, 2))
            if p
        ]
        if not problems:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"daemons not serving: {problems}")
        time.sleep(0.1)


def run(iterations: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="cni-bench-"))
    node_ns = f"cnibench{os.getpid()}"
    procs = Processes()
    pods: list[str] = []
    try:
        with node_namespace(node_ns):
            pods.append(f"{node_ns}-up")  # removed with the pods, also on failure
            node_uplink(f"{node_ns}-up")
            store = {"type": "embedded", "path": str(work / "calico.db")}
            asyncio.run(seed_datastore(store))
            env = objects.datastore_env(store)
            ipam_sock = work / "ipam.sock"
            procs.start(
                [
                    sys.executable,
                    "-m",
                    "services.ipam.main",
                    "--socket",
                    str(ipam_sock),
                    "--nodename",
                    NODE,
                ],
                env,
                work / "ipamd.log",
                ipam_sock,
            )
            felix_sock = start_felix(work, env, procs)
            wait_serving(str(ipam_sock), felix_sock)
            bin_dir = work / "bin"
            install(bin_dir, ("calico",))
            calico_conf: dict[str, Any] = {
                "cniVersion": "1.0.0",
                "name": "k8s-pod-network",
                "type": "calico",
                "nodename": NODE,
                "felix_socket": felix_sock,
                "ipam": {"type": "calico-ipam", "socket": str(ipam_sock)},
            }
            ref_conf: dict[str, Any] = {
                "cniVersion": "1.0.0",
                "name": "bench-ref",
                "type": "bridge",
                "bridge": "cnibench0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": REF_SUBNET}]],
                    "dataDir": str(work / "host-local"),
                },
            }
            plugins: dict[str, tuple[Path, dict[str, Any], str]] = {
                "calico": (bin_dir / "calico", calico_conf, str(bin_dir)),
                "bridge+host-local": (REFERENCE_DIR / "bridge", ref_conf, str(REFERENCE_DIR)),
            }
            times: dict[str, dict[str, list[float]]] = {
                name: {"ADD": [], "DEL": []} for name in plugins
            }
            for i in range(WARMUP + iterations):
                order = list(plugins) if i % 2 == 0 else list(reversed(plugins))
                for name in order:
                    plugin, conf, cni_path = plugins[name]
                    cid = f"bench{i:04d}{'c' if name == 'calico' else 'r'}"
                    pod_ns = f"{node_ns}-{cid}"
                    netns.create(pod_ns)
                    pods.append(pod_ns)
                    add_ms, result = exec_plugin(plugin, "ADD", conf, cid, pod_ns, cni_path)
                    del_ms, _ = exec_plugin(
                        plugin, "DEL", {**conf, "prevResult": result}, cid, pod_ns, cni_path
                    )
                    netns.delete(pod_ns)
                    pods.remove(pod_ns)
                    if i >= WARMUP:
                        times[name]["ADD"].append(add_ms)
                        times[name]["DEL"].append(del_ms)
            baseline = python_baseline()
    finally:
        procs.stop_all()
        for pod_ns in pods:
            netns.delete(pod_ns)
        if netns.exists(node_ns):
            netns.delete(node_ns)
        shutil.rmtree(work, ignore_errors=True)
    return report(times, iterations, baseline)


def python_baseline() -> float:
    """Median exec of `python -S -E -c pass`: the floor any Python plugin pays."""
    samples = []
    for _ in range(21):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-S", "-E", "-c", "pass"], check=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def report(times: dict[str, dict[str, list[float]]], iterations: int, baseline: float) -> str:
    ref = times["bridge+host-local"]
    cal = times["calico"]
    lines = [
        f"iterations per figure: {iterations} (after {WARMUP} warm-up), wall ms per exec;",
        f"felix: calico-felix (nftables); `python -S -E -c pass` median: {baseline:.1f} ms",
        "",
        "| plugin | ADD p50 | ADD p99 | DEL p50 | DEL p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, t in times.items():
        lines.append(
            f"| {name} | {statistics.median(t['ADD']):.1f} | {percentile(t['ADD'], 99):.1f} "
            f"| {statistics.median(t['DEL']):.1f} | {percentile(t['DEL'], 99):.1f} |"
        )
    add_ratio = statistics.median(cal["ADD"]) / statistics.median(ref["ADD"])
    del_ratio = statistics.median(cal["DEL"]) / statistics.median(ref["DEL"])
    lines += [
        "",
        f"ADD p50 ratio calico/reference: {add_ratio:.2f} (target <= 3.0: "
        f"{'met' if add_ratio <= 3.0 else 'NOT met'})",
        f"DEL p50 ratio calico/reference: {del_ratio:.2f} (target <= 1.0: "
        f"{'met' if del_ratio <= 1.0 else 'NOT met'})",
    ]
    return "\n".join(lines)


def append_results(text: str, command: str) -> None:
    section = (
        "\n## CNI latency\n\n"
        f"Command: `{command}`\n\n"
        "The `calico` plugin (launcher from cni_client/install.py, `python -SE`, hand-written\n"
        "HTTP/2 + protobuf, no grpc import) against the real calico-ipamd and the real\n"
        "calico-felix (nftables policy dataplane; an ADD returns once the endpoint's veth,\n"
        "addresses, routes and policy are programmed) in a node namespace with an uplink, next\n"
        "to the reference `bridge` + `host-local` (containernetworking-plugins 1.1.1) in the\n"
        "same namespace, alternating; each pod has its own namespace. No OTLP endpoint is set\n"
        "(exporting the plugin's span adds ~1.2 ms p50 per exec against a local collector).\n\n"
        f"```\n{text}\n```\n"
    )
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    marker = "\n## CNI latency\n"
    if marker not in existing:
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section)
        return
    # Replaced where it stands, so the other sections keep their order.
    head, _, rest = existing.partition(marker)
    nxt = rest.find("\n## ")
    tail = rest[nxt:] if nxt >= 0 else ""
    RESULTS.write_text(head.rstrip("\n") + "\n" + section + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument(
        "--append-results",
        action="store_true",
        help="write the figures into benchmarks/RESULTS.md (## CNI latency)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("cni_latency: needs root (network namespaces)", file=sys.stderr)
        return 2
    text = run(args.iterations)
    print(text)
    if args.append_results:
        append_results(
            text, f".venv/bin/python benchmarks/cni_latency.py --iterations {args.iterations}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
