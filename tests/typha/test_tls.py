"""Mutual TLS between clients and a real calico-typha, with certificates made in the test:
the right client certificate is served; none, a foreign CA's, a wrong common name, plain
text, or a client expecting another server name are refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from calico.typha.v1 import typha_pb2, typha_pb2_grpc
from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore
from libcalico.datastore.keys import GROUP_CALICO, resource_key
from libcalico.runtime.addresses import channel_target
from libcalico.syncer.api import InSync, Update
from libcalico.syncer.selection import create_syncer
from libcalico.syncer.typha import TyphaSyncer, TyphaTLS, channel_options
from tests.typha.typhakit import TyphaProcess, make_certs, typha_has, typha_status

HELLO = typha_pb2.ClientHello(node_name="n", syncer_type="felix")


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def tls_typha(
    tmp_path: Path, embedded_config: DatastoreConfig, certs: dict[str, Path]
) -> Iterator[TyphaProcess]:
    env = {"DATASTORE_TYPE": "embedded", "CALICO_DATASTORE_PATH": embedded_config.path}
    args = ["--ca-file", str(certs["ca.crt"]), "--cert-file", str(certs["server.crt"]),
            "--key-file", str(certs["server.key"]), "--client-cn", "typha-client"]  # fmt: skip
    proc = TyphaProcess(tmp_path, env, args=args)
    try:
        yield proc.start()
    finally:
        proc.stop()


def client_tls(certs: dict[str, Path], name: str, server: str = "typha-server") -> TyphaTLS:
    return TyphaTLS(str(certs["ca.crt"]), str(certs[f"{name}.crt"]), str(certs[f"{name}.key"]),
                    server)  # fmt: skip


async def sync_error(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status a Sync call on `channel` ends with."""
    try:
        call = typha_pb2_grpc.TyphaStub(channel).Sync(HELLO, timeout=10)
        await call.read()
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await channel.close(grace=None)
    return grpc.StatusCode.OK


async def test_mutual_tls(
    tls_typha: TyphaProcess, certs: dict[str, Path], embedded_config: DatastoreConfig
) -> None:
    from libcalico.datastore import connect

    store: Datastore = await connect(embedded_config)
    key = resource_key(GROUP_CALICO, "globalnetworkpolicies", "p1")
    await store.put(key, b'{"order": 1}')
    await store.close()
    await typha_has(tls_typha.address, "felix", 1, client_tls(certs, "client"))
    target = channel_target(tls_typha.address)
    opts = [*channel_options(), ("grpc.ssl_target_name_override", "typha-server")]
    ca = certs["ca.crt"].read_bytes()

    # The right certificate, configured the way Felix is (FELIX_TYPHA* variables).
    env = {
        "TYPHA_ADDR": tls_typha.address,
        "FELIX_TYPHACAFILE": str(certs["ca.crt"]),
        "FELIX_TYPHACERTFILE": str(certs["client.crt"]),
        "FELIX_TYPHAKEYFILE": str(certs["client.key"]),
        "FELIX_TYPHACN": "typha-server",
    }
    syncer = create_syncer(embedded_config, "good", "felix", env)
    assert isinstance(syncer, TyphaSyncer) and syncer.tls is not None
    updates = syncer.updates()  # held: the stream lives as long as the generator
    first = await asyncio.wait_for(updates.__anext__(), 10)
    assert [u.key for u in first if isinstance(u, Update)] == [key]
    assert isinstance(first[-1], InSync)

    # No client certificate: the handshake fails.
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    code = await sync_error(grpc.aio.secure_channel(target, no_cert, options=opts))
    assert code == grpc.StatusCode.UNAVAILABLE
    # Plain text against the TLS port.
    assert await sync_error(grpc.aio.insecure_channel(target)) == grpc.StatusCode.UNAVAILABLE
    # A certificate from another CA, though with the right common name.
    foreign = client_tls(certs, "foreign")
    assert await sync_error(_channel(target, foreign, opts)) == grpc.StatusCode.UNAVAILABLE
    # Signed by our CA but with a common name Typha does not allow.
    intruder = client_tls(certs, "intruder")
    code = await sync_error(_channel(target, intruder, opts))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # The client refuses a Typha whose certificate does not carry the expected name.
    wrong_server = client_tls(certs, "client", "not-typha")
    bad_opts = [*channel_options(), ("grpc.ssl_target_name_override", "not-typha")]
    code = await sync_error(_channel(target, wrong_server, bad_opts))
    assert code == grpc.StatusCode.UNAVAILABLE

    status = await typha_status(tls_typha.address, client_tls(certs, "client"))
    assert [c.node_name for c in status.clients] == ["good"]
    await syncer.close()


def _channel(target: str, tls: TyphaTLS, options: list[tuple[str, object]]) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(target, tls.credentials(), options=options)
