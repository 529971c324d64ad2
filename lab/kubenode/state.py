"""The node's record of what it made, in its state directory, written as each thing exists.

state.json: the processes it started (by PID and start time), the API server's record, the
link and unreachable routes it added, timings. snapshot.json: the host before anything was
changed (hostsnap.py), written once, first, and kept until `down` has put the host back, so
a crashed `up` still leaves what `down` needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.processes import ProcessRecord

STATE_FILE = "state.json"
SNAPSHOT_FILE = "snapshot.json"
LOCK_FILE = "lock"


@dataclass
class KubeState:
    directory: Path
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    apiserver: dict[str, Any] | None = None
    link: str = ""
    unreachable: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def snapshot_path(self) -> Path:
        return self.directory / SNAPSHOT_FILE

    def save(self) -> None:
        data = {
            "processes": {k: v.to_json() for k, v in self.processes.items()},
            "apiserver": self.apiserver,
            "link": self.link,
            "unreachable": self.unreachable,
            "images": self.images,
            "timings": self.timings,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, directory: Path) -> KubeState:
        data = json.loads((directory / STATE_FILE).read_text())
        return cls(
            directory=directory,
            processes={
                str(k): ProcessRecord.from_json(v) for k, v in data.get("processes", {}).items()
            },
            apiserver=data.get("apiserver"),
            link=str(data.get("link", "")),
            unreachable=[str(c) for c in data.get("unreachable", [])],
            images=[str(i) for i in data.get("images", [])],
            timings={str(k): float(v) for k, v in data.get("timings", {}).items()},
        )

    def snapshot(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.snapshot_path.read_text())
        except FileNotFoundError:
            return None
        return data

    def save_snapshot(self, snapshot: dict[str, Any]) -> None:
        tmp = self.snapshot_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot, indent=1))
        os.replace(tmp, self.snapshot_path)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One `up`/`down` at a time on a state directory."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
