"""The runtime every Calico daemon is built on: gRPC server, client channels, tracing.

    runtime = ServiceRuntime("calico-ipamd", tcp="127.0.0.1:0", unix_socket=path)
    runtime.add(IpamServicer(store), add_IpamServicer_to_server, "calico.ipam.v1.Ipam")
    runtime.on_shutdown(store.close)
    sys.exit(run_service(runtime))          # or, in tests: async with runtime: ...

Names are loaded lazily, so `libcalico.runtime.traceparent` (used by the light CNI plugin)
can be imported without pulling in gRPC or OpenTelemetry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from libcalico.runtime.addresses import AddressError
    from libcalico.runtime.channel import open_channel
    from libcalico.runtime.run import run_service
    from libcalico.runtime.server import ServiceRuntime
    from libcalico.runtime.tracing import setup_tracing, shutdown_tracing

_EXPORTS = {
    "AddressError": "libcalico.runtime.addresses",
    "ServiceRuntime": "libcalico.runtime.server",
    "open_channel": "libcalico.runtime.channel",
    "run_service": "libcalico.runtime.run",
    "setup_tracing": "libcalico.runtime.tracing",
    "shutdown_tracing": "libcalico.runtime.tracing",
}

__all__ = [
    "AddressError",
    "ServiceRuntime",
    "open_channel",
    "run_service",
    "setup_tracing",
    "shutdown_tracing",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
