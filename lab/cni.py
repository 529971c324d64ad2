"""Running the `calico` CNI plugin exactly as a container runtime does.

Exec `<CNI_PATH>/calico` with CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH and
CNI_ARGS in the environment and the network configuration on stdin; read the result (or the
CNI error object) from stdout. The lab runs it inside the pod's node's namespace (through
`nsenter`, so one CLI process serves every node), where a runtime on that node would.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.daemons import find_program

CNI_VERSION = "1.0.0"
NETWORK_NAME = "k8s-pod-network"
IFNAME = "eth0"
PLUGIN_TIMEOUT = 60.0
ERR_TRY_AGAIN_LATER = 11
TRY_AGAIN_FOR = 20.0
NSENTER = "nsenter"


class CniError(RuntimeError):
    def __init__(self, command: str, code: int, msg: str, details: str = "") -> None:
        text = f"CNI {command} failed (code {code}): {msg}"
        super().__init__(f"{text}: {details}" if details else text)
        self.code = code
        self.msg = msg
        self.details = details


def netconf(ipam_socket: str, felix_socket: str, nodename: str) -> dict[str, Any]:
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "type": "calico",
        "nodename": nodename,
        "felix_socket": felix_socket,
        "ipam": {"type": "calico-ipam", "socket": ipam_socket},
    }


def install_plugins(bin_dir: Path) -> Path:
    """Put `calico` and `calico-ipam` into `bin_dir` (the lab's CNI_PATH).

    Uses the project's launcher installer when it is there (small `python -S` launchers that
    start fast); otherwise links the console scripts of this install.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    try:
        installer: Any = importlib.import_module("cni_client.install")
    except ImportError:
        installer = None
    install = getattr(installer, "install_plugins", None) or getattr(installer, "install", None)
    if callable(install):
        install(bin_dir)
        if (bin_dir / "calico").exists() and (bin_dir / "calico-ipam").exists():
            return bin_dir
    for name in ("calico", "calico-ipam"):
        target = bin_dir / name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(find_program(name))
    return bin_dir


def _environment(
    command: str, container_id: str, netns: str, cni_path: str, pod_namespace: str, pod: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(
        {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": IFNAME,
            "CNI_PATH": cni_path,
            "CNI_ARGS": (
                f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod_namespace};K8S_POD_NAME={pod};"
                f"K8S_POD_INFRA_CONTAINER_ID={container_id}"
            ),
        }
    )
    return env


async def run_plugin(
    command: str,
    config: Mapping[str, Any],
    cni_path: str,
    container_id: str,
    netns: str,
    pod_namespace: str,
    pod: str,
    node_netns: Path | None = None,
) -> dict[str, Any]:
    """One plugin invocation (inside `node_netns` when given, else where the caller is); the
    parsed result (empty for DEL); CniError on failure."""
    plugin = str(Path(cni_path) / str(config["type"]))
    argv = [NSENTER, f"--net={node_netns}", "--", plugin] if node_netns else [plugin]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(command, container_id, netns, cni_path, pod_namespace, pod),
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(json.dumps(config).encode()), PLUGIN_TIMEOUT
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CniError(
            command, 999, f"plugin did not finish within {PLUGIN_TIMEOUT:.0f}s"
        ) from None
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        try:
            error = json.loads(text)
            raise CniError(
                command,
                int(error.get("code", 999)),
                str(error.get("msg", "")),
                str(error.get("details", "")),
            )
        except (ValueError, AttributeError):
            raise CniError(
                command, 999, f"exit status {proc.returncode}", (text + err.decode()).strip()
            ) from None
    if not text:
        return {}
    result: dict[str, Any] = json.loads(text)
    return result


async def add(
    config: Mapping[str, Any],
    cni_path: str,
    container_id: str,
    netns: str,
    pod_namespace: str,
    pod: str,
    node_netns: Path | None = None,
) -> dict[str, Any]:
    """ADD, retried while the plugin says "try again later" (Felix not in sync yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TRY_AGAIN_FOR
    while True:
        try:
            return await run_plugin(
                "ADD", config, cni_path, container_id, netns, pod_namespace, pod, node_netns
            )
        except CniError as exc:
            if exc.code != ERR_TRY_AGAIN_LATER or loop.time() > deadline:
                raise
        await asyncio.sleep(0.2)


async def delete(
    config: Mapping[str, Any],
    cni_path: str,
    container_id: str,
    netns: str,
    pod_namespace: str,
    pod: str,
    node_netns: Path | None = None,
) -> None:
    await run_plugin("DEL", config, cni_path, container_id, netns, pod_namespace, pod, node_netns)


def result_ips(result: Mapping[str, Any]) -> list[str]:
    """Bare addresses from a CNI result's `ips` (1.0.0) list."""
    ips = []
    for entry in result.get("ips") or []:
        address = str(entry.get("address", ""))
        if address:
            ips.append(address.split("/", 1)[0])
    return ips


def result_host_interface(result: Mapping[str, Any]) -> str:
    for iface in result.get("interfaces") or []:
        if not iface.get("sandbox"):
            return str(iface.get("name", ""))
    return ""
