"""The project's `calico` CNI plugin under a real kubelet and containerd.

Installed by hand onto the node (the DaemonSet's init container will do this later):
calico-ipamd and calico-felix run as host processes on the Kubernetes datastore (the node's
API server, with Calico's CRDs), the plugins go into /opt/cni/bin and a conflist named to sort
before podman's into /etc/cni/net.d. An ordinary pod then gets an address from the pool
through the kubelet's CNI ADD, the host reaches it, it reaches the API server at the node's
address, and deleting it runs CNI DEL, which releases the address. A NetworkPolicy applied
with kubectl is enforced by Felix between two such pods. `down` then leaves the host as it
was, Felix's tables and the installed files included.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import install_calico_crds
from lab.cni import install_plugins, netconf
from lab.daemons import find_program, launch_daemon, wait_listening
from lab.kubenode import hostsnap, layout
from lab.processes import ProcessRecord, stop
from tests.kubenode.kubenodekit import (
    KubeNode,
    busybox_pod,
    node_processes,
    take_down,
    wait_running,
)

pytestmark = pytest.mark.timeout(2400)  # a cold build of the tools: 8-18 min on 2 cores

POOL = "10.244.0.0/16"  # unreachable on the host while the node runs; pods' /32s win
CONFLIST = Path(layout.CNI_CONF_DIR) / "10-calico.conflist"
CNI_BIN = Path(layout.CNI_BIN_DIRS[0])


def _calicoctl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [find_program("calicoctl"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
        check=False,
    )
    assert proc.returncode == 0, f"calicoctl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _in_use(env: dict[str, str]) -> int:
    """Addresses in use in the test pool (`calicoctl ipam show`)."""
    usage: dict[str, Any] = json.loads(_calicoctl(env, "ipam", "show", "-o", "json"))
    for pool in usage["pools"]:
        if pool["cidr"] == POOL:
            return int(pool["inUse"])
    raise AssertionError(f"{POOL} not in {usage}")


@pytest.fixture(scope="module")
def calico_on_node(
    kube_node: KubeNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Calico's CRDs and pool, calico-ipamd and calico-felix on the host, the plugin and its
    conflist installed; yields the datastore environment. Stops both daemons afterwards."""
    install_calico_crds(kube_node.server)
    env = {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(kube_node.server.kubeconfig)}
    pool = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": "kubenode-test-pool"},
        "spec": {"cidr": POOL, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never"},
    }
    _calicoctl(env, "apply", "-f", "-", stdin=json.dumps(pool))
    work = tmp_path_factory.mktemp("calico")
    records: list[ProcessRecord] = []
    try:
        daemon_env = {**env, "NODENAME": layout.NODE_NAME}
        ipam_sock, felix_sock = work / "ipamd.sock", work / "felix.sock"
        common = ["--nodename", layout.NODE_NAME]
        records.append(
            launch_daemon(
                "calico-ipamd",
                ["--socket", str(ipam_sock), *common],
                ipam_sock,
                work / "ipamd.log",
                daemon_env,
            )
        )
        felix_env = {
            **daemon_env,
            "CALICO_FELIX_SOCKET": str(felix_sock),
            "CALICO_IPAM_SOCKET": str(ipam_sock),
        }
        records.append(
            launch_daemon(
                "calico-felix",
                ["--socket", str(felix_sock), *common],
                felix_sock,
                work / "felix.log",
                felix_env,
            )
        )
        wait_listening(records[0], ipam_sock)
        wait_listening(records[1], felix_sock)
        install_plugins(CNI_BIN)
        plugin = netconf(str(ipam_sock), str(felix_sock), layout.NODE_NAME)
        conflist = {
            "cniVersion": plugin.pop("cniVersion"),
            "name": plugin.pop("name"),
            "plugins": [plugin],
        }
        CONFLIST.write_text(json.dumps(conflist, indent=1))
        yield env
    finally:
        for record in reversed(records):
            stop(record, timeout=10)


def test_pod_gets_an_address_through_calico_cni_and_releases_it(
    kube_node: KubeNode, calico_on_node: dict[str, str]
) -> None:
    before = _in_use(calico_on_node)
    kube_node.apply([busybox_pod("web", command="exec httpd -f -p 8080")])
    seconds = wait_running(kube_node, "default", "web", timeout=90)
    print(f"pod through calico CNI: create -> Ready {seconds:.2f} s")
    ip = kube_node.pod("default", "web")["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(POOL), ip
    assert _in_use(calico_on_node) == before + 1
    links = kube_node.kubectl("exec", "web", "--", "ip", "-o", "-4", "addr", "show", "eth0")
    assert f"{ip}/" in links, links
    # The host reaches the pod over its cali link (Felix's /32 route beats the unreachable pool)
    with socket.create_connection((ip, 8080), timeout=5):
        pass
    # The pod reaches the API server at the node's address (what in-cluster clients will use)
    target = f"{layout.NODE_ADDRESS} {layout.APISERVER_PORT}"
    kube_node.kubectl("exec", "web", "--", "sh", "-c", f"nc -w 3 {target} </dev/null")
    kube_node.kubectl("delete", "pod", "web", "--wait=true", "--timeout=60s")
    deadline = time.monotonic() + 20
    while _in_use(calico_on_node) != before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _in_use(calico_on_node) == before, "CNI DEL did not release the pod's address"
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    assert ip not in routes, routes


def _connects(node: KubeNode, pod: str, ip: str, port: int) -> bool:
    proc = node.server.kubectl(
        ["exec", pod, "--", "sh", "-c", f"nc -w 2 {ip} {port} </dev/null"], timeout=30
    )
    return proc.returncode == 0


def _eventually(check: Callable[[], bool], want: bool, within: float = 10.0) -> float:
    """Seconds until `check()` is `want` (AssertionError after `within`)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if check() == want:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"still {not want} after {within:.0f} s")


def test_network_policy_applied_with_kubectl_is_enforced(
    kube_node: KubeNode, calico_on_node: dict[str, str]
) -> None:
    """Felix enforces a Kubernetes NetworkPolicy between two pods the real kubelet made."""
    kube_node.apply(
        [
            busybox_pod("server", command="exec httpd -f -p 8080"),
            busybox_pod("client"),
        ]
    )
    wait_running(kube_node, "default", "server", timeout=90)
    wait_running(kube_node, "default", "client", timeout=90)
    ip = kube_node.pod("default", "server")["status"]["podIP"]
    assert _connects(kube_node, "client", ip, 8080)
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "server-deny-ingress", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]},
    }
    kube_node.apply([deny])
    check = functools.partial(_connects, kube_node, "client", ip, 8080)
    print(f"deny enforced {_eventually(check, False):.2f} s after apply (with its 2 s probe)")
    kube_node.kubectl("delete", "networkpolicy", "server-deny-ingress")
    print(f"allowed again {_eventually(check, True):.2f} s after delete")
    kube_node.kubectl("delete", "pod", "server", "client", "--wait=true", "--timeout=60s")


def test_down_restores_the_host_after_calico(
    kube_node: KubeNode, calico_on_node: dict[str, str]
) -> None:
    report = take_down(kube_node)
    assert not report.problems, report.problems
    assert not report.differences, report.differences
    after = hostsnap.take(kube_node.before["ranges"])
    assert hostsnap.differences(kube_node.before, after) == []
    assert not CONFLIST.exists()
    assert not (CNI_BIN / "calico").exists()
    assert node_processes(kube_node) == []
