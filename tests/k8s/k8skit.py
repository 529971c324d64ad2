"""Shared by tests/k8s: the manifests made installable in a scratch copy (certificates from
k8s/make-certs.sh), kubeconfigs for the service accounts, and `kubectl auth can-i`."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from lab.apiserver import ApiServer

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "k8s"
ETCD_OVERLAY_DIR = REPO / "k8s-etcd"
NAMESPACE = "calico-system"


def prepare_install(server: ApiServer, directory: Path, *make_certs_args: str) -> Path:
    """k8s/ copied to `directory` (without any site/ of the checkout) with site/ made by
    make-certs.sh for `server` (and `make_certs_args`); the copy's path."""
    target = directory / "k8s"
    shutil.copytree(K8S_DIR, target, ignore=shutil.ignore_patterns("site"))
    run = subprocess.run(
        [
            str(target / "make-certs.sh"),
            "--out",
            str(target / "site"),
            "--apiserver",
            f"{server.address}:{server.port}",
            *make_certs_args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"make-certs.sh: {run.stdout}{run.stderr}"
    return target


def prepare_etcd_install(
    server: ApiServer, directory: Path, etcd_certs: Path, etcd_endpoints: str
) -> Path:
    """The etcd overlay (k8s-etcd/) next to a prepared k8s/ copy in `directory`, with the etcd
    Secret made by make-certs.sh from `etcd_certs` (ca.crt, client.crt, client.key) and
    `etcd_endpoints` in its calico-config patch; the overlay copy's path."""
    prepare_install(
        server,
        directory,
        "--etcd-ca", str(etcd_certs / "ca.crt"),
        "--etcd-cert", str(etcd_certs / "client.crt"),
        "--etcd-key", str(etcd_certs / "client.key"),
    )  # fmt: skip
    overlay = directory / "k8s-etcd"
    shutil.copytree(ETCD_OVERLAY_DIR, overlay)
    config = overlay / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["data"]["etcd_endpoints"] = etcd_endpoints
    config.write_text(yaml.safe_dump(doc))
    return overlay


def kubectl(server: ApiServer, *args: str, stdin: str | None = None) -> str:
    proc = server.kubectl(list(args), input=stdin)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def rendered(install: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k` would send, as kubectl's kustomize renders them."""
    text = subprocess.run(
        [str(REPO / ".venv" / "bin" / "kubectl"), "kustomize", str(install)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def account(name: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{name}"


def can_i(
    server: ApiServer,
    sa: str,
    verb: str,
    resource: str,
    namespace: str | None = None,
    subresource: str = "",
) -> bool:
    """`kubectl auth can-i` for the service account `sa` (impersonated by the admin)."""
    args = ["auth", "can-i", verb, resource, f"--as={account(sa)}"]
    args += [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    if subresource:
        args.append(f"--subresource={subresource}")
    proc = server.kubectl(args)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {answer} {proc.stderr}"
    return answer == "yes"


def sa_kubeconfig(server: ApiServer, sa: str, path: Path) -> Path:
    """A kubeconfig with a fresh token of the service account `sa` (TokenRequest)."""
    token = kubectl(server, "create", "token", sa, "-n", NAMESPACE, "--duration=1h").strip()
    ca = base64.b64encode(server.ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server.url, "certificate-authority-data": ca}}
        ],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "c", "user": sa}}],
        "current-context": sa,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def site_files(install: Path, directory: Path) -> dict[str, Path]:
    """The certificates make-certs.sh put into site/typha-certs.yaml, as files:
    ca.crt, typha.crt, typha.key, node.crt, node.key."""
    directory.mkdir(parents=True, exist_ok=True)
    names = {"calico-typha-tls": "typha", "calico-node-typha-tls": "node"}
    out: dict[str, Path] = {}
    for doc in yaml.safe_load_all((install / "site" / "typha-certs.yaml").read_text()):
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            out["ca.crt"] = directory / "ca.crt"
            out["ca.crt"].write_text(doc["data"]["ca.crt"])
            continue
        for key, suffix in (("tls.crt", "crt"), ("tls.key", "key")):
            path = directory / f"{names[name]}.{suffix}"
            path.write_bytes(base64.b64decode(doc["data"][key]))
            path.chmod(0o600)
            out[path.name] = path
    return out
