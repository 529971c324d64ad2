"""TyphaSyncer: the `Syncer` protocol over calico-typha's gRPC stream.

A consumer sees exactly what `DatastoreSyncer` would give it: one batch holding the snapshot
and InSync, then delta batches. Behind that, the client reconnects whenever the stream breaks
(Typha restarted, the client was dropped for lagging, a sequence gap) and, after the new
snapshot, emits only the difference from what it had already delivered: Updates for keys whose
value changed, Deletes for keys that are gone. So a reconnected consumer ends with exactly
Typha's (the datastore's) state, with no stale leftover and no duplicate, and never sees a
second InSync.

Liveness is gRPC (HTTP/2) keepalive on the channel: a Typha that stops answering pings is
treated as gone and the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from calico.typha.v1 import typha_pb2, typha_pb2_grpc
from libcalico.runtime.addresses import channel_target, unix_path_of
from libcalico.runtime.grpc_tracing import client_interceptors
from libcalico.runtime.service_info import package_version
from libcalico.syncer.api import Delete, InSync, SyncerUpdate, Update

log = logging.getLogger(__name__)

SYNCER_TYPES = ("felix", "bgp")
# Protocol features this client understands (the server echoes those it uses).
FEATURE_DELTA_SEQUENCES = "delta-sequences"  # DeltaBatch.sequence is consecutive per stream
FEATURE_REVISIONS = "revisions"  # Change.revision carries the datastore revision
CLIENT_FEATURES = (FEATURE_DELTA_SEQUENCES, FEATURE_REVISIONS)

# Keepalive: ping every 10 s, give up after 20 s without an answer (Calico: 10 s / 60 s).
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 20_000
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0


class TyphaProtocolError(Exception):
    """The server broke the stream's rules (wrong order, a sequence gap)."""


class TyphaNotFoundError(Exception):
    """No Typha to dial right now (its Service has no ready endpoint); retried."""


class TyphaIdentityError(Exception):
    """Typha's certificate does not carry the URI SAN this client requires; retried."""


# Where to connect next: called before every connection attempt (Kubernetes discovery).
AddressResolver = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class TyphaTLS:
    """Mutual TLS towards Typha: our CA for Typha's certificate, our own certificate and key,
    and the common name (Calico's FELIX_TYPHACN) and/or URI SAN (FELIX_TYPHAURISAN) Typha's
    certificate must carry; with both, either will do, as in Calico."""

    ca_file: str
    cert_file: str
    key_file: str
    server_name: str | None = None
    server_uri_san: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca_file).read_bytes(),
            private_key=Path(self.key_file).read_bytes(),
            certificate_chain=Path(self.cert_file).read_bytes(),
        )


def _peer_names(cert: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(URI SANs, names gRPC can verify: DNS SANs then the CN) of a getpeercert() dict."""
    sans = cert.get("subjectAltName", ())
    uris = [str(v) for k, v in sans if k == "URI"]
    names = [str(v) for k, v in sans if k == "DNS"]
    names += [str(v) for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    return uris, names


async def typha_server_name(address: str, tls: TyphaTLS, timeout_s: float = 10.0) -> str | None:
    """The name gRPC is to verify Typha's certificate against (None: the address's host).

    gRPC checks a certificate's DNS names or CN only. A required URI SAN is checked here, in a
    TLS handshake of our own with the same CA and client certificate, and the name gRPC then
    verifies is one that very certificate carries. (Between the two handshakes another
    certificate could be presented, but only one our CA signed carrying that name.)"""
    if tls.server_uri_san is None or unix_path_of(address) is not None:
        return tls.server_name
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.check_hostname = False  # the URI SAN is the identity, not the address
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.set_alpn_protocols(["h2"])
    where = f"Typha at {address}"
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port), ssl=context), timeout_s
        )
    except (OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
        raise TyphaIdentityError(f"{where}: TLS handshake failed: {exc}") from exc
    try:
        cert = writer.get_extra_info("peercert") or {}
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    uris, names = _peer_names(cert)
    if tls.server_uri_san in uris and names:
        return names[0]
    if tls.server_name is not None:
        return tls.server_name  # the CN may still match: gRPC checks it
    raise TyphaIdentityError(
        f"{where}: certificate URI SANs {uris} do not include {tls.server_uri_san!r} "
        "(FELIX_TYPHAURISAN)"
    )


def channel_options(extra: list[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # What this gRPC version actually enforces as the ping-ack deadline.
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Our own TCP connection: never share a subchannel with another client in the process.
        ("grpc.use_local_subchannel_pool", 1),
        *(extra or []),
    ]


def open_typha_channel(
    address: str, tls: TyphaTLS | None = None, tracing: bool = True, server_name: str | None = None
) -> grpc.aio.Channel:
    """A channel to Typha at host:port or a Unix socket path, with TLS when given; the
    certificate must carry `server_name` (default: the TLS settings' common name)."""
    target = channel_target(address)
    options = channel_options()
    interceptors = client_interceptors() if tracing else None
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    name = server_name or tls.server_name
    if name:
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=options, interceptors=interceptors
    )


class _Stream:
    """One connection's worth of messages, checked for order."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.server_id = ""
        self.sequence = 0

    async def read_snapshot(self) -> dict[str, tuple[bytes, int]]:
        """Hello, snapshot batches and InSync; returns the snapshot."""
        snapshot: dict[str, tuple[bytes, int]] = {}
        first = True
        async for msg in self.call:
            kind = msg.WhichOneof("payload")
            if first:
                if kind != "hello":
                    raise TyphaProtocolError(f"expected hello first, got {kind}")
                self.server_id = msg.hello.server_id
                self.sequence = msg.hello.snapshot_sequence
                first = False
            elif kind == "snapshot":
                for change in msg.snapshot.changes:
                    snapshot[change.key] = (change.value, change.revision)
            elif kind == "in_sync":
                if msg.in_sync.sequence != self.sequence:
                    raise TyphaProtocolError("in-sync sequence differs from the hello's")
                return snapshot
            else:
                raise TyphaProtocolError(f"unexpected {kind} before in-sync")
        raise TyphaProtocolError("stream ended before in-sync")

    async def deltas(self) -> AsyncIterator[typha_pb2.DeltaBatch]:
        async for msg in self.call:
            if msg.WhichOneof("payload") != "deltas":
                raise TyphaProtocolError(f"unexpected {msg.WhichOneof('payload')} after in-sync")
            batch = msg.deltas
            if batch.sequence != self.sequence + 1:
                raise TyphaProtocolError(f"sequence gap: {self.sequence} then {batch.sequence}")
            self.sequence = batch.sequence
            yield batch
        raise TyphaProtocolError("Typha ended the stream")


class TyphaSyncer:
    """Snapshot, InSync, then deltas from calico-typha; reconnects and resyncs on its own."""

    def __init__(
        self,
        address: str,
        node_name: str,
        syncer_type: str = "felix",
        *,
        tls: TyphaTLS | None = None,
        client_version: str | None = None,
        tracing: bool = True,
        resolve: AddressResolver | None = None,
    ) -> None:
        if syncer_type not in SYNCER_TYPES:
            raise ValueError(f"syncer_type: {syncer_type!r} is not one of {SYNCER_TYPES}")
        self.address = address
        self.node_name = node_name
        self.syncer_type = syncer_type
        self.tls = tls
        self.client_version = client_version or package_version()
        self._tracing = tracing
        self._resolve = resolve
        # What the consumer has been given: key -> (value, revision).
        self._delivered: dict[str, tuple[bytes, int]] = {}
        self._in_sync_sent = False
        self._channel: grpc.aio.Channel | None = None
        self._closed = False
        self.connections = 0  # successful syncs (1 + reconnects), for tests and status
        self.server_id = ""

    @property
    def delivered(self) -> dict[str, tuple[bytes, int]]:
        """What the consumer has been given so far (key -> (value, revision))."""
        return self._delivered

    def _hello(self) -> typha_pb2.ClientHello:
        return typha_pb2.ClientHello(
            node_name=self.node_name,
            syncer_type=self.syncer_type,
            client_version=self.client_version,
            features=list(CLIENT_FEATURES),
        )

    async def updates(self) -> AsyncIterator[list[SyncerUpdate]]:
        delay = RECONNECT_MIN_S
        try:
            while not self._closed:
                try:
                    async for batch in self._one_connection():
                        delay = RECONNECT_MIN_S
                        yield batch
                except (
                    grpc.aio.AioRpcError,
                    TyphaProtocolError,
                    TyphaNotFoundError,
                    TyphaIdentityError,
                ) as exc:
                    if self._closed:
                        break
                    detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc
                    log.warning("typha stream to %s broke (%s); reconnecting", self.address, detail)
                await self._close_channel()
                if self._closed:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
        finally:
            await self._close_channel()

    async def _one_connection(self) -> AsyncIterator[list[SyncerUpdate]]:
        # A fresh channel per attempt: a restarted Typha is dialled at once rather than after
        # the channel's own reconnect backoff.
        if self._resolve is not None:
            self.address = await self._resolve()
        name = await typha_server_name(self.address, self.tls) if self.tls is not None else None
        self._channel = open_typha_channel(self.address, self.tls, self._tracing, name)
        stub = typha_pb2_grpc.TyphaStub(self._channel)
        stream = _Stream(stub.Sync(self._hello()))
        snapshot = await stream.read_snapshot()
        self.connections += 1
        self.server_id = stream.server_id
        first = self._resync(snapshot)
        if first:
            yield first
        async for batch in stream.deltas():
            out = self._apply(batch)
            if out:
                yield out

    def _resync(self, snapshot: dict[str, tuple[bytes, int]]) -> list[SyncerUpdate]:
        """What to emit after a (re)connection's snapshot: all of it the first time, else the
        difference from what was delivered."""
        out: list[SyncerUpdate] = []
        for key, (value, revision) in snapshot.items():
            old = self._delivered.get(key)
            if old is None or old[0] != value:
                out.append(Update(key, value, revision))
            self._delivered[key] = (value, revision)
        gone = [key for key in self._delivered if key not in snapshot]
        for key in gone:
            del self._delivered[key]
            out.append(Delete(key))
        if not self._in_sync_sent:
            self._in_sync_sent = True
            out.append(InSync())
        return out

    def _apply(self, batch: typha_pb2.DeltaBatch) -> list[SyncerUpdate]:
        out: list[SyncerUpdate] = []
        for change in batch.changes:
            if change.deleted:
                if self._delivered.pop(change.key, None) is not None:
                    out.append(Delete(change.key, change.revision))
                continue
            old = self._delivered.get(change.key)
            self._delivered[change.key] = (change.value, change.revision)
            if old is None or old[0] != change.value:
                out.append(Update(change.key, change.value, change.revision))
        return out

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

    async def close(self) -> None:
        self._closed = True
        await self._close_channel()
        closer = getattr(self._resolve, "close", None)  # a resolver holding a connection
        if closer is not None:
            await closer()
