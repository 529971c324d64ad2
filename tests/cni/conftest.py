"""Fixtures for the CNI plugin tests: the installed launcher, fake daemons, a netconf."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cni_client.install import install
from tests.cni.fake_daemons import FakeDaemons, fake_daemons
from tests.cni.plugin import netconf


@pytest.fixture(scope="session")
def cni_bin() -> Iterator[Path]:
    """A CNI bin dir with the `calico` launcher, as the lab installs it."""
    d = Path(tempfile.mkdtemp(prefix="cni-bin-"))
    install(d, ("calico",))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[FakeDaemons]:
    with fake_daemons() as d:
        yield d


@pytest.fixture
def conf(daemons: FakeDaemons) -> dict[str, Any]:
    return netconf(daemons.ipam_socket, daemons.felix_socket)
