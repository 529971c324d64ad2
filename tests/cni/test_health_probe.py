"""calico-health-probe (the images' HEALTHCHECK): exit 0 only for SERVING, a reason otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cni_client.health_probe import main, probe
from tests.cni.fake_daemons import FakeDaemons


def test_serving_daemon_passes(daemons: FakeDaemons) -> None:
    daemons.set_serving(True)
    assert probe(daemons.ipam_socket) == ""
    assert main([daemons.ipam_socket]) == 0


def test_not_serving_daemon_fails_with_status(daemons: FakeDaemons) -> None:
    daemons.set_serving(False)
    problem = probe(daemons.felix_socket)
    assert "not SERVING" in problem and daemons.felix_socket in problem
    assert main([daemons.felix_socket, "--timeout", "2"]) == 1


def test_missing_socket_fails_naming_it(tmp_path: Path) -> None:
    path = str(tmp_path / "nothing.sock")
    assert path in probe(path, timeout_s=1)
    out = subprocess.run(
        [sys.executable, "-m", "cni_client.health_probe", path, "--timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("calico-health-probe: ") and path in out.stderr


def test_bad_timeout_is_a_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cni_client.health_probe", str(tmp_path / "x"), "--timeout", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2 and "--timeout" in out.stderr
