"""Datastore and node configuration shared by every service and calicoctl.

Environment variables as Calico's: DATASTORE_TYPE (embedded | etcdv3 | kubernetes),
ETCD_ENDPOINTS (comma-separated URLs), CALICO_DATASTORE_PATH (the embedded SQLite file),
NODENAME. Command-line flags override the environment (see `add_datastore_arguments`).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

DATASTORE_TYPES = ("embedded", "etcdv3", "kubernetes")
DEFAULT_DATASTORE_PATH = "/var/lib/calico/calico.db"
DEFAULT_ETCD_ENDPOINTS = "http://127.0.0.1:2379"


class ConfigError(ValueError):
    """Bad configuration; the message names the variable or flag."""


@dataclass(frozen=True)
class DatastoreConfig:
    type: str = "embedded"
    path: str = DEFAULT_DATASTORE_PATH
    etcd_endpoints: tuple[str, ...] = (DEFAULT_ETCD_ENDPOINTS,)
    kubeconfig: str | None = None
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
        if dtype == "etcdv3" and not endpoints:
            raise ConfigError("ETCD_ENDPOINTS: no endpoint given for the etcdv3 datastore")
        return cls(
            type=dtype,
            path=env.get("CALICO_DATASTORE_PATH", DEFAULT_DATASTORE_PATH),
            etcd_endpoints=endpoints,
            kubeconfig=env.get("KUBECONFIG"),
        )

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


def node_name(flag: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """--nodename, else NODENAME, else the hostname (as Calico does)."""
    env = os.environ if env is None else env
    return flag or env.get("NODENAME") or socket.gethostname()
