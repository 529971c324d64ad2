"""docker-compose.yml under podman-compose, for tests/compose: up with the images from
scripts/build-images.sh, pods as host network namespaces plumbed by the `calico` CNI plugin
(installed by the calico-cni image) run in a node container's namespace, and a teardown that
removes what podman-compose leaves behind (the network's bridge) and checks nothing is left.

Every podman-compose call is wrapped in `timeout` (`up -d` can hang when a dependency exits:
../shared/ENVIRONMENT.md). The project name is unique per run; the `calico` network's subnet
(172.30.77.0/24) is fixed by the compose file, so two clusters cannot run at once.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni_client.health_probe import probe
from tests.images import imagekit

REPO = imagekit.REPO
COMPOSE_FILE = REPO / "docker-compose.yml"
SUBNET_PREFIX = "172.30.77."
OTLP_ENDPOINT = "http://172.30.77.3:4317"
NODES = {"node-1": "172.30.77.11", "node-2": "172.30.77.12"}
DAEMON_SOCKETS = ("ipam.sock", "felix.sock", "bgpd.sock")
UP_TIMEOUT_S = 300
DOWN_TIMEOUT_S = 180
BUSYBOX = "/bin/busybox"


def podman_compose() -> str | None:
    venv = Path(sys.executable).parent / "podman-compose"
    return str(venv) if venv.exists() else shutil.which("podman-compose")


def missing_prerequisite() -> str:
    problem = imagekit.missing_podman()
    if problem:
        return problem
    if podman_compose() is None:
        return "podman-compose not installed (pip install podman-compose; it is a dev dependency)"
    if not Path(BUSYBOX).exists():
        return "busybox-static not installed (pods ping with it)"
    if shutil.which("nsenter") is None or shutil.which("ip") is None:
        return "nsenter / ip (util-linux, iproute2) not installed"
    return ""


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines()}


def bridge_ports(bridge: str) -> set[str]:
    """The host-side veths of the containers on a bridge."""
    out = subprocess.run(
        ["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True, check=True
    )
    return {line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines()}


def host_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@dataclass
class Pod:
    name: str
    node: str
    netns: str
    container_id: str
    ip: str = ""


@dataclass
class Cluster:
    project: str
    run_dir: Path
    cni_bin: Path
    env: dict[str, str]
    pods: dict[str, Pod] = field(default_factory=dict)
    bridge: str = ""  # the network's host bridge, known once it is up
    # The host's namespaces before `up`: after `down` none of ours (cpc-*) may be left.
    netns_before: set[str] = field(default_factory=set)

    def leftovers(self, ports: set[str]) -> list[str]:
        """What `down` should have removed and is still there: the project's containers and
        network, the network's bridge and the containers' host veths (`ports`, taken while up),
        pod namespaces. Other tests' links and namespaces (running in parallel) are not ours."""
        left = [f"container {c}" for c in self.project_containers()]
        networks = self.podman("network", "ls", "--format", "{{.Name}}").split()
        left += [f"network {n}" for n in networks if n.startswith(self.project)]
        links = host_links()
        left += [f"link {n}" for n in ({self.bridge} | ports) & links]
        left += [f"netns {n}" for n in host_netns() - self.netns_before if n.startswith("cpc-")]
        return left

    # --- podman and podman-compose ------------------------------------------------------------

    def compose(
        self, *args: str, timeout: float = UP_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        argv = ["timeout", str(int(timeout)), str(podman_compose()), "-p", self.project]
        argv += ["-f", str(COMPOSE_FILE), *args]
        return subprocess.run(
            argv, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout + 30
        )

    def podman(self, *args: str, timeout: float = 120, stdin: str | None = None) -> str:
        out = subprocess.run(
            ["podman", *args], env=self.env, input=stdin, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def project_containers(self) -> list[str]:
        out = self.podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}",
            "--format", "{{.Names}}",
        )  # fmt: skip
        return out.split()

    def logs(self, service: str, tail: int = 30) -> str:
        out = subprocess.run(
            ["podman", "logs", "--tail", str(tail), self.container(service)],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = (out.stdout + out.stderr).splitlines()
        return "\n".join(line for line in lines if "systemd" not in line)

    def calicoctl(self, *args: str, stdin: str | None = None) -> str:
        """calicoctl from the Typha container (every image has it), against the cluster's etcd."""
        return self.podman("exec", "-i", self.container("typha"), "calicoctl", *args, stdin=stdin)

    def apply(self, objects: list[dict[str, Any]]) -> None:
        self.calicoctl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in objects))

    # --- the nodes ------------------------------------------------------------------------------

    def socket(self, node: str, name: str) -> Path:
        return self.run_dir / node / name

    def node_pid(self, node: str) -> int:
        return int(self.podman("inspect", "--format", "{{.State.Pid}}", self.container(node)))

    def wait_healthy(
        self, node: str, sockets: tuple[str, ...] = DAEMON_SOCKETS, timeout_s: float = 90
    ) -> None:
        deadline = time.monotonic() + timeout_s
        problems = ["not checked"]
        while time.monotonic() < deadline:
            problems = [p for s in sockets if (p := probe(str(self.socket(node, s)), timeout_s=2))]
            if not problems:
                return
            time.sleep(0.3)
        raise AssertionError(f"{node} not healthy: {problems}")

    def bgp_established(self, node: str) -> set[str]:
        """Peers whose BGP session is Established, per `calicoctl node status`."""
        out = subprocess.run(
            ["podman", "exec", self.container(f"bgpd-{node[-1]}"), "calicoctl", "node", "status"],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return {
            line.split("|")[1].strip()
            for line in out.stdout.splitlines()
            if "Established" in line and line.startswith("|")
        }

    def wait_bgp(self, timeout_s: float = 90) -> float:
        start = time.monotonic()
        want = {n: {ip for other, ip in NODES.items() if other != n} for n in NODES}
        while time.monotonic() - start < timeout_s:
            if all(self.bgp_established(n) >= want[n] for n in NODES):
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(
            f"BGP not established: { {n: self.bgp_established(n) for n in NODES} }"
        )

    # --- pods ------------------------------------------------------------------------------------

    def netconf(self, node: str) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "calico",
            "nodename": node,
            "felix_socket": str(self.socket(node, "felix.sock")),
            "ipam": {"type": "calico-ipam", "socket": str(self.socket(node, "ipam.sock"))},
        }

    def cni(
        self, command: str, pod: Pod, traceparent: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """The installed plugin, exec'd in the node container's namespace as a runtime there
        would; its spans go to the cluster's OTLP receiver."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_NETNS": f"/run/netns/{pod.netns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.cni_bin),
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME={pod.name}",
            "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT,
        }
        if traceparent:
            env["TRACEPARENT"] = traceparent
        argv = [
            "nsenter",
            f"--net=/proc/{self.node_pid(pod.node)}/ns/net",
            str(self.cni_bin / "calico"),
        ]
        return subprocess.run(
            argv, input=json.dumps(self.netconf(pod.node)), env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def add_pod(self, name: str, node: str, labels: dict[str, str], traceparent: str = "") -> Pod:
        pod = Pod(name, node, f"cpc-{self.project[-6:]}-{name}", secrets.token_hex(16))
        self.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": "ns1", "labels": labels},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "none"}]},
                }
            ]
        )
        subprocess.run(["ip", "netns", "add", pod.netns], check=True)
        self.pods[name] = pod  # recorded before ADD: teardown always finds it
        deadline = time.monotonic() + 60
        while True:
            out = self.cni("ADD", pod, traceparent)
            # 11 = try again later (Felix not in sync yet)
            if out.returncode == 0 or time.monotonic() > deadline or '"code": 11' not in out.stdout:
                break
            time.sleep(0.5)
        assert out.returncode == 0, (
            f"ADD {name}: {out.stdout}{out.stderr}\n{self.logs('felix-' + node[-1])}"
        )
        pod.ip = json.loads(out.stdout)["ips"][0]["address"].split("/")[0]
        return pod

    def ping(self, src: str, dst: str, count: int = 1) -> bool:
        out = subprocess.run(
            ["ip", "netns", "exec", self.pods[src].netns, BUSYBOX, "ping", "-c", str(count),
             "-W", "1", self.pods[dst].ip],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.returncode == 0

    def wait_ping(self, src: str, dst: str, want: bool, timeout_s: float = 20) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.ping(src, dst) == want:
                return time.monotonic() - start
            time.sleep(0.3)
        verdict = "connect" if want else "be blocked"
        raise AssertionError(f"{src} -> {dst} did not {verdict} within {timeout_s} s")

    def spans(self) -> list[dict[str, Any]]:
        path = self.run_dir / "traces" / "spans.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # --- teardown --------------------------------------------------------------------------------

    def remove_pods(self) -> list[str]:
        problems = []
        for pod in list(self.pods.values()):
            try:
                out = self.cni("DEL", pod)
                if out.returncode != 0:
                    problems.append(f"DEL {pod.name}: {out.stdout}{out.stderr}")
            except Exception as exc:  # the node may be gone already
                problems.append(f"DEL {pod.name}: {exc}")
            subprocess.run(["ip", "netns", "del", pod.netns], capture_output=True)
            del self.pods[pod.name]
        return problems

    def down(self, fallback: bool = True) -> subprocess.CompletedProcess[str]:
        """podman-compose down; with `fallback`, then remove by the project's label whatever
        it left (a hung or failed `down`)."""
        out = self.compose("down", "-t", "5", timeout=DOWN_TIMEOUT_S)
        if fallback:
            for name in self.project_containers():
                subprocess.run(
                    ["podman", "rm", "-f", "-t", "0", name], env=self.env, capture_output=True
                )
            subprocess.run(
                ["podman", "network", "rm", "-f", f"{self.project}_calico"],
                env=self.env, capture_output=True,
            )  # fmt: skip
        # The CNI bridge plugin leaves its bridge behind when the network goes.
        if self.bridge and self.bridge in host_links():
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        return out


def new_cluster(work: Path) -> Cluster:
    """Directories and settings for one run (nothing started yet)."""
    project = f"cpc{secrets.token_hex(3)}"
    run_dir = Path(tempfile.mkdtemp(prefix="cpc-"))  # short: Unix socket paths
    try:
        for sub in ("node-1", "node-2", "traces"):
            (run_dir / sub).mkdir()
            os.chown(run_dir / sub, 999, 999)  # the images' calico user and group
            (run_dir / sub).chmod(0o2775)
        # etcd's mutual TLS: throw-away certificates, as the compose file's header says.
        subprocess.run(
            [str(REPO / "compose" / "make-etcd-certs.sh"), str(run_dir / "etcd-certs")],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    conf = imagekit.containers_conf(work)
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "CALICO_COMPOSE_RUN": str(run_dir)}
    return Cluster(
        project,
        run_dir,
        work / "cni-bin",
        env,
        netns_before=host_netns(),
    )


def ensure_shared_netns_dir() -> None:
    """`ip netns add` makes /run/netns a shared mount; Felix's containers mount it rslave so
    they see the pods' namespaces made after they started."""
    probe_name = f"cpc-probe-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", probe_name], check=True)
    subprocess.run(["ip", "netns", "del", probe_name], check=True)


def network_bridge(cluster: Cluster) -> str:
    out = cluster.podman("network", "inspect", f"{cluster.project}_calico")
    info = json.loads(out)[0]
    name: str = info.get("network_interface") or ""
    if not name:  # CNI backend, podman 4.3: the bridge plugin's config
        for plugin in info.get("plugins", []):
            name = plugin.get("bridge", name)
    return name
