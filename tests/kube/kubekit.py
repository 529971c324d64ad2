"""Shared by tests/kube: who the test users are, whether the API server can run here, and the
calicoctl/kubectl/datastore helpers the tests use against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lab.apiserver import ApiServer, missing_binaries
from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, connect

NO_RIGHTS_USER = "nobody"  # has a token, and no RBAC rights
CALICOCTL = str(Path(sys.executable).parent / "calicoctl")


def kube_binaries_missing() -> str | None:
    """Why the tests here cannot run (printed when they skip), or None."""
    return missing_binaries()


def datastore_config(server: ApiServer) -> DatastoreConfig:
    return DatastoreConfig(type="kubernetes", kubeconfig=str(server.kubeconfig))


@asynccontextmanager
async def kube_store(server: ApiServer) -> AsyncIterator[Datastore]:
    """The kubernetes datastore on `server`, as the admin."""
    async with await connect(datastore_config(server)) as store:
        yield store


def calicoctl(server: ApiServer, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """calicoctl as a process with DATASTORE_TYPE=kubernetes; its stdout (stderr too when
    check is False and it failed)."""
    env = {**os.environ, "DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(server.kubeconfig)}
    proc = subprocess.run(
        [CALICOCTL, *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
    )
    if check:
        assert proc.returncode == 0, f"calicoctl {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout
    return proc.stdout + proc.stderr


def kubectl(server: ApiServer, *args: str, stdin: str | None = None) -> str:
    proc = server.kubectl(list(args), input=stdin)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def kubectl_json(server: ApiServer, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl(server, *args, "-o", "json"))
    return out


def kubectl_apply(server: ApiServer, *docs: dict[str, Any]) -> None:
    kubectl(server, "apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))


def kubectl_create(server: ApiServer, *docs: dict[str, Any]) -> None:
    """`kubectl create` (no last-applied-configuration annotation, unlike apply)."""
    kubectl(server, "create", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))
