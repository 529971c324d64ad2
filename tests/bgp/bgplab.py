"""A throwaway BGP cluster for tests: node namespaces on a bridge, a shared embedded datastore,
and a real calico-bgpd (with its real BIRD) per node.

Layout: a "lan" namespace holds a bridge; node i's namespace has eth0 at 10.77.0.(11+i)/24 on
it. Nothing is created in the host's namespace (each veth is made inside the lan namespace
with its peer end born in the node's). Every process is tracked by PID and every namespace by
name; `close()` removes all of them, also after a failure. The test process becomes a child
subreaper so a BIRD orphaned by a killed calico-bgpd is reaped here, not left a zombie.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from calico.bgp.v1 import bgp_pb2, bgp_pb2_grpc
from libcalico.config import DatastoreConfig
from libcalico.datastore import connect
from libcalico.syncer.api import Delete, SyncerUpdate, Update

REPO = Path(__file__).resolve().parents[2]
BGPD = str(REPO / ".venv" / "bin" / "calico-bgpd")
CALICOCTL = str(REPO / ".venv" / "bin" / "calicoctl")
SUBNET = "10.77.0"
PR_SET_CHILD_SUBREAPER = 36
T = TypeVar("T")


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def missing_requirements() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for program in ("bird", "ip"):
        if shutil.which(program) is None:
            return f"{program} is not installed"
    if not os.access(BGPD, os.X_OK):
        return f"{BGPD} is missing (run scripts/setup.sh)"
    return None


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a probe that fails now may succeed later
            last_error = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def pid_is_bird_of(pid: int, bird_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "bird" in cmdline and str(bird_dir) in cmdline


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class BGPLab:
    def __init__(self, nodes: int) -> None:
        self.tag = secrets.token_hex(3)
        self.lan = f"bgl{self.tag}"
        self.namespaces = [f"bgn{self.tag}{i}" for i in range(nodes)]
        self.dir = Path(f"/tmp/bgl{self.tag}")  # short: Unix socket paths are limited
        self.datastore = DatastoreConfig(type="embedded", path=str(self.dir / "calico.db"))
        self.bgpd: dict[int, subprocess.Popen[bytes]] = {}
        self.others: list[subprocess.Popen[bytes]] = []  # e.g. a ToR's BIRD
        self.router_ctl: Path | None = None
        self.bird_pids: set[int] = set()
        self._made: list[str] = []

    # -- names and paths -------------------------------------------------------------------

    def node(self, i: int) -> str:
        return f"node-{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{11 + i}"

    def bird_dir(self, i: int) -> Path:
        return self.dir / f"bird{i}"

    def socket(self, i: int) -> Path:
        return self.dir / f"bgpd{i}.sock"

    # -- network ---------------------------------------------------------------------------

    def up(self) -> BGPLab:
        become_subreaper()
        self.dir.mkdir(parents=True)
        sh("ip", "netns", "add", self.lan)
        self._made.append(self.lan)
        sh("ip", "-n", self.lan, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.lan, "link", "set", "br0", "up")
        for i, ns in enumerate(self.namespaces):
            sh("ip", "netns", "add", ns)
            self._made.append(ns)
            port = f"p{i}"
            sh("ip", "-n", self.lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns)  # fmt: skip
            sh("ip", "-n", self.lan, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def add_lan_address(self, cidr: str) -> None:
        """An address on the bridge itself (the lan namespace as a router, e.g. a ToR)."""
        sh("ip", "-n", self.lan, "addr", "add", cidr, "dev", "br0")

    def start_typha(self) -> Path:
        """calico-typha on a Unix socket (no network: it stays in the host namespace)."""
        socket = self.dir / "typha.sock"
        env = {
            **os.environ,
            "DATASTORE_TYPE": "embedded",
            "CALICO_DATASTORE_PATH": self.datastore.path,
        }
        log = open(self.dir / "typha.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "calico-typha"), "--socket", str(socket)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.others.append(proc)
        wait_for(socket.exists, 20, "calico-typha's socket")
        return socket

    def start_router(self, config: str) -> Path:
        """A plain BIRD in the lan namespace (a top-of-rack router); returns its socket."""
        conf, ctl = self.dir / "router.conf", self.dir / "router.ctl"
        conf.write_text(config)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lan, "bird", "-f", "-c", str(conf), "-s", str(ctl),
             "-P", str(self.dir / "router.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.others.append(proc)
        wait_for(lambda: ctl.exists(), 10, "the router's BIRD")
        self.router_ctl = ctl
        return ctl

    def routes(self, i: int) -> list[dict[str, Any]]:
        out = sh("ip", "-n", self.namespaces[i], "-j", "route", "show")
        return list(json.loads(out or "[]"))

    def route_to(self, i: int, dst: str) -> dict[str, Any] | None:
        for route in self.routes(i):
            if route.get("dst") == dst:
                return route
        return None

    def kernel_route(self, i: int, dst: str) -> dict[str, Any]:
        route = self.route_to(i, dst)
        assert route is not None, f"no route to {dst} on node {i}: {self.routes(i)}"
        return route

    def wait_route(self, i: int, dst: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(lambda: self.route_to(i, dst), timeout, f"a route to {dst} on node {i}")

    def wait_no_route(self, i: int, dst: str, timeout: float = 15.0) -> None:
        wait_for(lambda: self.route_to(i, dst) is None, timeout, f"no route to {dst} on node {i}")

    # -- datastore -------------------------------------------------------------------------

    def write(self, updates: Iterable[SyncerUpdate]) -> None:
        """Put (Update) or delete (Delete) keys in the shared datastore."""
        batch = list(updates)

        async def go() -> None:
            store = await connect(self.datastore)
            try:
                for update in batch:
                    if isinstance(update, Update):
                        await store.put(update.key, update.value)
                    elif isinstance(update, Delete):
                        await store.delete(update.key)
            finally:
                await store.close()

        asyncio.run(go())

    # -- calico-bgpd -----------------------------------------------------------------------

    def start_bgpd(self, i: int, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        environment = {k: v for k, v in os.environ.items() if k != "TYPHA_ADDR"}
        environment.update(
            DATASTORE_TYPE="embedded",
            CALICO_DATASTORE_PATH=self.datastore.path,
            CALICO_BGP_CONNECT_RETRY="1",
        )
        environment.update(env or {})
        log = open(self.dir / f"bgpd{i}.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[i], BGPD, "--socket", str(self.socket(i)),
             "--nodename", self.node(i), "--bird-dir", str(self.bird_dir(i))],
            env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.bgpd[i] = proc
        return proc

    def stop_bgpd(self, i: int, sig: signal.Signals = signal.SIGTERM) -> None:
        proc = self.bgpd.pop(i, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def bird_pid(self, i: int) -> int | None:
        try:
            pid = int((self.bird_dir(i) / "bird.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_is_bird_of(pid, self.bird_dir(i)) and alive(pid):
            self.bird_pids.add(pid)
            return pid
        return None

    def kill_bird(self, i: int) -> int:
        pid = self.bird_pid(i)
        assert pid is not None, f"no BIRD running for node {i}"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 5, f"BIRD {pid} to die")
        self._reap(pid)
        return pid

    def status(self, i: int, timeout: float = 5.0) -> bgp_pb2.BGPStatusReply:
        with grpc.insecure_channel(f"unix://{self.socket(i)}") as channel:
            stub = bgp_pb2_grpc.BGPStatusStub(channel)
            reply: bgp_pb2.BGPStatusReply = stub.GetStatus(
                bgp_pb2.GetStatusRequest(), timeout=timeout
            )
            return reply

    def health(self, i: int, service: str = "calico.bgp.v1.BGPStatus") -> str:
        """The health service's answer for `service`: "SERVING", "NOT_SERVING", ..."""
        with grpc.insecure_channel(f"unix://{self.socket(i)}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def wait_serving(self, i: int, timeout: float = 30.0) -> bgp_pb2.BGPStatusReply:
        def ready() -> bgp_pb2.BGPStatusReply | None:
            proc = self.bgpd.get(i)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"calico-bgpd {i} exited: {self.log_tail(i)}")
            reply = self.status(i, timeout=2)
            return reply if reply.bird_running and reply.last_apply.config_sha256 else None

        return wait_for(ready, timeout, f"calico-bgpd on node {i} to run BIRD")

    def wait_established(self, i: int, protocol: str, timeout: float = 30.0) -> bgp_pb2.Peer:
        def established() -> bgp_pb2.Peer | None:
            for peer in self.status(i, timeout=2).peers:
                if peer.protocol == protocol and peer.state == "Established":
                    return peer
            return None

        return wait_for(established, timeout, f"{protocol} Established on node {i}")

    def wait_status(
        self,
        i: int,
        check: Callable[[bgp_pb2.BGPStatusReply], bool],
        what: str,
        timeout: float = 15,
    ) -> bgp_pb2.BGPStatusReply:
        def probe() -> bgp_pb2.BGPStatusReply | None:
            reply = self.status(i, timeout=2)
            return reply if check(reply) else None

        return wait_for(probe, timeout, what)

    def log_tail(self, i: int, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            text = (self.dir / f"bgpd{i}.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    # -- cleanup ---------------------------------------------------------------------------

    def _reap(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def close(self) -> None:
        for i in list(self.bgpd):
            self.stop_bgpd(i)
        for proc in self.others:
            proc.kill()
            proc.wait(timeout=10)
        for i in range(len(self.namespaces)):
            self.bird_pid(i)  # records a BIRD started since
        for pid in sorted(self.bird_pids):
            if alive(pid) and any(
                pid_is_bird_of(pid, self.bird_dir(i)) for i in range(len(self.namespaces))
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self._reap(pid)
        for ns in reversed(self._made):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> BGPLab:
        try:
            return self.up()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":  # a quick look by hand: python tests/bgp/bgplab.py
    print(missing_requirements() or "ok", file=sys.stderr)
