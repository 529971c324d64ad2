"""run_service(): the whole life of a daemon process, for a console-script main()."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from libcalico.logs import setup_logging
from libcalico.runtime.server import ServiceRuntime
from libcalico.runtime.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)

Setup = Callable[[ServiceRuntime], Awaitable[None]]


async def _serve(runtime: ServiceRuntime, setup: Setup | None) -> None:
    # Signals first: a SIGTERM during a slow setup (datastore connect) still stops cleanly.
    runtime.install_signal_handlers()
    if setup is not None:
        await setup(runtime)
    await runtime.serve_forever()


def run_service(runtime: ServiceRuntime, setup: Setup | None = None) -> int:
    """Set up JSON logging and tracing, run `setup(runtime)` (which adds the servicers and
    cleanup hooks, inside the event loop), serve until SIGTERM/SIGINT, and return the exit
    status: 0 after a graceful stop, 1 if setup or serving failed.
    """
    setup_logging(service_name=runtime.name)
    setup_tracing(runtime.name)
    try:
        asyncio.run(_serve(runtime, setup))
    except Exception:
        log.exception("%s failed", runtime.name)
        return 1
    finally:
        shutdown_tracing()
    return 0
