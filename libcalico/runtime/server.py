"""ServiceRuntime: the grpc.aio server every Calico daemon runs.

It listens on loopback TCP and/or a Unix socket, serves the standard health service
(grpc.health.v1), server reflection and calico.common.v1.ServiceInfo next to the daemon's own
services, traces every RPC, and shuts down gracefully: health goes NOT_SERVING, new calls are
refused, in-flight calls get a grace period, then cleanup hooks run and the socket file goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from calico.common.v1 import service_info_pb2_grpc
from libcalico.runtime import addresses
from libcalico.runtime.grpc_tracing import TracingServerInterceptor
from libcalico.runtime.service_info import SERVICE_NAME as SERVICE_INFO_NAME
from libcalico.runtime.service_info import (
    ServiceIdentity,
    ServiceInfoServicer,
    package_version,
)

log = logging.getLogger(__name__)

S = TypeVar("S")
CleanupHook = Callable[[], Awaitable[None] | None]

DEFAULT_TCP = "127.0.0.1:0"
DEFAULT_GRACE_SECONDS = 5.0
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
OVERALL = ""  # the health service's name for the server as a whole
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# One address per server: without this gRPC sets SO_REUSEPORT and a second daemon could
# silently share (and steal half the calls of) a port already in use.
_SERVER_OPTIONS: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]


@dataclass(frozen=True)
class _Registration:
    servicer: Any
    add_fn: Callable[[Any, grpc.aio.Server], None]
    service_name: str


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise addresses.AddressError(f"TCP listen address must be host:port, got {address!r}")
    return host, int(port)


class ServiceRuntime:
    """Runs one daemon's gRPC server. Use `async with runtime:` or `await serve_forever()`.

    `tcp` is `host:port` (port 0 picks a free one, see `tcp_port`), None for no TCP;
    `unix_socket` a path, None for no socket. The ServiceInfo service is registered from
    `name`, `node_name` and `datastore_type` unless `service_info=False`.
    """

    def __init__(
        self,
        name: str,
        *,
        tcp: str | None = DEFAULT_TCP,
        unix_socket: str | os.PathLike[str] | None = None,
        node_name: str = "",
        datastore_type: str = "",
        version: str | None = None,
        grace_period: float = DEFAULT_GRACE_SECONDS,
        tracer_provider: trace.TracerProvider | None = None,
        service_info: bool = True,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),  # type: ignore[type-arg]
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if tcp is None and unix_socket is None:
            raise addresses.AddressError(f"{name}: give a TCP address, a Unix socket, or both")
        if tcp is not None:
            _split_host_port(tcp)  # fail at construction, not at start
        self.name = name
        self.tcp = tcp
        self.unix_socket = Path(unix_socket).absolute() if unix_socket is not None else None
        self.node_name = node_name
        self.datastore_type = datastore_type
        self.version = version
        self.grace_period = grace_period
        self._tracer_provider = tracer_provider
        self._service_info = service_info
        self._extra_interceptors = list(interceptors)
        self._options = [*_SERVER_OPTIONS, *options]
        self._registrations: list[_Registration] = []
        self._cleanup_hooks: list[CleanupHook] = []
        self._server: grpc.aio.Server | None = None
        self._health: Any = None  # grpc_health.v1.health.aio.HealthServicer (untyped)
        self._tcp_port: int | None = None
        self._socket_identity: tuple[int, int] | None = None
        self._started = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._signals_installed: list[signal.Signals] = []

    # --- configuration (before start) -----------------------------------------------------

    def add(
        self, servicer: S, add_fn: Callable[[S, grpc.aio.Server], None], service_name: str
    ) -> S:
        """Register a servicer: `add(MyServicer(), add_MyServicer_to_server, "pkg.v1.My")`.

        `service_name` is the fully qualified proto service name, used for health and
        reflection. Returns the servicer.
        """
        if self._server is not None:
            raise RuntimeError(f"{self.name}: add() after start()")
        if any(r.service_name == service_name for r in self._registrations):
            raise ValueError(f"{self.name}: service {service_name} registered twice")
        self._registrations.append(_Registration(servicer, add_fn, service_name))
        return servicer

    def on_shutdown(self, hook: CleanupHook) -> CleanupHook:
        """Run `hook` (async or plain) at shutdown, after in-flight RPCs; last added runs first."""
        self._cleanup_hooks.append(hook)
        return hook

    # --- what is running -------------------------------------------------------------------

    @property
    def service_names(self) -> list[str]:
        """Every service the server answers, as reflection lists them."""
        names = [r.service_name for r in self._registrations]
        if self._service_info:
            names.append(SERVICE_INFO_NAME)
        return [*names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME]

    @property
    def tcp_port(self) -> int | None:
        """The bound TCP port (after start), the real one when 0 was asked for."""
        return self._tcp_port

    @property
    def tcp_address(self) -> str | None:
        """`host:port` to dial the TCP listener (a wildcard host becomes loopback)."""
        if self.tcp is None or self._tcp_port is None:
            return None
        host, _ = _split_host_port(self.tcp)
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
        return f"{host}:{self._tcp_port}"

    @property
    def unix_address(self) -> str | None:
        """`unix:///path` for the Unix socket listener."""
        return f"unix://{self.unix_socket}" if self.unix_socket is not None else None

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def wait_started(self) -> None:
        """Until the server listens (for serve_forever() run as a task)."""
        await self._started.wait()

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.name}: already started")
        tracing = TracingServerInterceptor(self._tracer_provider)
        server = grpc.aio.server(
            interceptors=[tracing, *self._extra_interceptors],
            options=self._options,
        )
        self._server = server
        for reg in self._registrations:
            reg.add_fn(reg.servicer, server)
        if self._service_info:
            identity = ServiceIdentity(
                service_name=self.name,
                node_name=self.node_name,
                datastore_type=self.datastore_type,
                version=self.version or package_version(),
            )
            service_info_pb2_grpc.add_ServiceInfoServicer_to_server(
                ServiceInfoServicer(identity), server
            )
        # grpc-stubs describe only the sync servicer; health.aio is the public asyncio one.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(self.service_names, server)
        try:
            self._bind(server)
            await server.start()
        except BaseException:
            await server.stop(None)
            self._remove_socket()
            self._server, self._health, self._tcp_port = None, None, None
            raise
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in [OVERALL, *self.service_names]:
            await self._health.set(name, serving)
        self._started.set()
        log.info(
            "%s serving",
            self.name,
            extra={"tcp": self.tcp_address, "unix_socket": self.unix_address},
        )

    def _bind(self, server: grpc.aio.Server) -> None:
        if self.tcp is not None:
            self._tcp_port = self._add_port(server, self.tcp)
        if self.unix_socket is not None:
            path = addresses.prepare_socket_path(self.unix_socket)
            # The umask makes the socket 0660 from birth; chmod again in case it was looser.
            old_umask = os.umask(0o777 & ~addresses.SOCKET_MODE)
            try:
                self._add_port(server, f"unix:{path}")
            finally:
                os.umask(old_umask)
            os.chmod(path, addresses.SOCKET_MODE)
            self._socket_identity = addresses.socket_identity(path)

    def _add_port(self, server: grpc.aio.Server, address: str) -> int:
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's way to say the bind failed (address in use, ...)
            raise addresses.AddressError(f"{self.name}: cannot listen on {address}") from exc
        if port == 0:
            raise addresses.AddressError(f"{self.name}: cannot listen on {address}")
        return port

    async def set_serving(self, service_name: str, serving: bool) -> None:
        """Report a service (or OVERALL, "") as SERVING / NOT_SERVING to health checks."""
        if self._health is None:
            raise RuntimeError(f"{self.name}: set_serving() before start()")
        status = health_pb2.HealthCheckResponse
        await self._health.set(service_name, status.SERVING if serving else status.NOT_SERVING)

    def request_stop(self, reason: str = "requested") -> None:
        """Ask serve_forever() to shut down (what SIGTERM/SIGINT do). Safe to call twice."""
        if not self._stop_requested.is_set():
            log.info("%s stopping: %s", self.name, reason)
        self._stop_requested.set()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown; idempotent. `grace` defaults to the runtime's grace_period."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._stop_requested.set()
        try:
            if self._server is not None:
                # NOT_SERVING first, so load balancers and clients stop sending new calls.
                await self._health.enter_graceful_shutdown()
                await self._server.stop(self.grace_period if grace is None else grace)
            for hook in reversed(self._cleanup_hooks):
                try:
                    result = hook()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("%s: cleanup hook %r failed", self.name, hook)
        finally:
            self._remove_socket()
            self._stopped.set()
            log.info("%s stopped", self.name)

    def _remove_socket(self) -> None:
        if self.unix_socket is not None:
            addresses.remove_socket(self.unix_socket, self._socket_identity)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT request a graceful stop (main thread of the loop only)."""
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            if sig in self._signals_installed:
                continue
            try:
                loop.add_signal_handler(sig, self.request_stop, sig.name)
            except (NotImplementedError, RuntimeError, ValueError):
                log.debug("cannot handle %s here (not the main thread?)", sig.name)
                continue
            self._signals_installed.append(sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals_installed:
            loop.remove_signal_handler(sig)
        self._signals_installed.clear()

    async def serve_forever(self, handle_signals: bool = True) -> None:
        """Start (if needed), serve until request_stop() or a signal, then stop gracefully."""
        if handle_signals:
            self.install_signal_handlers()
        try:
            if self._server is None:
                await self.start()
            await self._stop_requested.wait()
        finally:
            with contextlib.suppress(RuntimeError):
                self._remove_signal_handlers()
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
