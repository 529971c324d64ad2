"""Typha as installed, on the real API server: calico-typha runs as its service account with
the certificates k8s/make-certs.sh made; a Felix-side client, as calico-node's account, finds
it through the calico-typha Service's EndpointSlice and syncs over mutual TLS; clients
without a certificate, with the wrong common name or from another CA are refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from calico.typha.v1 import typha_pb2, typha_pb2_grpc
from lab.apiserver import ApiServer
from libcalico.config import DatastoreConfig
from libcalico.runtime.addresses import channel_target
from libcalico.syncer.api import InSync, Update
from libcalico.syncer.selection import TyphaClientConfig, create_syncer
from libcalico.syncer.typha import (
    TyphaIdentityError,
    TyphaNotFoundError,
    TyphaSyncer,
    TyphaTLS,
    channel_options,
    typha_server_name,
)
from libcalico.syncer.typha_discovery import TyphaServiceResolver
from tests.k8s.k8skit import NAMESPACE, kubectl, sa_kubeconfig, site_files
from tests.typha.typhakit import TyphaProcess, make_certs

POLICY = {
    "apiVersion": "crd.projectcalico.org/v1",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "k8s-install-check"},
    "spec": {"selector": "all()", "order": 10},
}
POLICY_KEY = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/k8s-install-check"


@pytest.fixture(scope="module")
def certs(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return site_files(installed, tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def typha(
    kube_api: ApiServer,
    installed: Path,
    certs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TyphaProcess]:
    work = tmp_path_factory.mktemp("typha")
    kubectl(kube_api, "apply", "-f", "-", stdin=json.dumps(POLICY))
    env = {
        "DATASTORE_TYPE": "kubernetes",
        "KUBECONFIG": str(sa_kubeconfig(kube_api, "calico-typha", work / "kubeconfig")),
        # The Deployment's settings (k8s/typha.yaml).
        "TYPHA_CAFILE": str(certs["ca.crt"]),
        "TYPHA_SERVERCERTFILE": str(certs["typha.crt"]),
        "TYPHA_SERVERKEYFILE": str(certs["typha.key"]),
        "TYPHA_CLIENTCN": "typha-client",
        "TYPHA_CLIENTURISAN": "spiffe://calico-py/calico-system/calico-node",
    }
    # Ready (the ready file) only once every cache is in sync: each list and watch of the
    # felix and bgp syncers' kinds succeeded under calico-typha's RBAC.
    proc = TyphaProcess(work, env, socket=work / "typha.sock")
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
    assert "Forbidden" not in proc.log_tail(), proc.log_tail()


def endpoint_slice(port: int) -> dict[str, object]:
    """What the EndpointSlice controller would publish for the calico-typha Service (no
    controller-manager runs here): one ready endpoint, one not ready that must be skipped.
    The API server refuses loopback endpoints, so these are TEST-NET-1 addresses, which the
    test resolves but never dials."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "calico-typha-test",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": "calico-typha"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["192.0.2.10"], "conditions": {"ready": True}},
            {"addresses": ["192.0.2.11"], "conditions": {"ready": False}},
        ],
        "ports": [{"name": "calico-typha", "port": port, "protocol": "TCP"}],
    }


NODE_TLS_ENV = {  # as the DaemonSet sets them (k8s/calico-node.yaml), files from make-certs.sh
    "FELIX_TYPHACAFILE": "ca.crt",
    "FELIX_TYPHACERTFILE": "node.crt",
    "FELIX_TYPHAKEYFILE": "node.key",
}


async def test_node_finds_typha_through_its_service_endpoints(
    kube_api: ApiServer, installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubectl(kube_api, "apply", "-f", "-", stdin=json.dumps(endpoint_slice(5473)))
    # calico-node's account lists EndpointSlices (it reads them all: Felix load-balances).
    monkeypatch.setenv("KUBECONFIG", str(sa_kubeconfig(kube_api, "calico-node", tmp_path / "kc")))
    resolver = TyphaServiceResolver("calico-typha", NAMESPACE)
    try:
        assert await resolver.addresses() == ["192.0.2.10:5473"]
        assert await resolver() == "192.0.2.10:5473"
        missing = TyphaServiceResolver("no-such-typha", NAMESPACE)
        with pytest.raises(TyphaNotFoundError, match="no-such-typha has no ready endpoint"):
            await missing()
        await missing.close()
    finally:
        await resolver.close()


async def test_node_syncs_from_typha_over_mutual_tls(
    typha: TyphaProcess, certs: dict[str, Path]
) -> None:
    assert typha.tcp is not None
    env = {name: str(certs[file]) for name, file in NODE_TLS_ENV.items()}
    env |= {
        "FELIX_TYPHACN": "typha-server",
        "FELIX_TYPHAK8SSERVICENAME": "calico-typha",
        "FELIX_TYPHAK8SNAMESPACE": NAMESPACE,
    }
    config = TyphaClientConfig.from_env(env)
    assert config is not None and config.tls is not None
    assert (config.k8s_service, config.k8s_namespace) == ("calico-typha", NAMESPACE)
    # The address as discovery hands it over: asked again before every connection.
    asked: list[str] = []

    async def resolve() -> str:
        assert typha.tcp is not None
        asked.append(typha.tcp)
        return typha.tcp

    syncer = TyphaSyncer("", "node-1", "felix", tls=config.tls, resolve=resolve)
    updates = syncer.updates()
    try:
        received: dict[str, bytes] = {}
        while True:
            batch = await asyncio.wait_for(updates.__anext__(), 20)
            received.update((u.key, u.value) for u in batch if isinstance(u, Update))
            if any(isinstance(u, InSync) for u in batch):
                break
        assert POLICY_KEY in received
        assert asked == [typha.tcp]
    finally:
        await syncer.close()


async def _first_sync(syncer: TyphaSyncer) -> dict[str, bytes]:
    updates = syncer.updates()
    received: dict[str, bytes] = {}
    try:
        while True:
            batch = await asyncio.wait_for(updates.__anext__(), 20)
            received.update((u.key, u.value) for u in batch if isinstance(u, Update))
            if any(isinstance(u, InSync) for u in batch):
                return received
    finally:
        await syncer.close()


async def test_node_checks_typhas_uri_san(typha: TyphaProcess, certs: dict[str, Path]) -> None:
    assert typha.tcp is not None
    files = {name: str(certs[file]) for name, file in NODE_TLS_ENV.items()}
    # Only the URI SAN given (no FELIX_TYPHACN): checked, and gRPC verifies a name that very
    # certificate carries.
    env = {**files, "TYPHA_ADDR": typha.tcp,
           "FELIX_TYPHAURISAN": "spiffe://calico-py/calico-system/calico-typha"}  # fmt: skip
    syncer = create_syncer(DatastoreConfig(type="kubernetes"), "node-1", "felix", env)
    assert isinstance(syncer, TyphaSyncer) and syncer.tls is not None
    assert await typha_server_name(typha.tcp, syncer.tls) == "typha-server"
    assert POLICY_KEY in await _first_sync(syncer)
    # A Typha without the expected URI SAN is refused, saying what it carries.
    wrong = TyphaTLS(files["FELIX_TYPHACAFILE"], files["FELIX_TYPHACERTFILE"],
                     files["FELIX_TYPHAKEYFILE"], None, "spiffe://elsewhere/typha")  # fmt: skip
    with pytest.raises(TyphaIdentityError, match="do not include 'spiffe://elsewhere/typha'"):
        await typha_server_name(typha.tcp, wrong)


def test_typha_service_name_none_means_no_typha() -> None:
    env = {"FELIX_TYPHAK8SSERVICENAME": "none"}
    syncer = create_syncer(DatastoreConfig(type="kubernetes"), "node-1", "felix", env)
    assert not isinstance(syncer, TyphaSyncer)


async def _sync_error(target: str, credentials: grpc.ChannelCredentials) -> grpc.aio.AioRpcError:
    options = [*channel_options(), ("grpc.ssl_target_name_override", "typha-server")]
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        call = typha_pb2_grpc.TyphaStub(channel).Sync(
            typha_pb2.ClientHello(node_name="intruder", syncer_type="felix"), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    return caught.value


def issue_client(install: Path, directory: Path, cn: str) -> TyphaTLS:
    """A client certificate (clientAuth) with common name `cn`, from the install's CA."""
    ca = install / "site" / "ca"
    key, csr, crt, ext = (directory / f"{cn}.{s}" for s in ("key", "csr", "crt", "ext"))
    ext.write_text("extendedKeyUsage=clientAuth\n")
    for argv in (
        ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"],
        ["x509", "-req", "-in", csr, "-CA", ca / "ca.crt", "-CAkey", ca / "ca.key",
         "-CAcreateserial", "-CAserial", directory / "ca.srl", "-days", "1", "-extfile", ext,
         "-out", crt],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return TyphaTLS(str(ca / "ca.crt"), str(crt), str(key))


async def test_typha_refuses_clients_without_the_right_certificate(
    typha: TyphaProcess, installed: Path, certs: dict[str, Path], tmp_path: Path
) -> None:
    assert typha.tcp is not None
    target = channel_target(typha.tcp)
    ca = certs["ca.crt"].read_bytes()

    # No client certificate: the TLS handshake fails.
    error = await _sync_error(target, grpc.ssl_channel_credentials(root_certificates=ca))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # Typha's own certificate is for serving only (extendedKeyUsage serverAuth): refused in
    # the handshake.
    server_cert = TyphaTLS(str(certs["ca.crt"]), str(certs["typha.crt"]), str(certs["typha.key"]))
    error = await _sync_error(target, server_cert.credentials())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # A client certificate from the install's CA, but neither calico-node's name nor its URI.
    wrong_cn = issue_client(installed, tmp_path, "intruder")
    error = await _sync_error(target, wrong_cn.credentials())
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "intruder" in (error.details() or ""), error.details()
    assert "requires CN 'typha-client'" in (error.details() or ""), error.details()
    assert "not allowed" in (error.details() or ""), error.details()
    # The right name, but from another CA.
    other = make_certs(tmp_path / "other")
    foreign = TyphaTLS(str(certs["ca.crt"]), str(other["foreign.crt"]), str(other["foreign.key"]))
    error = await _sync_error(target, foreign.credentials())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # The plaintext Unix socket still serves (local, guarded by file permissions).
    assert typha.socket is not None
    async with grpc.aio.insecure_channel(f"unix://{typha.socket}") as channel:
        status = await typha_pb2_grpc.TyphaStub(channel).GetStatus(
            typha_pb2.GetStatusRequest(), timeout=5
        )
    assert {c.syncer_type for c in status.caches} == {"felix", "bgp"}
    assert all(c.in_sync for c in status.caches)
