"""Fixtures for calico-lab tests: a lab state directory that is always taken down, and a lab
brought up with the real daemons.

The CLI runs as a subprocess (tests/lab/labkit.py) because it moves its main thread into the
node's namespace; the pytest process itself never leaves the host namespace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.labkit import (
    LabHandle,
    force_down,
    host_snapshot,
    make_cli,
    missing_bgp,
    missing_programs,
    require_root,
)


@pytest.fixture
def needs_services() -> None:
    require_root()
    missing = missing_programs()
    if missing:
        reason = f"calico services not available yet: {', '.join(missing)}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@pytest.fixture
def needs_bgp(needs_services: None) -> None:
    missing = missing_bgp()
    if missing:
        reason = f"BGP for a multi-node lab not available: {', '.join(missing)}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@pytest.fixture
def lab_dir(tmp_path: Path) -> Iterator[Path]:
    # Short: Unix socket paths live under it (108-byte limit).
    state_dir = Path(f"/tmp/clt{os.getpid()}-{tmp_path.name[-10:]}")
    try:
        yield state_dir
    finally:
        force_down(state_dir)


@pytest.fixture
def lab(needs_services: None, lab_dir: Path) -> Iterator[LabHandle]:
    """A node up with the embedded datastore."""
    before = host_snapshot()
    cli = make_cli(lab_dir)
    cli("up")
    yield LabHandle(lab_dir, cli, before)
