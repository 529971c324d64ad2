"""Client side: a grpc.aio channel to a Calico daemon, traced like the servers are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc.aio
from opentelemetry import trace

from libcalico.runtime.addresses import channel_target
from libcalico.runtime.grpc_tracing import client_interceptors


def open_channel(
    target: str,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An insecure channel to `unix:///path`, `unix:/path`, a bare socket path or host:port.

    Every call on it gets a CLIENT span and carries the W3C traceparent to the server.
    Call from inside the event loop that will use it; close it (`async with`) when done.
    """
    return grpc.aio.insecure_channel(
        channel_target(target),
        options=list(options),
        interceptors=client_interceptors(tracer_provider),
    )
