"""Exec the installed `calico` launcher exactly as a runtime does: CNI_* variables, the
network config on stdin, the result or error JSON read from stdout."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTAINER_ID = "a1b2c3d4e5f6"
NETNS = "/var/run/netns/cni-test-pod"


@dataclass
class PluginRun:
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error(self) -> dict[str, Any]:
        assert self.rc != 0, f"expected an error, got rc=0: {self.stdout}"
        out = self.json()
        assert isinstance(out, dict)
        return out


def base_env(command: str, cni_bin: Path, **overrides: str | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": CONTAINER_ID,
        "CNI_NETNS": NETNS,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(cni_bin),
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-1",
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_plugin(
    cni_bin: Path, env: dict[str, str], stdin: bytes | dict[str, Any], timeout: float = 30
) -> PluginRun:
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    proc = subprocess.run(
        [str(cni_bin / "calico")], input=data, env=env, capture_output=True, timeout=timeout
    )
    return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def netconf(
    ipam_socket: str, felix_socket: str, version: str = "1.1.0", **extra: Any
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "calico",
        "felix_socket": felix_socket,
        "nodename": "node-1",
        "ipam": {"type": "calico-ipam", "socket": ipam_socket},
    }
    conf.update(extra)
    return conf
