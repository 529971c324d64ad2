"""A lab node: a network namespace standing in for a host, and the daemons serving it.

The node's namespace holds the host-side veths, the routes to pods (its own and, with BGP, the
other nodes' blocks via their addresses), the blackhole routes of the pools and whatever tables
Felix programs; calico-ipamd, calico-felix and calico-bgpd (with its BIRD) run inside it, as
they would on a real host. Nothing of this touches the host's own namespace. A lab of several
nodes is a list of these (each with its own namespace, sockets and logs under nodes/<name>/).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from lab import netns
from lab.cni import install_plugins, netconf
from lab.daemons import DaemonError, launch_daemon, wait_listening
from lab.processes import ProcessRecord, is_alive, log_tail, process_start_time, reap, stop
from lab.state import NodeState

IPAMD = "calico-ipamd"
FELIX = "calico-felix"
BGPD = "calico-bgpd"
BIRD = "bird"
DAEMONS = (IPAMD, FELIX)  # on every node; BGPD and BIRD only when the lab runs BGP
# BIRD retries an idle session after `connect retry time` (120 s by default): a peer that
# starts a moment later would keep the lab waiting. calico-bgpd renders this knob.
BGPD_ENV = {"CALICO_BGP_CONNECT_RETRY": "1"}
BIRD_PID_TIMEOUT = 20.0
SOCKET_FILES = {IPAMD: "ipamd.sock", FELIX: "felix.sock", BGPD: "bgpd.sock"}
LOG_FILES = {IPAMD: "ipamd.log", FELIX: "felix.log", BGPD: "bgpd.log"}
RESTARTABLE = (BGPD, FELIX, IPAMD)  # what `node restart` takes (BIRD is calico-bgpd's job)
KILL_TIMEOUT = 5.0


def bird_from_pidfile(bird_dir: Path) -> ProcessRecord | None:
    """The BIRD named by DIR/bird.pid, only if that PID runs `bird` with files in `bird_dir`
    (a stale file's PID may belong to anything by now)."""
    try:
        pid = int((bird_dir / "bird.pid").read_text().split()[0])
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not argv or "bird" not in os.path.basename(argv[0]):
        return None
    if not any(os.path.dirname(a) == str(bird_dir) for a in argv[1:]):
        return None
    start = process_start_time(pid)
    if start is None:
        return None
    return ProcessRecord(BIRD, pid, start, argv, str(bird_dir / "bird.log"))


class LabNode:
    def __init__(self, state: NodeState, lab_dir: Path) -> None:
        self.state = state
        self.dir = lab_dir / "nodes" / state.name

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def netns(self) -> str:
        return self.state.netns

    @property
    def netns_path(self) -> Path:
        return netns.netns_path(self.state.netns)

    @property
    def address(self) -> str:
        return self.state.address

    @property
    def ipam_socket(self) -> str:
        return self.state.sockets.get(IPAMD, "")

    @property
    def felix_socket(self) -> str:
        return self.state.sockets.get(FELIX, "")

    @property
    def bgpd_socket(self) -> str:
        """calico-bgpd's socket ("" on a node without BGP)."""
        return self.state.sockets.get(BGPD, "")

    @property
    def bird_dir(self) -> Path:
        return self.dir / "bird"

    def cni_config(self) -> dict[str, object]:
        return netconf(self.ipam_socket, self.felix_socket, self.name)

    # ---- the namespace ----

    def create_namespace(self) -> None:
        """The node's namespace: loopback up, forwarding on, a blackhole route per pool (so
        traffic to unassigned pool addresses stops at the node; the /26 blocks learned over
        BGP are more specific and win)."""
        netns.create(self.netns)
        netns.sysctl(self.netns, "net.ipv4.ip_forward", "1")
        netns.sysctl(self.netns, "net.ipv6.conf.all.forwarding", "1")
        for cidr in self.state.pool_cidrs:
            netns.run_ip(["route", "add", "blackhole", cidr], netns=self.netns)

    def delete_namespace(self) -> None:
        netns.delete(self.netns)

    # ---- daemons (the caller is inside the node's namespace: children inherit it) ----

    def launch_daemons(
        self,
        datastore_env: Mapping[str, str],
        dataplane: str | None,
        typha: str = "",
        bgp: bool = False,
    ) -> None:
        """Start calico-ipamd, calico-felix and (with `bgp`) calico-bgpd without waiting for
        them; each is recorded in the node's state as soon as it runs. Felix and calico-bgpd
        read through Typha at `typha` (host:port) when given."""
        for name in (*DAEMONS, BGPD) if bgp else DAEMONS:
            self.launch(name, datastore_env, dataplane, typha)

    def launch(
        self,
        name: str,
        datastore_env: Mapping[str, str],
        dataplane: str | None,
        typha: str = "",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """Start one daemon (calico-ipamd, calico-felix or calico-bgpd) without waiting and
        record it; `extra_env` is laid over its environment (`node restart --env`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        common = {**datastore_env, "NODENAME": self.name}
        through_typha = {"TYPHA_ADDR": typha} if typha else {}
        sock = self.dir / SOCKET_FILES[name]
        args = ["--socket", str(sock), "--nodename", self.name]
        if name == IPAMD:
            env = common
        elif name == FELIX:
            if dataplane:
                args += ["--dataplane", dataplane]
            env = {
                **common,
                "CALICO_FELIX_SOCKET": str(sock),
                # Felix asks this node's calico-ipamd for its VXLAN tunnel address.
                "CALICO_IPAM_SOCKET": str(self.dir / SOCKET_FILES[IPAMD]),
                **through_typha,
            }
        else:
            self.bird_dir.mkdir(parents=True, exist_ok=True)
            args += ["--bird-dir", str(self.bird_dir)]
            env = {
                **common,
                **BGPD_ENV,
                "CALICO_BGPD_SOCKET": str(sock),
                "CALICO_BIRD_DIR": str(self.bird_dir),
                **through_typha,
            }
        self.state.sockets[name] = str(sock)
        self.state.processes[name] = launch_daemon(
            name, args, sock, self.dir / LOG_FILES[name], {**env, **(extra_env or {})}
        )

    def wait_daemons(self) -> None:
        """Wait until every launched daemon listens; with calico-bgpd, also until its BIRD
        has written its PID, and record BIRD so `down` stops it."""
        for name in (IPAMD, FELIX, BGPD):
            record = self.state.processes.get(name)
            if record is not None:
                wait_listening(record, Path(self.state.sockets[name]))
        if BGPD in self.state.processes:
            self.state.processes[BIRD] = self._wait_bird(self.state.processes[BGPD])

    def _wait_bird(self, bgpd: ProcessRecord) -> ProcessRecord:
        deadline = time.monotonic() + BIRD_PID_TIMEOUT
        while time.monotonic() < deadline:
            bird = bird_from_pidfile(self.bird_dir)
            if bird is not None:
                return bird
            if not is_alive(bgpd):
                raise DaemonError(f"{BGPD} on {self.name} exited:\n{log_tail(bgpd.log)}")
            time.sleep(0.05)
        raise DaemonError(
            f"{BGPD} on {self.name} started no BIRD within {BIRD_PID_TIMEOUT:.0f}s "
            f"(no live bird in {self.bird_dir / 'bird.pid'}):\n"
            f"{log_tail(bgpd.log)}\n{log_tail(self.bird_dir / 'bird.log', 1000)}"
        )

    def restart(
        self,
        name: str,
        datastore_env: Mapping[str, str],
        dataplane: str | None,
        typha: str = "",
        kill: bool = False,
        extra_env: Mapping[str, str] | None = None,
    ) -> ProcessRecord | None:
        """Stop one daemon (SIGTERM by its recorded PID, or with `kill` SIGKILL, as a crash
        would) and start it again as `up` does, inside the node's namespace; waits until it
        listens (and, for calico-bgpd, until bird.pid names a live BIRD, which it adopts or
        starts). Returns the record of the process stopped (None when none ran). The caller
        saves the state, also when this raises: the new PID is recorded at once."""
        if name not in RESTARTABLE:
            raise DaemonError(f"service {name!r}: expected one of {', '.join(RESTARTABLE)}")
        if name == BGPD and not self.bgpd_socket:
            raise DaemonError(f"{self.name} runs no {BGPD} (the lab is up with --bgp none)")
        old = self.state.processes.get(name)
        if old is not None and is_alive(old):
            gone = _kill(old) if kill else stop(old)
            if not gone:
                raise DaemonError(f"{name} on {self.name} (pid {old.pid}) did not stop")
        else:
            old = None
        with netns.inside(self.netns_path):
            self.launch(name, datastore_env, dataplane, typha, extra_env)
        record = self.state.processes[name]
        wait_listening(record, Path(self.state.sockets[name]))
        if name == BGPD:
            self.state.processes[BIRD] = self._wait_bird(record)
        return old

    def install_cni(self) -> None:
        self.state.cni_bin_dir = str(install_plugins(self.dir / "cni-bin"))

    def daemons_alive(self) -> bool:
        """calico-ipamd and calico-felix run (what a CNI call needs)."""
        return all(
            name in self.state.processes and is_alive(self.state.processes[name])
            for name in DAEMONS
        )

    def stop_daemons(self) -> list[str]:
        """Stop every recorded process; returns those left running.

        Felix first (it may still be using IPAM), calico-bgpd before BIRD (it would start BIRD
        again), then BIRD, IPAM and anything else recorded; last, whichever BIRD bird.pid names
        now (calico-bgpd may have restarted it since `up`).
        """
        survivors = []
        order = (FELIX, BGPD, BIRD, IPAMD)
        for name in (*order, *sorted(set(self.state.processes) - set(order))):
            record = self.state.processes.get(name)
            if record is None:
                continue
            if stop(record):
                del self.state.processes[name]
            else:
                survivors.append(f"{name} on {self.name} (pid {record.pid})")
        return survivors + self._stop_current_bird()

    def _stop_current_bird(self) -> list[str]:
        if BGPD not in self.state.sockets:
            return []
        current = bird_from_pidfile(self.bird_dir)
        if current is None or stop(current):
            return []
        return [f"{BIRD} on {self.name} (pid {current.pid}, from bird.pid)"]


def _kill(record: ProcessRecord) -> bool:
    """SIGKILL, as a crash: no clean-up handler runs. True once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_TIMEOUT
    while is_alive(record):
        reap(record.pid)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
