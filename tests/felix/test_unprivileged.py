"""Felix unprivileged: per-veth sysctls through FELIX_PROCSYSNETPATH, as in a container.

The container runtime bind-mounts /proc/sys read-only over itself; the install mounts the
host's /proc/sys/net writable at /host/proc/sys/net. This reproduces exactly that in a private
mount namespace (unshare -m: the host's mounts are untouched) and plumbs a dual-stack pod with
the real PodPlumber from a node namespace: with the default /proc/sys/net the first write fails
with EROFS, through the other mount every sysctl lands in the right namespace (the node's for
the host veth, the pod's for eth0: the kernel resolves /proc/sys/net names in the writing
thread's namespace whichever mount the path goes through). Then the start-up check: Felix
refuses, naming the variable, a directory that is not /proc/sys/net or is read-only, and the
iptables-legacy dataplane without CAP_NET_RAW.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.felix.endpoints.sysctls import SysctlDirError, check_sysctl_dir
from tests.felix.conftest import FELIX, REPO, Namespaces, make_node, read_sysctl

# Runs inside `unshare --mount` with the node namespace entered: /proc/sys read-only as a
# container's, /proc/sys/net bind-mounted writable at argv[1] first.
_PLUMB = r"""
import errno, ipaddress, json, subprocess, sys
alt, pod_netns = sys.argv[1], sys.argv[2]
for cmd in (["mount", "--bind", "/proc/sys/net", alt],
            ["mount", "--bind", "/proc/sys", "/proc/sys"],
            ["mount", "-o", "remount,bind,ro", "/proc/sys"]):
    subprocess.run(cmd, check=True)
from services.felix.endpoints.veth import PodInterfaceSpec, PodPlumber
spec = PodInterfaceSpec(
    host_name="calisysctl0", netns=pod_netns, interface_name="eth0", mtu=1500,
    ips=(ipaddress.ip_address("10.65.0.5"), ipaddress.ip_address("fd00:65::5")))
out = {}
default = PodPlumber()
try:
    default.setup(spec)
    out["default"] = "written"
except OSError as exc:
    out["default"] = errno.errorcode.get(exc.errno, str(exc.errno))
finally:
    default.close()
plumber = PodPlumber(alt)
try:
    out["mac"] = plumber.setup(spec).host_mac
finally:
    plumber.close()
print(json.dumps(out))
"""


def test_sysctls_reach_node_and_pod_through_another_mount(tmp_path: Path) -> None:
    namespaces = Namespaces()
    try:
        node = make_node(namespaces)
        pod = namespaces.add("pod")
        alt = tmp_path / "host-proc-sys-net"
        alt.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        res = subprocess.run(
            ["unshare", "--mount", "--propagation", "private",
             "nsenter", f"--net={namespaces.path(node)}",
             sys.executable, "-c", _PLUMB, str(alt), namespaces.path(pod)],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        # The read-only /proc/sys really is what a container has: the default path fails.
        assert out["default"] == "EROFS"
        host = "calisysctl0"
        for path, value in [
            (f"ipv4/conf/{host}/proxy_arp", "1"),
            (f"ipv4/neigh/{host}/proxy_delay", "0"),
            (f"ipv4/conf/{host}/forwarding", "1"),
            (f"ipv6/conf/{host}/accept_ra", "0"),
            (f"ipv6/conf/{host}/addr_gen_mode", "1"),
        ]:
            assert read_sysctl(node, path) == value, path
        assert read_sysctl(pod, "ipv6/conf/eth0/accept_dad") == "0"
        assert read_sysctl(pod, "ipv6/conf/eth0/disable_ipv6") == "0"
        # Nothing leaked into the host's namespace.
        assert not Path(f"/proc/sys/net/ipv4/conf/{host}").exists()
    finally:
        namespaces.cleanup()  # the node's namespace takes the veth with it


def test_start_up_check_names_what_is_wrong(tmp_path: Path) -> None:
    check_sysctl_dir("/proc/sys/net")  # the lab's host process: writable
    with pytest.raises(SysctlDirError, match="is not a /proc/sys/net directory"):
        check_sysctl_dir(str(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELIX_", "ETCD_"))}
    env.update(FELIX_PROCSYSNETPATH=str(tmp_path), DATASTORE_TYPE="kubernetes")
    res = subprocess.run([FELIX], capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 2, res.stderr
    assert "FELIX_PROCSYSNETPATH" in res.stderr and str(tmp_path) in res.stderr


def test_start_up_check_refuses_a_read_only_mount(tmp_path: Path) -> None:
    # Checked in a private mount namespace: a read-only bind of /proc/sys/net.
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (
        f"mount --bind /proc/sys/net {ro} && mount -o remount,bind,ro {ro} && "
        f"{sys.executable} -c 'from services.felix.endpoints.sysctls import check_sysctl_dir; "
        f'check_sysctl_dir("{ro}")\''
    )
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert res.returncode == 1
    assert "is mounted read-only" in res.stderr and "FELIX_PROCSYSNETPATH" in res.stderr


def test_iptables_legacy_without_net_raw_is_refused_at_start() -> None:
    # The one dataplane that needs CAP_NET_RAW (libiptc's raw socket): measured in a podman
    # container, iptables-legacy fails "Permission denied (you must be root)" without it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FELIX_", "ETCD_"))}
    env.update(FELIX_DATAPLANE="iptables-legacy", DATASTORE_TYPE="kubernetes")
    res = subprocess.run(
        ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", FELIX],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "iptables-legacy needs CAP_NET_RAW" in res.stderr
