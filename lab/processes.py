"""Detached processes the lab starts, and stopping them by the PID it recorded.

A PID alone can be reused after a process dies, so every record also keeps the process's start
time (field 22 of /proc/<pid>/stat): the lab signals a PID only while that still matches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class ProcessRecord:
    name: str
    pid: int
    start_time: int  # clock ticks since boot, from /proc/<pid>/stat
    argv: list[str]
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            argv=[str(a) for a in data.get("argv", [])],
            log=str(data.get("log", "")),
        )


def process_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(record: ProcessRecord) -> bool:
    return process_start_time(record.pid) == record.start_time


def start_detached(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start a process in its own session with stdout/stderr appended to `log_path`."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    # The lab CLI exits long before its daemons, which init then adopts; `stop` reaps the
    # ones that die while we still run.
    start = process_start_time(proc.pid)
    return ProcessRecord(
        name, proc.pid, start if start is not None else -1, list(argv), str(log_path)
    )


def reap(pid: int) -> None:
    """Collect our own child if it has exited (ignored for processes that are not ours)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(record: ProcessRecord, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; True once the recorded process is gone."""
    if not is_alive(record):
        reap(record.pid)
        return True
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(record.pid)
        if not is_alive(record):
            return True
        time.sleep(0.02)
    if is_alive(record):
        os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        reap(record.pid)
        if not is_alive(record):
            return True
        time.sleep(0.02)
    return False


def log_tail(path: str | Path, limit: int = 2000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-limit:]
    except OSError:
        return ""
