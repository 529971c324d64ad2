"""A lab-owned etcd that outlives the command starting it.

It runs inside the lab's network namespace, listening on the lab bridge's address (reachable
from every node) and that namespace's loopback, so the fixed ports cannot collide with anything
on the host and nothing listens in the host's own namespace. Callers must already be inside
that namespace.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop

ETCD_BINARY = os.environ.get("CALICO_LAB_ETCD", "/usr/bin/etcd")
CLIENT_PORT = 2379
PEER_PORT = 2380
START_TIMEOUT = 30.0


class EtcdError(RuntimeError):
    pass


def endpoint(address: str) -> str:
    return f"http://{address}:{CLIENT_PORT}"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as response:
            return b'"health":"true"' in response.read().replace(b" ", b"")
    except (urllib.error.URLError, OSError):
        return False


def start(state_dir: Path, address: str) -> ProcessRecord:
    """Start etcd with its data under `state_dir` and wait until it answers /health."""
    if not os.access(ETCD_BINARY, os.X_OK):
        raise EtcdError(f"{ETCD_BINARY} not found: install etcd-server (scripts/setup.sh)")
    url = endpoint(address)
    peer = f"http://127.0.0.1:{PEER_PORT}"
    argv = [
        ETCD_BINARY,
        "--name=calico-lab",
        f"--data-dir={state_dir / 'etcd-data'}",
        f"--listen-client-urls={url},{endpoint('127.0.0.1')}",
        f"--advertise-client-urls={url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=calico-lab={peer}",
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-level=warn",
    ]
    record = start_detached("etcd", argv, state_dir / "etcd.log")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if healthy(url):
            return record
        if not is_alive(record):
            break
        time.sleep(0.05)
    stop(record)
    raise EtcdError(f"etcd did not become healthy on {url}:\n{log_tail(record.log)}")
