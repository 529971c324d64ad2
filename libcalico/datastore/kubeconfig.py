"""Reading a kubeconfig: the server, its CA and the credentials of the current context.

Only what the kubernetes datastore needs: a bearer token (`token` or `tokenFile`) or a client
certificate (`client-certificate`/`client-key` files), and the server's CA (`certificate-authority`
file or `-data`). Exec plugins and auth providers are refused with an error naming the field.

Inside a pod, with no KUBECONFIG and no ~/.kube/config, the pod's service account is used, as
client-go's in-cluster config does: KUBERNETES_SERVICE_HOST/PORT (which the manifests point
at the API server's real address, there being no kube-proxy), the token and CA the kubelet
mounts under /var/run/secrets/kubernetes.io/serviceaccount.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from libcalico.datastore.api import DatastoreError


@dataclass(frozen=True, slots=True)
class KubeConnection:
    server: str  # https://host:port, no trailing slash
    ssl_context: ssl.SSLContext | None  # None for plain http
    token: str | None


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _default_path() -> str:
    return os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(
        Path.home() / ".kube" / "config"
    )


def in_cluster_connection(
    env: Mapping[str, str] | None = None, account_dir: str | None = None
) -> KubeConnection:
    """The pod's own service account: KUBERNETES_SERVICE_HOST/PORT, its token and CA.

    The token is read once: the kubelet's projected tokens stay valid for a year when the API
    server extends them (its default) although the file is refreshed hourly."""
    env = os.environ if env is None else env
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    if not host:
        raise DatastoreError("in-cluster config: KUBERNETES_SERVICE_HOST is not set")
    if not port.isdigit():
        raise DatastoreError(f"in-cluster config: KUBERNETES_SERVICE_PORT {port!r} is not a port")
    directory = Path(account_dir or SERVICE_ACCOUNT_DIR)
    try:
        token = (directory / "token").read_text().strip()
        context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    except (OSError, ssl.SSLError) as error:
        raise DatastoreError(f"in-cluster config: service account {directory}: {error}") from error
    host = f"[{host}]" if ":" in host else host
    return KubeConnection(server=f"https://{host}:{port}", ssl_context=context, token=token)


def _use_in_cluster(path: str) -> bool:
    """No kubeconfig was named and none is at the default place, but this is a pod."""
    return (
        not os.environ.get("KUBECONFIG")
        and not Path(path).exists()
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path(SERVICE_ACCOUNT_DIR, "token").exists()
    )


def _named(entries: Any, name: str, what: str, path: str) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(what)
            if isinstance(body, dict):
                return body
    raise DatastoreError(f"kubeconfig {path}: {what} {name!r} is not defined")


def _relative(base: Path, value: str) -> str:
    return str(base.parent / value) if not os.path.isabs(value) else value


def load_kubeconfig(path: str | None = None) -> KubeConnection:
    """The connection of the kubeconfig's current context; DatastoreError naming what is wrong."""
    if not path:
        path = _default_path()
        if _use_in_cluster(path):
            return in_cluster_connection()
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DatastoreError(f"KUBECONFIG: cannot read {path}: {error}") from error
    if not isinstance(doc, dict):
        raise DatastoreError(f"KUBECONFIG: {path} is not a kubeconfig document")
    current = doc.get("current-context")
    if not current:
        raise DatastoreError(f"kubeconfig {path}: current-context is not set")
    context = _named(doc.get("contexts"), current, "context", path)
    cluster = _named(doc.get("clusters"), str(context.get("cluster")), "cluster", path)
    user = _named(doc.get("users"), str(context.get("user")), "user", path)
    server = str(cluster.get("server", "")).rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise DatastoreError(f"kubeconfig {path}: cluster.server {server!r} is not an http(s) URL")
    base = Path(path)
    context_ssl: ssl.SSLContext | None = None
    if server.startswith("https://"):
        context_ssl = _ssl_context(cluster, user, base)
    for unsupported in ("exec", "auth-provider"):
        if unsupported in user:
            raise DatastoreError(f"kubeconfig {path}: user.{unsupported} is not supported yet")
    token = user.get("token")
    if token is None and user.get("tokenFile"):
        token_path = _relative(base, str(user["tokenFile"]))
        try:
            token = Path(token_path).read_text().strip()
        except OSError as error:
            raise DatastoreError(f"kubeconfig {path}: user.tokenFile: {error}") from error
    return KubeConnection(server=server, ssl_context=context_ssl, token=token)


def _ssl_context(cluster: dict[str, Any], user: dict[str, Any], base: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        pem = base64.b64decode(str(cluster["certificate-authority-data"])).decode()
        context.load_verify_locations(cadata=pem)
    elif cluster.get("certificate-authority"):
        context.load_verify_locations(cafile=_relative(base, str(cluster["certificate-authority"])))
    if user.get("client-certificate-data") or user.get("client-key-data"):
        raise DatastoreError(
            f"kubeconfig {base}: user.client-certificate-data is not supported yet "
            "(use client-certificate/client-key files or a token)"
        )
    if user.get("client-certificate"):
        context.load_cert_chain(
            _relative(base, str(user["client-certificate"])),
            _relative(base, str(user.get("client-key", ""))) or None,
        )
    return context
