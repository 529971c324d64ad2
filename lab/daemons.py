"""Starting the node's Calico daemons (calico-ipamd, calico-felix, calico-bgpd) as detached
processes, and finding their programs."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop

START_TIMEOUT = 30.0


class DaemonError(RuntimeError):
    pass


PROGRAM_DIR_ENV = "CALICO_LAB_PROGRAM_DIR"


def find_program(name: str) -> str:
    """A console script: from $CALICO_LAB_PROGRAM_DIR when set (daemons of another build),
    else beside the running interpreter (the venv's bin/), else on PATH."""
    override = os.environ.get(PROGRAM_DIR_ENV)
    if override and os.access(Path(override) / name, os.X_OK):
        return str(Path(override) / name)
    beside = Path(sys.executable).parent / name
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DaemonError(f"{name} not found beside {sys.executable} or on PATH")
    return found


def socket_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def launch_daemon(
    name: str, args: Sequence[str], sock: Path, log: Path, env: Mapping[str, str]
) -> ProcessRecord:
    """Start `name ARGS...` detached, without waiting: several daemons then start at once."""
    argv = [find_program(name), *args]
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # a stale socket from a crashed run would look like a ready daemon
    return start_detached(name, argv, log, env={**os.environ, **env})


def wait_listening(record: ProcessRecord, sock: Path, timeout: float = START_TIMEOUT) -> None:
    """Wait until a launched daemon accepts connections on `sock`; on failure it is stopped
    and DaemonError carries the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists() and socket_answers(str(sock)):
            return
        if not is_alive(record):
            raise DaemonError(f"{record.name} exited during start-up:\n{log_tail(record.log)}")
        time.sleep(0.05)
    stop(record)
    raise DaemonError(
        f"{record.name} did not listen on {sock} within {timeout:.0f}s:\n{log_tail(record.log)}"
    )
