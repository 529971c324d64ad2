"""containerd (v2, from scripts/build-kube-node.sh) as the node's container runtime.

Its configuration carries what this host forces (KUBELET.md): the cgroupfs driver (no systemd),
`restrict_oom_score_adj` (no CAP_SYS_RESOURCE here: runc could not lower a sandbox's
oom_score_adj and every sandbox would fail with "can't get final child's PID from pipe"), the
local pause image as the sandbox image, CNI from /etc/cni/net.d with plugins in /opt/cni/bin
(where Calico's install puts them) then /usr/lib/cni. Debian's runc runs the containers.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from lab.kubenode import layout
from lab.kubenode.tools import Tools
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached

START_TIMEOUT = 30.0


class ContainerdError(RuntimeError):
    pass


def config(tools: Tools, work: Path) -> str:
    bin_dirs = ", ".join(f'"{d}"' for d in layout.CNI_BIN_DIRS)
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    runc = f"{cri_runtime}.containerd.runtimes.runc"
    return f"""version = 3
root = "{layout.CONTAINERD_ROOT}"
state = "{layout.CONTAINERD_STATE}"

[grpc]
  address = "{layout.CONTAINERD_SOCKET}"

[plugins]
  # Its default, /opt/containerd, would be one more thing left on the host.
  [plugins.'io.containerd.internal.v1.opt']
    path = "{work / "opt"}"
  # No NRI plugins here; enabled it would leave /run/nri behind.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{layout.PAUSE_IMAGE}"
  [{cri_runtime}]
    restrict_oom_score_adj = true
    [{cri_runtime}.cni]
      bin_dirs = [{bin_dirs}]
      conf_dir = "{layout.CNI_CONF_DIR}"
    [{cri_runtime}.containerd]
      default_runtime_name = "runc"
      [{runc}]
        runtime_type = "io.containerd.runc.v2"
        [{runc}.options]
          SystemdCgroup = false
          BinaryName = "{tools.runc}"
"""


def ctr(tools: Tools, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools.ctr, "--address", layout.CONTAINERD_SOCKET, "-n", layout.IMAGE_NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def answers(tools: Tools) -> bool:
    try:
        return ctr(tools, "version", timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start(tools: Tools, work: Path) -> ProcessRecord:
    if Path(layout.CONTAINERD_SOCKET).exists() and answers(tools):
        raise ContainerdError(
            f"a containerd already answers on {layout.CONTAINERD_SOCKET}: not ours to take over"
        )
    conf = work / "containerd.toml"
    conf.write_text(config(tools, work))
    env = dict(os.environ)
    # containerd finds containerd-shim-runc-v2 on its PATH.
    env["PATH"] = f"{tools.containerd_bin_dir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return start_detached(
        "containerd",
        ["nice", "-n", "10", tools.containerd, "--config", str(conf)],
        work / "containerd.log",
        env=env,
    )


def wait_ready(tools: Tools, record: ProcessRecord, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(tools):
            return
        if not is_alive(record):
            raise ContainerdError(f"containerd exited while starting:\n{log_tail(record.log)}")
        time.sleep(0.1)
    raise ContainerdError(f"containerd not ready after {timeout:.0f} s:\n{log_tail(record.log)}")


def remove_all_containers(tools: Tools) -> list[str]:
    """Kill every task and remove every container of the CRI namespace (pods the kubelet left)."""
    problems = []
    tasks = ctr(tools, "tasks", "ls", "-q").stdout.split()
    for task in tasks:
        ctr(tools, "tasks", "kill", "-s", "KILL", task)
    if tasks:
        time.sleep(1)
    for container in ctr(tools, "containers", "ls", "-q").stdout.split():
        ctr(tools, "tasks", "rm", "-f", container)
        proc = ctr(tools, "containers", "rm", container)
        if proc.returncode != 0:
            problems.append(f"ctr containers rm {container}: {proc.stderr.strip()}")
    return problems
