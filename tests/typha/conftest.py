"""Fixtures for Typha tests: a running calico-typha over the parametrized datastore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.typha.typhakit import TyphaProcess


@pytest.fixture
def typha(tmp_path: Path, datastore_env: dict[str, str]) -> Iterator[TyphaProcess]:
    proc = TyphaProcess(tmp_path, datastore_env, socket=tmp_path / "typha.sock")
    try:
        yield proc.start()
    finally:
        proc.stop()
