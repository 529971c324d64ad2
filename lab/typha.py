"""A lab-owned calico-typha between the datastore and every node's Felix.

Like the lab's etcd it runs inside the lab network's namespace, listening on the bridge's
address (reachable from every node, nothing listening in the host's namespace). Callers must
already be inside that namespace. Felix finds it through TYPHA_ADDR.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from lab.daemons import find_program
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop

PORT = 5473  # Calico's Typha port
START_TIMEOUT = 30.0
READY_FILE = "typha.ready"
LOG_FILE = "typha.log"


class TyphaError(RuntimeError):
    pass


def address(host: str) -> str:
    return f"{host}:{PORT}"


def start(state_dir: Path, host: str, datastore_env: Mapping[str, str]) -> ProcessRecord:
    """Start calico-typha and wait until it is in sync with the datastore (its ready file)."""
    ready = state_dir / READY_FILE
    ready.unlink(missing_ok=True)
    argv = [
        find_program("calico-typha"),
        "--listen",
        address(host),
        "--syncer-types",
        "felix,bgp",
        "--ready-file",
        str(ready),
        "--nodename",
        "lab-typha",
    ]
    record = start_detached("calico-typha", argv, state_dir / LOG_FILE, env=dict(datastore_env))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if ready.exists():
            try:
                json.loads(ready.read_text())
            except ValueError:
                pass  # written but not complete yet
            else:
                return record
        if not is_alive(record):
            break
        time.sleep(0.05)
    stop(record)
    raise TyphaError(f"calico-typha did not get in sync:\n{log_tail(record.log)}")


def status(addr: str, timeout: float = 5.0) -> dict[str, object]:
    """Typha's own view: its clients (node, syncer, lag, in sync) and datastore watches.

    The caller must be in a namespace that reaches `addr` (a node's)."""
    import grpc

    from calico.typha.v1 import typha_pb2, typha_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        reply = typha_pb2_grpc.TyphaStub(channel).GetStatus(
            typha_pb2.GetStatusRequest(), timeout=timeout
        )
    return {
        "address": addr,
        "datastore_watches": reply.datastore_watches,
        "clients": [
            {
                "node": c.node_name,
                "syncer_type": c.syncer_type,
                "in_sync": c.in_sync,
                "lag_breadcrumbs": c.lag_breadcrumbs,
            }
            for c in reply.clients
        ],
    }
