"""Where the binaries of the real node are, and building them when they are not there yet.

kube-apiserver, kubectl and etcd 3.7 come from scripts/build-kube.sh (linked into the venv's
bin/, found by lab/apiserver.py); kubelet, kube-controller-manager, kube-scheduler and
containerd v2 with its runc shim and ctr from scripts/build-kube-node.sh, in the cache it keeps
(~/.cache/calico-py/tools, or $CALICO_TOOLS_CACHE) keyed by version. runc is Debian's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab import apiserver

KUBE_VERSION = "v1.37.2"
CONTAINERD_VERSION = "v2.4.2"
REPO = Path(__file__).resolve().parent.parent.parent
BUILD_SCRIPTS = (REPO / "scripts" / "build-kube.sh", REPO / "scripts" / "build-kube-node.sh")
NODE_COMMANDS = ("kubelet", "kube-controller-manager", "kube-scheduler")
CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")
HOST_PROGRAMS = ("runc", "openssl", "iptables-save", "ip", "gcc")


class ToolsError(RuntimeError):
    pass


def cache_dir() -> Path:
    override = os.environ.get("CALICO_TOOLS_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "calico-py" / "tools"


def node_dir() -> Path:
    return cache_dir() / f"kube-node-{KUBE_VERSION}"


def containerd_dir() -> Path:
    return cache_dir() / f"containerd-{CONTAINERD_VERSION}"


@dataclass(frozen=True)
class Tools:
    """Absolute paths of every program the node runs."""

    kube_apiserver: str
    kubectl: str
    etcd: str
    kubelet: str
    kube_controller_manager: str
    kube_scheduler: str
    containerd: str
    containerd_bin_dir: str  # holds containerd-shim-runc-v2: containerd finds its shim on PATH
    ctr: str
    runc: str


def missing() -> list[str]:
    """What is not there (each with where it comes from); empty when everything is."""
    lacking: list[str] = []
    for name in ("kube-apiserver", "kubectl", "kube-etcd"):
        if apiserver.binary(name) is None:
            lacking.append(f"{name} (scripts/build-kube.sh)")
    for directory, names in ((node_dir(), NODE_COMMANDS), (containerd_dir(), CONTAINERD_COMMANDS)):
        for name in names:
            if not os.access(directory / name, os.X_OK):
                lacking.append(f"{directory / name} (scripts/build-kube-node.sh)")
    for program in HOST_PROGRAMS:
        if shutil.which(program) is None:
            lacking.append(f"{program} (Debian package; scripts/setup.sh installs it)")
    return lacking


def build(log: Path | None = None) -> float:
    """Run both build scripts (each a no-op when its cache is complete); seconds taken.

    Cold, the kubelet and containerd take minutes of CPU (nice 19); warm, a second.
    """
    started = time.monotonic()
    for script in BUILD_SCRIPTS:
        out = open(log, "ab") if log else None  # noqa: SIM115 - closed below
        try:
            proc = subprocess.run(
                ["bash", str(script)],
                cwd=REPO,
                stdout=out if out else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        finally:
            if out:
                out.close()
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace")[-2000:] if proc.stdout else f"see {log}"
            raise ToolsError(f"{script.name} failed (exit {proc.returncode}):\n{tail}")
    return time.monotonic() - started


def find() -> Tools:
    """The tools, or ToolsError naming every one that is missing."""
    lacking = missing()
    if lacking:
        raise ToolsError("missing: " + "; ".join(lacking))

    def venv(name: str) -> str:
        path = apiserver.binary(name)
        assert path is not None  # missing() checked
        return str(path)

    runc = shutil.which("runc")
    assert runc is not None
    return Tools(
        kube_apiserver=venv("kube-apiserver"),
        kubectl=venv("kubectl"),
        etcd=venv("kube-etcd"),
        kubelet=str(node_dir() / "kubelet"),
        kube_controller_manager=str(node_dir() / "kube-controller-manager"),
        kube_scheduler=str(node_dir() / "kube-scheduler"),
        containerd=str(containerd_dir() / "containerd"),
        containerd_bin_dir=str(containerd_dir()),
        ctr=str(containerd_dir() / "ctr"),
        runc=runc,
    )
