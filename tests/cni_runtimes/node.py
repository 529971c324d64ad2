"""A Calico node for the runtime tests: a network namespace of its own with the real
calico-ipamd and calico-felix running inside it, an embedded datastore holding a pool, the
Node and the `default` Namespace, the plugin launchers in a CNI bin dir and a conflist in a
config dir. Pod namespaces made here are removed with the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cni_client.cni.daemons import FELIX, IPAM, health_problem
from cni_client.install import install
from lab import objects

REPO = Path(__file__).resolve().parents[2]
FELIX_MAIN = REPO / "services" / "felix" / "main.py"
NETNS_DIR = Path("/var/run/netns")
START_TIMEOUT_S = 60.0
UPLINK_NODE, UPLINK_PEER = "192.168.231.2", "192.168.231.1"


def missing_prerequisite() -> str:
    """Why the real node cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if not FELIX_MAIN.exists():
        return f"calico-felix is not there yet ({FELIX_MAIN.relative_to(REPO)} missing)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return ""


def run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def in_netns(netns: str, *cmd: str) -> list[str]:
    """`cmd` in a namespace made with `ip netns add` (nsenter keeps /sys as it is)."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", *cmd]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        # Only the process we started, by its PID.
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


@dataclass
class CalicoNode:
    tag: str
    work: Path
    name: str = "cpt-rt-node"
    pool: str = "10.231.0.0/24"
    # podman 4.3's libcni reads results up to 1.0.0; cnitool's is newer (STATUS, GC: 1.1.0).
    cni_version: str = "1.1.0"
    # The uplink's MTU: Felix gives pods its default-route interface's MTU (no overlay here).
    uplink_mtu: int = 1500
    netns: str = ""
    network: str = ""
    pods: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.netns = f"cpt-rt-node-{self.tag}"
        self.network = f"cpt-rt-{self.tag}"
        self.store = {"type": "embedded", "path": str(self.work / "calico.db")}
        self.bin_dir = self.work / "bin"
        self.conf_dir = self.work / "net.d"
        self.ipam_socket = str(self.work / "ipam.sock")
        self.felix_socket = str(self.work / "felix.sock")

    # -- set-up -----------------------------------------------------------------------------

    def start(self) -> None:
        run("ip", "netns", "add", self.netns)
        self._uplink()
        asyncio.run(self._seed())
        install(self.bin_dir)
        self.conf_dir.mkdir()
        self.conflist_path.write_text(json.dumps(self.conflist()))
        node_args = ["--nodename", self.name]
        self._spawn(IPAM, ["services.ipam.main", "--socket", self.ipam_socket, *node_args])
        self._spawn(FELIX, ["services.felix.main", "--socket", self.felix_socket, *node_args])
        self._wait_serving()

    def _uplink(self) -> None:
        """What a real host has and Calico relies on: forwarding on, and an uplink with a
        default route, without which the host's proxy ARP does not answer for a pod's gateway
        169.254.1.1 (no route to it out of another interface). The uplink's far end is a
        namespace of ours, so nothing leaves for the real network."""
        uplink = f"cpt-rt-up-{self.tag}"
        run("ip", "netns", "add", uplink)
        self.pods.append(uplink)  # removed with the pods
        node, up = ["ip", "-n", self.netns], ["ip", "-n", uplink]
        run(*node, "link", "add", "eth0", "type", "veth", "peer", "name", "up0", "netns", uplink)
        run(*node, "addr", "add", f"{UPLINK_NODE}/30", "dev", "eth0")
        run(*up, "addr", "add", f"{UPLINK_PEER}/30", "dev", "up0")
        for cmd in (node, up):
            run(*cmd, "link", "set", "lo", "up")
        run(*node, "link", "set", "eth0", "mtu", str(self.uplink_mtu), "up")
        run(*up, "link", "set", "up0", "up")
        run(*node, "route", "add", "default", "via", UPLINK_PEER)
        run(*in_netns(self.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"))

    async def _seed(self) -> None:
        async with objects.resource_client(self.store) as client:
            await client.apply_all(
                [
                    objects.ippool("cpt-rt-pool", self.pool),
                    objects.node(self.name),
                    objects.namespace("default"),
                ],
                "apply",
            )

    def _spawn(self, name: str, module_args: list[str]) -> None:
        log = self.work / f"{name}.log"
        env = {**os.environ, **objects.datastore_env(self.store), "PYTHONPATH": str(REPO)}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                in_netns(self.netns, sys.executable, "-m", *module_args),
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(Process(name, popen, log))

    def _wait_serving(self) -> None:
        """Until both daemons answer their health service with SERVING (what the plugin's
        STATUS asks), so the first ADD is not told to try again later."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            problems = [
                p
                for p in (
                    health_problem(IPAM, self.ipam_socket, 2),
                    health_problem(FELIX, self.felix_socket, 2),
                )
                if p
            ]
            if not problems:
                return
            dead = [p for p in self.processes if p.popen.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in self.processes)
                raise RuntimeError(f"daemons not serving: {problems}\n{logs}")
            time.sleep(0.1)

    def conflist(
        self, network: str = "", cni_version: str = "", **plugin: object
    ) -> dict[str, object]:
        """The node's network (or another on the same daemons, with extra plugin keys)."""
        return {
            "cniVersion": cni_version or self.cni_version,
            "name": network or self.network,
            "plugins": [
                {
                    "type": "calico",
                    "nodename": self.name,
                    "felix_socket": self.felix_socket,
                    "ipam": {"type": "calico-ipam", "socket": self.ipam_socket},
                    **plugin,
                }
            ],
        }

    def add_network(self, suffix: str, cni_version: str = "", **plugin: object) -> str:
        """Another conflist next to the node's (cnitool picks one by name); its name."""
        network = f"{self.network}-{suffix}"
        conflist = self.conflist(network, cni_version, **plugin)
        (self.conf_dir / f"{network}.conflist").write_text(json.dumps(conflist))
        return network

    @property
    def conflist_path(self) -> Path:
        return self.conf_dir / f"{self.network}.conflist"

    def add_pod_netns(self, role: str) -> str:
        name = f"cpt-rt-{role}-{self.tag}"
        run("ip", "netns", "add", name)
        self.pods.append(name)
        return name

    # -- inspection -------------------------------------------------------------------------

    def host_veths(self) -> list[str]:
        out = run(*in_netns(self.netns, "ip", "-o", "link", "show")).stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
        return [n for n in names if n.startswith("cali")]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.tail()}" for p in self.processes)

    # -- tear-down --------------------------------------------------------------------------

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for netns in [*self.pods, self.netns]:
            run("ip", "netns", "del", netns, check=False)


@contextlib.contextmanager
def calico_node(cni_version: str = "1.1.0", uplink_mtu: int = 1500) -> Iterator[CalicoNode]:
    work = Path(tempfile.mkdtemp(prefix="cpt-rt-"))
    node = CalicoNode(secrets.token_hex(3), work, cni_version=cni_version, uplink_mtu=uplink_mtu)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)
