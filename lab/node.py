"""A lab node: a network namespace standing in for a host, and the daemons serving it.

The node's namespace holds the host-side veths, the routes to pods, the blackhole routes of
the pools and whatever tables Felix programs; calico-ipamd and calico-felix run inside it, as
they would on a real host. Nothing of this touches the host's own namespace. A lab of several
nodes is a list of these (each with its own namespace, sockets and logs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lab import netns
from lab.cni import install_plugins, netconf
from lab.daemons import start_daemon
from lab.processes import ProcessRecord, is_alive, stop
from lab.state import NodeState

IPAMD = "calico-ipamd"
FELIX = "calico-felix"
DAEMONS = (IPAMD, FELIX)


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
    def ipam_socket(self) -> str:
        return self.state.sockets.get(IPAMD, "")

    @property
    def felix_socket(self) -> str:
        return self.state.sockets.get(FELIX, "")

    def cni_config(self) -> dict[str, object]:
        return netconf(self.ipam_socket, self.felix_socket, self.name)

    # ---- the namespace ----

    def create_namespace(self) -> None:
        """The node's namespace: loopback up, forwarding on, a blackhole route per pool (so
        traffic to unassigned pool addresses stops at the node)."""
        netns.create(self.netns)
        netns.sysctl(self.netns, "net.ipv4.ip_forward", "1")
        netns.sysctl(self.netns, "net.ipv6.conf.all.forwarding", "1")
        for cidr in self.state.pool_cidrs:
            netns.run_ip(["route", "add", "blackhole", cidr], netns=self.netns)

    def delete_namespace(self) -> None:
        netns.delete(self.netns)

    # ---- daemons (the caller is inside the node's namespace: children inherit it) ----

    def start_daemons(
        self, datastore_env: Mapping[str, str], dataplane: str | None, typha: str = ""
    ) -> dict[str, ProcessRecord]:
        """Start calico-ipamd, then calico-felix (through Typha at `typha` host:port when
        given); each is recorded as soon as it runs."""
        self.dir.mkdir(parents=True, exist_ok=True)
        common = {**datastore_env, "NODENAME": self.name}
        started: dict[str, ProcessRecord] = {}
        ipam_sock = self.dir / "ipamd.sock"
        self.state.sockets[IPAMD] = str(ipam_sock)
        started[IPAMD] = start_daemon(
            IPAMD,
            ["--socket", str(ipam_sock), "--nodename", self.name],
            ipam_sock,
            self.dir / "ipamd.log",
            common,
        )
        self.state.processes[IPAMD] = started[IPAMD]
        felix_sock = self.dir / "felix.sock"
        self.state.sockets[FELIX] = str(felix_sock)
        felix_args = ["--socket", str(felix_sock), "--nodename", self.name]
        if dataplane:
            felix_args += ["--dataplane", dataplane]
        started[FELIX] = start_daemon(
            FELIX,
            felix_args,
            felix_sock,
            self.dir / "felix.log",
            {
                **common,
                "CALICO_FELIX_SOCKET": str(felix_sock),
                **({"TYPHA_ADDR": typha} if typha else {}),
            },
        )
        self.state.processes[FELIX] = started[FELIX]
        return started

    def install_cni(self) -> None:
        self.state.cni_bin_dir = str(install_plugins(self.dir / "cni-bin"))

    def daemons_alive(self) -> bool:
        return all(
            name in self.state.processes and is_alive(self.state.processes[name])
            for name in DAEMONS
        )

    def stop_daemons(self) -> list[str]:
        """Stop Felix first (it may still be using IPAM), then the rest; names left running."""
        survivors = []
        for name in (FELIX, IPAMD, *sorted(set(self.state.processes) - set(DAEMONS))):
            record = self.state.processes.get(name)
            if record is None:
                continue
            if stop(record):
                del self.state.processes[name]
            else:
                survivors.append(f"{name} (pid {record.pid})")
        return survivors
