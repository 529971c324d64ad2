"""Helpers for calico-lab tests: the CLI as a subprocess, the host-namespace snapshot, and
taking a lab down whatever state it is in."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CALICO_LAB = [sys.executable, "-m", "lab.main"]

LabCli = Callable[..., subprocess.CompletedProcess[str]]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("calico-lab needs root for network namespaces")


def missing_programs() -> list[str]:
    """The services calico-lab runs that are not installed yet (console script or module)."""
    from lab.daemons import PROGRAM_DIR_ENV, DaemonError, find_program

    override = os.environ.get(PROGRAM_DIR_ENV)
    missing = []
    modules = {
        "calico-ipamd": "services.ipam.main",
        "calico-felix": "services.felix.main",
        "calico": "cni_client.calico",
        "calico-ipam": "cni_client.calico_ipam",
    }
    for name, module in modules.items():
        try:
            program = find_program(name)
        except DaemonError:
            missing.append(name)
            continue
        # A console script exists before its module does; a program from the override
        # directory is taken as it is.
        from_override = bool(override) and program.startswith(str(override))
        if not from_override and importlib.util.find_spec(module) is None:
            missing.append(module)
    return missing


def missing_bgp() -> list[str]:
    """What a lab running BGP needs beyond missing_programs(): calico-bgpd, its generated
    status stubs, and BIRD."""
    from lab.daemons import DaemonError, find_program

    missing = []
    try:
        find_program("calico-bgpd")
    except DaemonError:
        missing.append("calico-bgpd")
    if importlib.util.find_spec("calico.bgp") is None:
        missing.append("calico.bgp.v1 (generated stubs)")
    missing += [p for p in ("/usr/sbin/bird", "/usr/sbin/birdc") if not os.access(p, os.X_OK)]
    return missing


def host_snapshot() -> dict[str, str]:
    """What must not change in the host's namespace."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    addrs = json.loads(run("ip", "-j", "addr"))
    for link in addrs:  # counters and lifetimes tick on their own
        for info in link.get("addr_info", []):
            info.pop("valid_life_time", None)
            info.pop("preferred_life_time", None)
    return {
        "addr": json.dumps(addrs, sort_keys=True),
        "route4": run("ip", "-4", "route", "show", "table", "all"),
        "route6": run("ip", "-6", "route", "show", "table", "all"),
        "rules": run("ip", "rule"),
        "nft": run("nft", "list", "ruleset"),
        "iptables-legacy": _legacy_rules(),
    }


def _legacy_rules() -> str:
    """Legacy x_tables rules (which `nft list ruleset` does not show), without the comment
    lines and packet counters that change on their own."""
    if shutil.which("iptables-legacy-save") is None:
        return ""
    out = subprocess.run(["iptables-legacy-save"], capture_output=True, text=True).stdout
    lines = [re.sub(r"\[\d+:\d+\]", "", ln) for ln in out.splitlines() if not ln.startswith("#")]
    return "\n".join(lines)


def lab_namespaces(state_dir: Path) -> list[str]:
    """Network namespaces of the lab kept in `state_dir` (named after the directory)."""
    prefix = f"clab-{state_dir.name}-"
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return sorted(n for n in names if n.startswith(prefix))


@dataclass
class LabHandle:
    state_dir: Path
    cli: LabCli
    host_before: dict[str, str] | None = None  # host_snapshot() taken before `up`

    def state(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.state_dir / "state.json").read_text())
        return data


def make_cli(state_dir: Path) -> LabCli:
    def cli(
        *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*CALICO_LAB, "--state-dir", str(state_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"calico-lab {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    return cli


def force_down(state_dir: Path) -> None:
    """Finalizer: take the lab down even if the test (or `down`) failed."""
    from lab.cluster import bring_down

    if (state_dir / "state.json").exists():
        subprocess.run(
            [*CALICO_LAB, "--state-dir", str(state_dir), "down"],
            capture_output=True,
            timeout=120,
            cwd=REPO,
        )
    if (state_dir / "state.json").exists():
        problems = bring_down(state_dir, graceful=False)
        assert not problems, f"lab cleanup left: {problems}"


# ---- inside a lab: kernel state, traffic from pods, the pool ----

LAB_POOL = "10.65.0.0/16"  # the lab's default pool (lab-pool)
POOL = ipaddress.ip_network(LAB_POOL)
BLOCK_PREFIX = 26  # the lab pool's block size
# A 3-node lab on one subnet, and one pod per node (the multi-node tests' usual shape).
NODE_ADDRESS = {"node-1": "10.66.0.11", "node-2": "10.66.0.12", "node-3": "10.66.0.13"}
PODS = {"x/a": "node-1", "x/b": "node-2", "x/c": "node-3"}
VXLAN_MTU = 1450  # the lab's eth0 (1500) less VXLAN's 50 bytes
# Run inside a namespace: connect over TCP and print what the server sends first (the
# outside host and whoami_server answer with the source address they saw).
CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
    print(c.recv(100).decode().strip())
except OSError as exc:
    print(f"unreachable ({exc})")
"""


def ip_json(netns: str, *args: str) -> list[dict[str, Any]]:
    """`ip -n NETNS -j ARGS...` parsed."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", *args], capture_output=True, text=True, check=True
    ).stdout
    data: list[dict[str, Any]] = json.loads(out or "[]")
    return data


def tx_packets(netns: str, device: str = "vxlan.calico") -> int:
    """Packets a device in `netns` has sent (0 while it does not exist)."""
    links = [link for link in ip_json(netns, "-s", "link", "show") if link["ifname"] == device]
    return int(links[0]["stats64"]["tx"]["packets"]) if links else 0


def run_python(netns: str, script: str, *args: str, timeout: float = 30) -> str:
    """A Python snippet run inside a namespace; its stdout (or stderr when silent)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.stdout.strip() or proc.stderr.strip()


def connect_from(netns: str, address: str, port: int) -> str:
    """What a TCP server at address:port says first to a client in `netns`, or
    "unreachable (...)"."""
    return run_python(netns, CONNECT, address, str(port))


@contextmanager
def whoami_server(netns: str, port: int, ready_dir: Path) -> Iterator[None]:
    """The lab's outside-host server (lab/outside.py) run by the test in any namespace:
    answers each TCP connection with the source address it saw. Stopped on exit."""
    ready = ready_dir / f"whoami-{netns}-{port}.ready"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "lab.outside", "--netns", f"/run/netns/{netns}"]
    proc = subprocess.Popen([*argv, "--port", str(port), "--ready", str(ready)], cwd=REPO)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, f"whoami server in {netns} exited {proc.returncode}"
            assert time.monotonic() < deadline, f"whoami server in {netns} not ready"
            time.sleep(0.05)
        yield
    finally:
        proc.kill()
        proc.wait()
        ready.unlink(missing_ok=True)


def apply_pool(cli: LabCli, scratch: Path, **spec: object) -> None:
    """Replace the lab pool's spec (cidr and block size kept) with `spec`, e.g.
    vxlanMode="Always", natOutgoing=True."""
    pool = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": "lab-pool"},
        "spec": {"cidr": LAB_POOL, "blockSize": BLOCK_PREFIX, **spec},
    }
    path = scratch.parent / f"{scratch.name}-pool.json"
    path.write_text(json.dumps(pool))
    try:
        cli("calicoctl", "apply", "-f", str(path))
    finally:
        path.unlink()


# Run inside a pod: one UDP datagram of argv[2] bytes with DF set to the echo server at
# argv[1]:80 (the pod server echoes, after a datagram naming itself). Prints "echoed",
# "EMSGSIZE" (refused at the sender: larger than the path MTU) or what else happened.
DF_UDP = """
import errno, socket, sys
dst, size = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF set
s.settimeout(1.0)
for _ in range(5):
    try:
        s.sendto(b"x" * size, (dst, 80))
        data = s.recv(65535)
        if data.startswith(b"calico-lab-pod "):  # the server's identity, then the echo
            data = s.recv(65535)
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:
            print("EMSGSIZE")
            break
        continue
    print("echoed" if len(data) == size else f"short echo {len(data)}")
    break
else:
    print("no echo")
"""
# Run inside a pod: send argv[3] bytes in one write over TCP to argv[1]:argv[2] (a pod server,
# which sends one identity line, then echoes) and read them back. Prints "echoed" when every
# byte came back unchanged.
TCP_EXCHANGE = """
import os, socket, sys
dst, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = os.urandom(size)
try:
    c = socket.create_connection((dst, port), timeout=3)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(payload)
    got = b""
    while b"\\n" not in got:  # the pod server's identity line comes first
        chunk = c.recv(65535)
        if not chunk:
            break
        got += chunk
    got = got.split(b"\\n", 1)[1] if b"\\n" in got else b""
    while len(got) < size:
        chunk = c.recv(65535)
        if not chunk:
            break
        got += chunk
    print("echoed" if got == payload else f"echo differs ({len(got)} of {size} bytes)")
except OSError as exc:
    print(f"failed ({exc})")
"""


def df_udp(netns: str, address: str, size: int) -> str:
    """A don't-fragment UDP datagram of `size` bytes from `netns` to a pod's echo on 80."""
    return run_python(netns, DF_UDP, address, str(size))


def tcp_exchange(netns: str, address: str, port: int, size: int) -> str:
    """`size` bytes over TCP from `netns` to an echo server and back: "echoed" when intact."""
    return run_python(netns, TCP_EXCHANGE, address, str(port), str(size))


def wait_all_pairs_connect(cli: LabCli, pods: int, within: float, port: int = 80) -> None:
    """Until `calico-lab matrix` shows every ordered pair of the lab's `pods` pods connected
    over TCP and UDP."""
    deadline = time.monotonic() + within
    while True:
        out = cli("matrix", "--port", str(port), "--protocol", "tcp,udp", "--json").stdout
        table = json.loads(out)
        blocked = [(proto, s, d) for proto, rows in table.items() for s, d, ok in rows if not ok]
        pairs = sum(len(rows) for rows in table.values())
        if not blocked and pairs == 2 * pods * (pods - 1):
            return
        assert time.monotonic() < deadline, f"blocked: {blocked} ({pairs} pairs probed)"
        time.sleep(0.3)
