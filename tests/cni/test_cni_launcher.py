"""The launcher cni_client/install.py writes, and what a plugin exec imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cni_client import install
from cni_client.cni import jsonio

REPO = Path(__file__).resolve().parents[2]


def test_install_writes_executable_launchers(tmp_path: Path) -> None:
    paths = install.install(tmp_path / "bin")
    assert [p.name for p in paths] == ["calico", "calico-ipam"]
    for path in paths:
        assert os.access(path, os.X_OK)
        first = path.read_text().splitlines()[0]
        assert first == f"#!{sys.executable} -SE"
    assert not [p for p in (tmp_path / "bin").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("otlp", [False, True], ids=["plain", "otlp-export"])
def test_launcher_runs_without_site_and_imports_only_builtins(tmp_path: Path, otlp: bool) -> None:
    # An ADD against no daemons still walks the whole import graph of the plugin; with an OTLP
    # endpoint (nothing listening) also the span export's.
    (path,) = install.install(tmp_path, ("calico",))
    probe = tmp_path / "probe"
    probe.write_text(
        path.read_text().replace(
            "sys.exit(main())",
            "rc = main()\nimport sys as s\ns.stderr.write(repr(sorted(s.modules)))\ns.exit(rc)",
        )
    )
    probe.chmod(0o755)
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(tmp_path),
        "PYTHONPATH": "/nonexistent",
    }
    if otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    conf = {
        "cniVersion": "1.0.0",
        "name": "n",
        "type": "calico",
        "felix_socket": str(tmp_path / "f.sock"),
        "ipam": {"socket": str(tmp_path / "i.sock")},
    }
    proc = subprocess.run(
        [str(probe)], input=jsonio.dumps(conf).encode(), env=env, capture_output=True, timeout=30
    )
    assert proc.returncode == 1 and b'"code":11' in proc.stdout
    modules = eval(proc.stderr.decode().splitlines()[-1])  # our repr of a list of names
    assert "site" not in modules
    heavy = {"json", "re", "typing", "socket", "grpc", "google", "dataclasses", "enum", "asyncio"}
    assert heavy.isdisjoint(modules), heavy & set(modules)
    assert {"cni_client.grpc_lite", "cni_client.wire", "_json", "_socket"} <= set(modules)
    exporting = {"cni_client.otlp", "cni_client.cni.span"}
    # Zero cost without an endpoint: not even the span module is loaded.
    assert exporting <= set(modules) if otlp else exporting.isdisjoint(modules)
