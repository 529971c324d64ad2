"""The plugin against the real calico-ipamd (embedded datastore in a temp dir) and the fake
Felix: addresses come from the real pool, DEL and a rolled-back ADD give them back."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from lab import objects
from tests.cni.fake_daemons import FakeDaemons
from tests.cni.plugin import CONTAINER_ID, base_env, netconf, run_plugin

REPO = Path(__file__).resolve().parents[2]
POOL = "10.123.0.0/16"
HANDLE = f"k8s-pod-network.{CONTAINER_ID}"


@pytest.fixture
def ipamd() -> Iterator[str]:
    work = Path(tempfile.mkdtemp(prefix="cni-ipamd-"))
    store = {"type": "embedded", "path": str(work / "calico.db")}

    async def seed() -> None:
        async with objects.resource_client(store) as client:
            await client.apply_all([objects.ippool("p", POOL), objects.node("node-1")], "apply")

    asyncio.run(seed())
    sock = work / "ipam.sock"
    log = (work / "ipamd.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.ipam.main", "--socket", str(sock), "--nodename", "node-1"],
        cwd=REPO,
        env={**os.environ, **objects.datastore_env(store), "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                work / "ipamd.log"
            ).read_text()
            time.sleep(0.05)
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def held(sock: str, handle: str = HANDLE) -> list[str]:
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        reply = ipam_pb2_grpc.IpamStub(ch).GetAllocations(
            ipam_pb2.GetAllocationsRequest(handle_id=handle), timeout=10
        )
    # Bare addresses (the proto leaves the prefix length open).
    return [a.split("/")[0] for a in reply.ips]


def conf_for(ipamd: str, daemons: FakeDaemons) -> dict[str, Any]:
    return netconf(ipamd, daemons.felix_socket)


def test_add_check_del_with_real_ipam(cni_bin: Path, ipamd: str, daemons: FakeDaemons) -> None:
    conf = conf_for(ipamd, daemons)
    run = run_plugin(cni_bin, base_env("ADD", cni_bin), conf)
    assert run.rc == 0, run.stdout
    result = run.json()
    (ip,) = result["ips"]
    assert ip["address"].startswith("10.123.") and ip["address"].endswith("/32")
    assert held(ipamd) == [ip["address"].split("/")[0]]
    conf["prevResult"] = result
    assert run_plugin(cni_bin, base_env("CHECK", cni_bin), conf).rc == 0
    for _ in range(2):
        assert run_plugin(cni_bin, base_env("DEL", cni_bin), conf).rc == 0
        assert held(ipamd) == []


def test_rollback_releases_in_real_ipam(cni_bin: Path, ipamd: str, daemons: FakeDaemons) -> None:
    daemons.state.fail["SetupEndpoint"] = (grpc.StatusCode.UNAVAILABLE, "not in sync")
    err = run_plugin(cni_bin, base_env("ADD", cni_bin), conf_for(ipamd, daemons)).error
    assert err["code"] == 11
    assert held(ipamd) == []


def test_status_and_gc_with_real_ipam(cni_bin: Path, ipamd: str, daemons: FakeDaemons) -> None:
    conf = conf_for(ipamd, daemons)
    assert run_plugin(cni_bin, base_env("STATUS", cni_bin), conf).rc == 0
    for cid in ("keep", "drop"):
        env = base_env("ADD", cni_bin, CNI_CONTAINERID=cid, CNI_ARGS=f"K8S_POD_NAME={cid}")
        assert run_plugin(cni_bin, env, conf).rc == 0
    conf["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    assert run_plugin(cni_bin, base_env("GC", cni_bin), conf).rc == 0
    assert len(held(ipamd, "k8s-pod-network.keep")) == 1
    assert held(ipamd, "k8s-pod-network.drop") == []


def test_ipam_rejection_maps_to_cni_error(cni_bin: Path, ipamd: str, daemons: FakeDaemons) -> None:
    conf = conf_for(ipamd, daemons)
    conf["ipam"]["ipv4_pools"] = ["no-such-pool"]
    err = run_plugin(cni_bin, base_env("ADD", cni_bin), conf).error
    assert err["code"] in (7, 101), err  # INVALID_ARGUMENT or RESOURCE_EXHAUSTED, named
    assert "no-such-pool" in err["msg"] or "calico-ipamd" in err["msg"]
    assert held(ipamd) == [] and daemons.state.calls == []
