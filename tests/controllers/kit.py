"""Test helpers: the Kubernetes API as a test drives it, and calico-kube-controllers processes.

KubeApi makes, changes and deletes objects over HTTPS with the admin token (faster than a
kubectl per call). ControllersProcess runs the real console script against a real API server
and datastore, reads its status over gRPC, and stops it by its PID (SIGTERM, SIGKILL) also
when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import grpc

from calico.controllers.v1 import controllers_pb2, controllers_pb2_grpc
from lab.apiserver import ApiServer
from libcalico.datastore import Datastore, KeyNotFoundError

PROGRAM = str(Path(sys.executable).parent / "calico-kube-controllers")
START_TIMEOUT = 30.0
# Lease timings for tests: failover in ~3 s instead of ~15 s.
FAST_LEASE = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5")

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; AssertionError naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def stored(ds: Datastore, key: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads((await ds.get(key)).value))
    except KeyNotFoundError:
        return None


async def wait_stored(
    ds: Datastore,
    key: str,
    check: Callable[[dict[str, Any] | None], Any] = bool,
    within: float = 10.0,
) -> dict[str, Any] | None:
    """Until the stored object at `key` satisfies `check` (absent is None); AssertionError
    after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        obj = await stored(ds, key)
        if check(obj):
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(f"{key}: still {obj} after {within} s")
        await asyncio.sleep(0.02)


class KubeApi:
    """Synchronous admin access to the API server."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self._ssl: ssl.SSLContext = server.ssl_context()

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.server.admin_token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._ssl) as response:
                return int(response.status), json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read() or b"{}")

    def _ok(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        status, answer = self.request(method, path, body, **kw)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer.get('message', answer)}"
        return answer

    # -- paths ----------------------------------------------------------------------------

    @staticmethod
    def path(kind: str, name: str = "", namespace: str | None = None) -> str:
        group = {
            "pods": "/api/v1",
            "namespaces": "/api/v1",
            "serviceaccounts": "/api/v1",
            "nodes": "/api/v1",
            "networkpolicies": "/apis/networking.k8s.io/v1",
            "services": "/api/v1",
            "endpointslices": "/apis/discovery.k8s.io/v1",
            "leases": "/apis/coordination.k8s.io/v1",
        }[kind]
        where = f"/namespaces/{quote(namespace)}" if namespace else ""
        tail = f"/{quote(name)}" if name else ""
        return f"{group}{where}/{kind}{tail}"

    # -- verbs ----------------------------------------------------------------------------

    def create(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = obj["metadata"].get("namespace")
        return self._ok("POST", self.path(kind, namespace=namespace), obj)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        status, answer = self.request("GET", self.path(kind, name, namespace))
        if status == 404:
            return None
        assert status == 200, answer
        return answer

    def patch(
        self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        return self._ok(
            "PATCH",
            self.path(kind, name, namespace),
            patch,
            content_type="application/merge-patch+json",
        )

    def patch_status(
        self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """A merge patch of the status subresource (a Service's load balancer, say)."""
        return self._ok(
            "PATCH",
            self.path(kind, name, namespace) + "/status",
            patch,
            content_type="application/merge-patch+json",
        )

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        status, answer = self.request("DELETE", self.path(kind, name, namespace))
        assert status in (200, 202, 404), answer

    # -- objects --------------------------------------------------------------------------

    def namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """A namespace with its `default` ServiceAccount (no controller manager makes it)."""
        meta = {"name": name, "labels": dict(labels or {})}
        self.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        self.service_account(name, "default")

    def service_account(self, namespace: str, name: str, **labels: str) -> None:
        self.create(
            "serviceaccounts",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
            },
        )

    def pod(
        self,
        namespace: str,
        name: str,
        node: str = "",
        labels: Mapping[str, str] | None = None,
        service_account: str = "default",
        ports: Sequence[tuple[str, int]] = (),
    ) -> dict[str, Any]:
        container: dict[str, Any] = {"name": "c", "image": "busybox"}
        if ports:
            container["ports"] = [{"name": n, "containerPort": p} for n, p in ports]
        spec: dict[str, Any] = {
            "containers": [container],
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,
        }
        if node:
            spec["nodeName"] = node
        return self.create(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
                "spec": spec,
            },
        )

    def node(self, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        meta = {"name": name, "labels": dict(labels or {})}
        return self.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": meta})

    def delete_pod_now(self, namespace: str, name: str) -> None:
        """Delete with no grace period: no kubelet will ever confirm a graceful one."""
        status, answer = self.request(
            "DELETE",
            self.path("pods", name, namespace),
            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
        )
        assert status in (200, 202, 404), answer


class ControllersProcess:
    """One calico-kube-controllers replica."""

    def __init__(
        self,
        workdir: Path,
        server: ApiServer,
        datastore_env: Mapping[str, str],
        name: str = "kc",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.socket = workdir / f"{name}.sock"
        self.log_path = workdir / f"{name}.log"
        self.argv = [
            PROGRAM,
            "--socket",
            str(self.socket),
            "--kubeconfig",
            str(server.kubeconfig),
            "--identity",
            name,
            *args,
        ]
        self.env = {**os.environ, **datastore_env, "LOG_LEVEL": "INFO", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllersProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        wait_for(self._answers, START_TIMEOUT, f"{self.name} to serve status")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
        try:
            self.status(timeout=0.5)
        except grpc.RpcError:
            return False
        return True

    def status(self, timeout: float = 5.0) -> controllers_pb2.ControllersStatus:
        with grpc.insecure_channel(f"unix://{self.socket}") as channel:
            stub = controllers_pb2_grpc.KubeControllersStub(channel)
            return stub.GetStatus(controllers_pb2.GetStatusRequest(), timeout=timeout)

    def wait_leading(self, timeout: float = 20.0) -> controllers_pb2.ControllersStatus:
        def leading() -> controllers_pb2.ControllersStatus | None:
            status = self.status()
            return status if status.leading and status.running else None

        return wait_for(leading, timeout, f"{self.name} to lead")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (and SIGCONT, should it be stopped), SIGKILL after `timeout`; exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            os.kill(self.proc.pid, signal.SIGCONT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
