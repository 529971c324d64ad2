"""The Typha gRPC service: one stream per client, following its cache's breadcrumbs.

Sync is registered with a pass-through response serializer: every message a client receives
is bytes prepared once (the snapshot chunks per head breadcrumb, each breadcrumb's delta
batch), so 1,000 clients cost 1,000 socket writes per change, not 1,000 encodings.

Lag: a client's lag is how many breadcrumbs exist beyond the last one it was sent and how old
the oldest of those is. A client over either limit is disconnected: by its own loop before a
write, or by the reaper when it sits blocked in a write (its transport is backed up). It
reconnects and takes a fresh snapshot; Typha never buffers for it beyond the chain itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from calico.typha.v1 import typha_pb2
from libcalico.runtime.service_info import package_version
from libcalico.syncer.typha import CLIENT_FEATURES
from services.typha.breadcrumbs import Breadcrumb
from services.typha.cache import SyncerCache
from services.typha.tls import ServerTLS

log = logging.getLogger(__name__)

SERVICE_NAME: str = typha_pb2.DESCRIPTOR.services_by_name["Typha"].full_name
REAPER_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Limits:
    max_lag_seconds: float = 60.0
    max_lag_breadcrumbs: int = 10_000
    max_connections: int = 10_000


@dataclass(eq=False)
class ClientSession:
    node_name: str
    syncer_type: str
    client_version: str
    peer: str
    cache: SyncerCache
    task: asyncio.Task[Any] | None
    connected_at: float = field(default_factory=time.monotonic)
    crumb: Breadcrumb | None = None  # the last breadcrumb sent (the snapshot's, at first)
    in_sync: bool = False
    kicked: str | None = None

    def lag(self, now: float) -> tuple[int, float]:
        """(breadcrumbs not yet sent, age of the oldest of them in seconds)."""
        crumb = self.crumb
        if crumb is None:  # still waiting for the cache: nothing owed yet
            return 0, 0.0
        behind = self.cache.head.sequence - crumb.sequence
        if behind <= 0 or not crumb.next.done():
            return 0, 0.0
        return behind, now - crumb.next.result().received


class TyphaServicer:
    def __init__(
        self,
        caches: Mapping[str, SyncerCache],
        limits: Limits = Limits(),
        tls: ServerTLS | None = None,
        open_watches: Any = lambda: 0,
    ) -> None:
        self.caches = dict(caches)
        self.limits = limits
        self.tls = tls
        self.server_id = uuid.uuid4().hex
        self.sessions: set[ClientSession] = set()
        self.lagging_disconnects = 0
        self.total_connections = 0
        self._open_watches = open_watches
        self._reaper: asyncio.Task[None] | None = None

    # --- registration: Sync writes pre-serialized bytes ---------------------------------------

    def add_to_server(self, _servicer: object, server: grpc.aio.Server) -> None:
        handlers = {
            "Sync": grpc.unary_stream_rpc_method_handler(
                self.Sync,
                request_deserializer=typha_pb2.ClientHello.FromString,
                response_serializer=None,  # the handler writes bytes
            ),
            "GetStatus": grpc.unary_unary_rpc_method_handler(
                self.GetStatus,
                request_deserializer=typha_pb2.GetStatusRequest.FromString,
                response_serializer=typha_pb2.TyphaStatus.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name="typha-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper

    # --- the stream -------------------------------------------------------------------------

    async def _check_caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self.tls is not None:
            reason = self.tls.client_allowed(context)
            if reason is not None:
                log.warning("refused %s: %s", context.peer(), reason)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    async def Sync(
        self, hello: typha_pb2.ClientHello, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self._check_caller(context)
        cache = self.caches.get(hello.syncer_type)
        if cache is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"syncer type {hello.syncer_type!r} not served (have {sorted(self.caches)})",
            )
            return
        if len(self.sessions) >= self.limits.max_connections:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many clients")
        session = ClientSession(
            hello.node_name,
            hello.syncer_type,
            hello.client_version,
            context.peer(),
            cache,
            asyncio.current_task(),
        )
        self.sessions.add(session)
        self.total_connections += 1
        log.info(
            "client %s (%s) connected from %s", hello.node_name, cache.syncer_type, session.peer
        )
        try:
            await self._stream(session, hello, context)
        except asyncio.CancelledError:
            if session.kicked is None:
                raise  # the client went away or the server is stopping
            # The reaper cancelled us: end the call with a status the client sees (a bare
            # cancellation would leave its stream open and silent).
            log.warning("dropped %s: %s", session.node_name, session.kicked)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, session.kicked)
        finally:
            self.sessions.discard(session)
            log.info("client %s disconnected", hello.node_name)

    async def _stream(
        self,
        session: ClientSession,
        hello: typha_pb2.ClientHello,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        cache = session.cache
        await cache.in_sync.wait()
        head, chunks = cache.snapshot()
        session.crumb = head
        features = [f for f in hello.features if f in CLIENT_FEATURES]
        server_hello = typha_pb2.ServerHello(
            server_version=package_version(),
            syncer_type=cache.syncer_type,
            features=features,
            server_id=self.server_id,
            snapshot_sequence=head.sequence,
            snapshot_size=len(cache.state),
        )
        await context.write(typha_pb2.SyncMessage(hello=server_hello).SerializeToString())
        for chunk in chunks:
            await context.write(chunk)
        in_sync = typha_pb2.InSync(sequence=head.sequence)
        await context.write(typha_pb2.SyncMessage(in_sync=in_sync).SerializeToString())
        session.in_sync = True
        crumb = head
        limits = self.limits
        while True:
            # shield: a waiter's cancellation (client gone) must not cancel the shared future.
            crumb = await asyncio.shield(crumb.next)
            behind = cache.head.sequence - crumb.sequence
            age = time.monotonic() - crumb.received
            if behind >= limits.max_lag_breadcrumbs or age > limits.max_lag_seconds:
                self.lagging_disconnects += 1
                reason = f"fell behind: {behind + 1} breadcrumbs, {age:.1f}s"
                log.warning("dropping %s: %s", session.node_name, reason)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
            await context.write(crumb.encoded)
            session.crumb = crumb

    async def _reap_forever(self) -> None:
        """Drop clients stuck in a write for longer than the lag limit allows."""
        while True:
            await asyncio.sleep(REAPER_INTERVAL_S)
            self.reap(time.monotonic())

    def reap(self, now: float) -> None:
        for session in list(self.sessions):
            behind, age = session.lag(now)
            too_far = behind > self.limits.max_lag_breadcrumbs
            if (too_far or age > self.limits.max_lag_seconds) and session.kicked is None:
                session.kicked = f"fell behind: {behind} breadcrumbs, {age:.1f}s"
                self.lagging_disconnects += 1
                if session.task is not None:
                    session.task.cancel()

    # --- status -----------------------------------------------------------------------------

    async def GetStatus(
        self, request: typha_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> typha_pb2.TyphaStatus:
        await self._check_caller(context)
        return self.status()

    def status(self) -> typha_pb2.TyphaStatus:
        now = time.monotonic()
        status = typha_pb2.TyphaStatus(
            server_id=self.server_id,
            datastore_watches=self._open_watches(),
            lagging_disconnects=self.lagging_disconnects,
            total_connections=self.total_connections,
        )
        for cache in self.caches.values():
            status.caches.append(
                typha_pb2.CacheStatus(
                    syncer_type=cache.syncer_type,
                    in_sync=cache.in_sync.is_set(),
                    snapshot_size=len(cache.state),
                    head_sequence=cache.head.sequence,
                    connected_clients=sum(1 for s in self.sessions if s.cache is cache),
                )
            )
        for session in self.sessions:
            behind, age = session.lag(now)
            status.clients.append(
                typha_pb2.ClientStatus(
                    node_name=session.node_name,
                    syncer_type=session.syncer_type,
                    client_version=session.client_version,
                    peer=session.peer,
                    lag_breadcrumbs=behind,
                    lag_seconds=age,
                    in_sync=session.in_sync,
                    connected_seconds=now - session.connected_at,
                )
            )
        return status
