"""A minimal daemon on the runtime, run as a subprocess by the tests (like a console script).

Serves only what the runtime adds by itself (ServiceInfo, health, reflection) on the Unix
socket given as argv[1]; a cleanup hook writes a marker file given as argv[2], if any.
"""

from __future__ import annotations

import sys
from pathlib import Path

from libcalico.runtime import ServiceRuntime, run_service


def main() -> int:
    socket_path = sys.argv[1]
    marker = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    runtime = ServiceRuntime(
        "calico-demo", tcp=None, unix_socket=socket_path, node_name="node-1", grace_period=2.0
    )

    async def setup(rt: ServiceRuntime) -> None:
        def write_marker() -> None:
            if marker is not None:
                marker.write_text("cleaned up\n")

        rt.on_shutdown(write_marker)

    return run_service(runtime, setup)


if __name__ == "__main__":
    sys.exit(main())
