"""The calico-ipam CNI plugin as a process: netconf in, result or CNI error out."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from libcalico.datastore import Datastore
from tests.ipam.daemons import running_daemons
from tests.ipam.helpers import put_pool

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / ".venv" / "bin" / "calico-ipam"


def plugin(command: str, conf: dict[str, Any] | str, **env: str) -> tuple[int, Any]:
    stdin = conf if isinstance(conf, str) else json.dumps(conf)
    proc = subprocess.run(
        [str(PLUGIN)],
        input=stdin,
        env={"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": command, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def test_version_and_config_errors(tmp_path: Path) -> None:
    status, out = plugin("VERSION", "")
    assert status == 0 and "1.0.0" in out["supportedVersions"]
    status, out = plugin("ADD", "{not json", CNI_CONTAINERID="c1")
    assert status == 1 and out["code"] == 6
    status, out = plugin("ADD", {"cniVersion": "9.9.9", "name": "n"}, CNI_CONTAINERID="c1")
    assert status == 1 and out["code"] == 1 and "9.9.9" in out["msg"]
    conf = {"cniVersion": "1.0.0", "name": "n", "ipam": {"socket": str(tmp_path / "none.sock")}}
    status, out = plugin("ADD", conf, CNI_CONTAINERID="c1")
    assert status == 1 and out["code"] == 11 and "none.sock" in out["msg"]
    status, out = plugin("ADD", {**conf, "ipam": {"assign_ipv4": "maybe"}}, CNI_CONTAINERID="c")
    assert status == 1 and out["code"] == 7 and "maybe" in out["msg"]


async def test_dual_stack_add_del_and_requested_ip(
    datastore: Datastore, datastore_env: dict[str, str]
) -> None:
    await put_pool(datastore, "v4", "10.5.0.0/24", block_size=28)
    await put_pool(datastore, "v6", "fd00:5::/120", block_size=124)
    async with running_daemons(["node-a"], datastore_env) as (daemon,):
        conf = {
            "cniVersion": "0.3.1",
            "name": "k8s-pod-network",
            "type": "calico",
            "ipam": {
                "type": "calico-ipam",
                "socket": daemon.socket,
                "assign_ipv4": "true",
                "assign_ipv6": "true",
                "ipv4_pools": ["v4"],
            },
        }
        status, out = plugin("ADD", conf, CNI_CONTAINERID="abc", CNI_ARGS="K8S_POD_NAME=p")
        assert status == 0, out
        versions = sorted(ip["version"] for ip in out["ips"])
        assert versions == ["4", "6"]
        status, out = plugin(
            "ADD",
            {**conf, "cniVersion": "1.0.0"},
            CNI_CONTAINERID="fixed",
            CNI_ARGS="IgnoreUnknown=1;IP=10.5.0.200",
        )
        assert status == 0, out
        assert out["ips"] == [{"address": "10.5.0.200/28"}]
        # The same address again: refused, with the daemon's message.
        status, out = plugin("ADD", conf, CNI_CONTAINERID="dup", CNI_ARGS="IP=10.5.0.200")
        assert status == 1 and "already allocated" in out["msg"]
        for cid in ("abc", "fixed", "abc"):
            status, out = plugin("DEL", conf, CNI_CONTAINERID=cid)
            assert status == 0 and out is None
    store_handles = await datastore.list("/calico/ipam/v2/handle/")
    assert store_handles.items == []
