"""`calico-install-cni`: what the calico-cni image runs (images/README.md) — put the `calico` and
`calico-ipam` plugins, a conflist and (inside Kubernetes) a kubeconfig onto a host, the way
Calico's install-cni init container does.

The host's container runtime execs the plugins with the host's own Python, so the plugin code
(the `cni_client` package: standard library only) is copied next to the launchers into
`<bin dir>/calico-py-<version>-<digest>/`, and each launcher's shebang names the host's
interpreter (CNI_HOST_PYTHON, default /usr/bin/python3; 3.11 or newer). A new install goes into a
new directory and the launchers are swapped by rename, so a runtime exec'ing a plugin mid-upgrade
runs the old or the new one, never a mix; older directories are removed afterwards.

Environment (names as Calico's install-cni where Calico has one):
  CNI_BIN_DIR (/host/opt/cni/bin)        where the plugins go, as mounted in this container
  CNI_HOST_BIN_DIR (/opt/cni/bin)        the same directory as the host sees it
  CNI_NET_DIR (/host/etc/cni/net.d)      where the conflist and kubeconfig go
  CNI_HOST_NET_DIR (/etc/cni/net.d)      the same directory as the host sees it
  CNI_CONF_NAME (10-calico.conflist)     sorts before other conflists (runtimes load the first)
  CNI_NETWORK_CONFIG                     a conflist template replacing the default; placeholders
                                         __KUBERNETES_NODE_NAME__ __CNI_MTU__
                                         __KUBECONFIG_FILEPATH__ __FELIX_SOCKET__ __IPAM_SOCKET__
  CNI_MTU (1500), KUBERNETES_NODE_NAME / NODENAME (default: the hostname)
  CALICO_FELIX_SOCKET, CALICO_IPAM_SOCKET the node's daemon sockets (host paths)
  SLEEP (false)                          true: stay running after installing (a sidecar, not an
                                         init container)
A kubeconfig (`calico-kubeconfig`, mode 0600) is written only inside a pod: when
KUBERNETES_SERVICE_HOST is set and the service-account token is mounted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from cni_client.install import PLUGINS, launcher_text

PACKAGE_DIR = Path(__file__).resolve().parent
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBECONFIG_NAME = "calico-kubeconfig"
LIB_PREFIX = "calico-py-"

DEFAULT_TEMPLATE = {
    "name": "k8s-pod-network",
    "cniVersion": "1.0.0",
    "plugins": [
        {
            "type": "calico",
            "nodename": "__KUBERNETES_NODE_NAME__",
            "mtu": "__CNI_MTU__",
            "felix_socket": "__FELIX_SOCKET__",
            "ipam": {"type": "calico-ipam", "socket": "__IPAM_SOCKET__"},
        }
    ],
}


class InstallError(Exception):
    """A setting that cannot be used; the message names it."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("calico-py")
    except Exception:  # a source checkout that was never installed
        return "dev"


def _package_digest() -> str:
    """Digest of the plugin sources: the install directory changes exactly when they do."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def install_plugins(bin_dir: Path, host_bin_dir: str, host_python: str) -> list[Path]:
    """Copy the plugin package into a versioned directory of bin_dir, write the launchers (by
    rename), then remove older versioned directories. Returns the launchers' paths."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    lib_name = f"{LIB_PREFIX}{_version()}-{_package_digest()}"
    lib_dir = bin_dir / lib_name
    if not lib_dir.is_dir():
        staging = bin_dir / f".{lib_name}.tmp{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(
            PACKAGE_DIR,
            staging / PACKAGE_DIR.name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        staging.rename(lib_dir)
    host_root = f"{host_bin_dir.rstrip('/')}/{lib_name}"
    written = []
    for name, module in PLUGINS.items():
        path = bin_dir / name
        tmp = bin_dir / f".{name}.tmp{os.getpid()}"
        tmp.write_text(launcher_text(module, host_python, Path(host_root)))
        tmp.chmod(0o755)
        tmp.replace(path)
        written.append(path)
    for old in bin_dir.glob(f"{LIB_PREFIX}*"):
        if old.name != lib_name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return written


def render_conflist(template: str, values: Mapping[str, str]) -> str:
    """The template with its placeholders filled in; it must then be a conflist (JSON object
    with a `plugins` list)."""
    text = template
    for key, value in values.items():
        # The MTU is a JSON number in the default template: replace the quoted placeholder.
        if key == "__CNI_MTU__":
            text = text.replace(f'"{key}"', value)
        text = text.replace(key, value)
    try:
        conf = json.loads(text)
    except ValueError as exc:
        raise InstallError(f"CNI_NETWORK_CONFIG: not JSON after substitution: {exc}") from None
    if not isinstance(conf, dict) or not isinstance(conf.get("plugins"), list):
        raise InstallError("CNI_NETWORK_CONFIG: must be a conflist (an object with `plugins`)")
    return json.dumps(conf, indent=2) + "\n"


def kubeconfig_text(env: Mapping[str, str], sa_dir: Path = SERVICE_ACCOUNT_DIR) -> str | None:
    """A kubeconfig for the plugin from this pod's service account, or None outside a pod."""
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    token_file = sa_dir / "token"
    if not host or not token_file.exists():
        return None
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    ca_file = sa_dir / "ca.crt"
    ca = base64.b64encode(ca_file.read_bytes()).decode() if ca_file.exists() else ""
    cluster = {"server": server}
    if ca:
        cluster["certificate-authority-data"] = ca
    else:
        cluster["insecure-skip-tls-verify"] = "true"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "calico", "user": {"token": token_file.read_text().strip()}}],
        "contexts": [{"name": "calico", "context": {"cluster": "local", "user": "calico"}}],
        "current-context": "calico",
    }
    return json.dumps(config, indent=2) + "\n"  # JSON is YAML


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def _mtu(env: Mapping[str, str]) -> str:
    raw = env.get("CNI_MTU", "1500").strip()
    if not raw.isdigit() or not 576 <= int(raw) <= 65535:
        raise InstallError(f"CNI_MTU: {raw!r} is not an MTU between 576 and 65535")
    return raw


def run(env: Mapping[str, str]) -> list[Path]:
    """Install everything the environment asks for; returns the files written."""
    bin_dir = Path(env.get("CNI_BIN_DIR", "/host/opt/cni/bin"))
    net_dir = Path(env.get("CNI_NET_DIR", "/host/etc/cni/net.d"))
    host_net_dir = env.get("CNI_HOST_NET_DIR", "/etc/cni/net.d").rstrip("/")
    host_python = env.get("CNI_HOST_PYTHON", "/usr/bin/python3")
    if not host_python.startswith("/"):
        raise InstallError(f"CNI_HOST_PYTHON: {host_python!r} must be an absolute path")
    conf_name = env.get("CNI_CONF_NAME", "10-calico.conflist")
    if "/" in conf_name or not conf_name.endswith((".conflist", ".conf")):
        raise InstallError(f"CNI_CONF_NAME: {conf_name!r} must be a file name ending .conflist")
    values = {
        "__KUBERNETES_NODE_NAME__": env.get("KUBERNETES_NODE_NAME")
        or env.get("NODENAME")
        or socket.gethostname(),
        "__CNI_MTU__": _mtu(env),
        "__KUBECONFIG_FILEPATH__": f"{host_net_dir}/{KUBECONFIG_NAME}",
        "__FELIX_SOCKET__": env.get("CALICO_FELIX_SOCKET", "/var/run/calico/felix.sock"),
        "__IPAM_SOCKET__": env.get("CALICO_IPAM_SOCKET", "/var/run/calico/ipam.sock"),
    }
    template = env.get("CNI_NETWORK_CONFIG") or json.dumps(DEFAULT_TEMPLATE)
    conflist = render_conflist(template, values)

    written = install_plugins(bin_dir, env.get("CNI_HOST_BIN_DIR", "/opt/cni/bin"), host_python)
    net_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = kubeconfig_text(env)
    if kubeconfig is not None:
        _write_atomic(net_dir / KUBECONFIG_NAME, kubeconfig, 0o600)
        written.append(net_dir / KUBECONFIG_NAME)
    # The conflist last: a runtime that sees it finds the plugins already in place.
    _write_atomic(net_dir / conf_name, conflist, 0o644)
    written.append(net_dir / conf_name)
    return written


def _sleep_forever() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    if argv:
        print(__doc__, file=sys.stderr)
        return 0 if argv[0] in ("-h", "--help") else 2
    env = os.environ
    try:
        written = run(env)
    except (InstallError, OSError) as exc:
        print(f"calico-install-cni: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"calico-install-cni: wrote {path}")
    if "calico-kubeconfig" not in {p.name for p in written}:
        print("calico-install-cni: no service-account token here: no kubeconfig written")
    if env.get("SLEEP", "false").lower() in ("1", "true", "yes"):
        _sleep_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
