"""Datastore and node configuration shared by every service and calicoctl.

Environment variables as Calico's: DATASTORE_TYPE (embedded | etcdv3 | kubernetes),
ETCD_ENDPOINTS (comma-separated URLs), ETCD_CA_CERT_FILE / ETCD_CERT_FILE / ETCD_KEY_FILE
(client TLS to etcd), CALICO_DATASTORE_PATH (the embedded SQLite file), NODENAME. Command-line
flags override the environment (see `add_datastore_arguments`).

etcd TLS, checked when DATASTORE_TYPE is etcdv3 (an empty variable counts as unset, as in
Calico's manifests, which fill them from a ConfigMap):
- every endpoint https:// (TLS) or every one http:// (plain); a mix is refused;
- https:// trusts ETCD_CA_CERT_FILE, else the system's CA bundle (as Calico's Go client does);
  with neither it is an error naming ETCD_CA_CERT_FILE;
- ETCD_CERT_FILE and ETCD_KEY_FILE (the client certificate, for etcd's --client-cert-auth)
  come together or not at all;
- a TLS file with http:// endpoints is refused: the operator meant TLS and would not get it;
- every file must be readable PEM, or the error names its variable.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DATASTORE_TYPES = ("embedded", "etcdv3", "kubernetes")
DEFAULT_DATASTORE_PATH = "/var/lib/calico/calico.db"
DEFAULT_ETCD_ENDPOINTS = "http://127.0.0.1:2379"


class ConfigError(ValueError):
    """Bad configuration; the message names the variable or flag."""


ETCD_TLS_VARIABLES = ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE")


def etcd_endpoint_scheme(endpoints: Sequence[str]) -> str:
    """'http' or 'https', the one scheme of every endpoint (none given = http)."""
    schemes = set()
    for endpoint in endpoints:
        scheme = urlsplit(endpoint).scheme if "://" in endpoint else "http"
        if scheme not in ("http", "https"):
            raise ConfigError(
                f"ETCD_ENDPOINTS: {endpoint!r}: scheme {scheme!r}; expected http:// or https://"
            )
        schemes.add(scheme)
    if len(schemes) > 1:
        raise ConfigError(
            f"ETCD_ENDPOINTS: {','.join(endpoints)} mixes http:// and https:// endpoints; "
            "use https:// for all of them (or http:// for all)"
        )
    return schemes.pop() if schemes else "http"


def system_ca_bundle() -> str | None:
    """The system's CA bundle (honours SSL_CERT_FILE), or None when there is none."""
    cafile: str | None = ssl.get_default_verify_paths().cafile
    return cafile


def read_pem(variable: str, path: str) -> bytes:
    """The PEM file `path` names, or a ConfigError naming `variable`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{variable}: {path} is not a PEM file")
    return data


@dataclass(frozen=True)
class EtcdTLSFiles:
    """Client TLS to etcd: the CA to trust (None = the system's bundle) and, for mutual TLS,
    the client certificate and key."""

    ca_cert_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def check(self) -> None:
        """Raise ConfigError, naming the variable, unless every file is there and usable."""
        self.load()

    def load(self) -> tuple[bytes, bytes | None, bytes | None]:
        """(CA bundle, client certificate, client key) as PEM bytes; read on every (re)connect
        so that rotated files are picked up."""
        if (self.cert_file is None) != (self.key_file is None):
            given, missing = (
                ("ETCD_CERT_FILE", "ETCD_KEY_FILE")
                if self.cert_file
                else ("ETCD_KEY_FILE", "ETCD_CERT_FILE")
            )
            raise ConfigError(f"{missing}: not set but {given} is; a client certificate needs both")
        ca_file = self.ca_cert_file
        if ca_file is None:
            ca_file = system_ca_bundle()
            if ca_file is None:
                raise ConfigError(
                    "ETCD_CA_CERT_FILE: not set and the system has no CA bundle; "
                    "https:// etcd endpoints need a CA to check the server against"
                )
        ca = read_pem("ETCD_CA_CERT_FILE", ca_file)
        cert = read_pem("ETCD_CERT_FILE", self.cert_file) if self.cert_file else None
        key = read_pem("ETCD_KEY_FILE", self.key_file) if self.key_file else None
        return ca, cert, key


def etcd_tls_from_env(env: Mapping[str, str], endpoints: Sequence[str]) -> EtcdTLSFiles | None:
    """The checked TLS settings for `endpoints` (None: plain http); see the module doc."""
    files = {name: (env.get(name) or "").strip() or None for name in ETCD_TLS_VARIABLES}
    if etcd_endpoint_scheme(endpoints) == "http":
        given = [name for name, value in files.items() if value]
        if given:
            raise ConfigError(
                f"{given[0]}: set, but ETCD_ENDPOINTS are plain http:// "
                f"({','.join(endpoints)}); use https:// endpoints for TLS, or unset it"
            )
        return None
    tls = EtcdTLSFiles(*files.values())
    tls.check()
    return tls


@dataclass(frozen=True)
class DatastoreConfig:
    type: str = "embedded"
    path: str = DEFAULT_DATASTORE_PATH
    etcd_endpoints: tuple[str, ...] = (DEFAULT_ETCD_ENDPOINTS,)
    kubeconfig: str | None = None
    # etcd client TLS (https:// endpoints); None = plain http.
    etcd_tls: EtcdTLSFiles | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DatastoreConfig:
        env = os.environ if env is None else env
        dtype = env.get("DATASTORE_TYPE", "embedded").strip() or "embedded"
        if dtype not in DATASTORE_TYPES:
            raise ConfigError(
                f"DATASTORE_TYPE: unknown datastore type {dtype!r}; "
                f"expected one of {', '.join(DATASTORE_TYPES)}"
            )
        endpoints = tuple(
            e.strip()
            for e in env.get("ETCD_ENDPOINTS", DEFAULT_ETCD_ENDPOINTS).split(",")
            if e.strip()
        )
        etcd_tls = None
        if dtype == "etcdv3":
            if not endpoints:
                raise ConfigError("ETCD_ENDPOINTS: no endpoint given for the etcdv3 datastore")
            etcd_tls = etcd_tls_from_env(env, endpoints)
        return cls(
            type=dtype,
            path=env.get("CALICO_DATASTORE_PATH", DEFAULT_DATASTORE_PATH),
            etcd_endpoints=endpoints,
            kubeconfig=env.get("KUBECONFIG"),
            etcd_tls=etcd_tls,
        )

    def etcd_env(self) -> dict[str, str]:
        """ETCD_ENDPOINTS and the TLS variables, to hand this etcd to a child process."""
        env = {"ETCD_ENDPOINTS": ",".join(self.etcd_endpoints)}
        tls = self.etcd_tls
        if tls is not None:
            for name, value in zip(
                ETCD_TLS_VARIABLES, (tls.ca_cert_file, tls.cert_file, tls.key_file), strict=True
            ):
                if value:
                    env[name] = value
        return env

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, env: Mapping[str, str] | None = None
    ) -> DatastoreConfig:
        """Environment first, then any flag given on the command line."""
        env = dict(os.environ if env is None else env)
        if getattr(args, "datastore_type", None):
            env["DATASTORE_TYPE"] = args.datastore_type
        if getattr(args, "datastore_path", None):
            env["CALICO_DATASTORE_PATH"] = args.datastore_path
        if getattr(args, "etcd_endpoints", None):
            env["ETCD_ENDPOINTS"] = args.etcd_endpoints
        for name in ETCD_TLS_VARIABLES:
            flag = getattr(args, name.lower(), None)
            if flag:
                env[name] = flag
        return cls.from_env(env)


def add_datastore_arguments(parser: argparse.ArgumentParser, default: object = None) -> None:
    group = parser.add_argument_group("datastore (flags override the environment)")
    group.add_argument(
        "--datastore-type",
        choices=DATASTORE_TYPES,
        default=default,
        help="overrides DATASTORE_TYPE",
    )
    group.add_argument("--datastore-path", default=default, help="overrides CALICO_DATASTORE_PATH")
    group.add_argument("--etcd-endpoints", default=default, help="overrides ETCD_ENDPOINTS")
    group.add_argument(
        "--etcd-ca-cert-file",
        default=default,
        help="CA to check etcd's certificate against (overrides ETCD_CA_CERT_FILE; https:// "
        "endpoints without it trust the system's CA bundle)",
    )
    group.add_argument(
        "--etcd-cert-file",
        default=default,
        help="client certificate for etcd (overrides ETCD_CERT_FILE; needs --etcd-key-file)",
    )
    group.add_argument(
        "--etcd-key-file", default=default, help="its private key (overrides ETCD_KEY_FILE)"
    )


def node_name(flag: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """--nodename, else NODENAME, else the hostname (as Calico does)."""
    env = os.environ if env is None else env
    return flag or env.get("NODENAME") or socket.gethostname()
