"""calico-ipamd as real processes on real Unix sockets, sharing one datastore (both kinds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from libcalico.datastore import Datastore
from services.ipam.check import run_check
from tests.ipam.daemons import (
    SHARED_POOL_NODES,
    assign,
    kill_a_daemon_mid_allocation,
    race_for_a_shared_pool,
    running_daemons,
)
from tests.ipam.helpers import put_node, put_pool, put_workload_endpoint

REPO = Path(__file__).resolve().parents[2]


def calicoctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calicoctl.main", "ipam", *args],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_errors_are_grpc_status_codes(
    datastore: Datastore, datastore_env: dict[str, str]
) -> None:
    await put_pool(datastore, "tiny", "10.1.0.0/30", block_size=30)
    async with (
        running_daemons(["node-a"], datastore_env) as (daemon,),
        daemon.channel() as channel,
    ):
        stub = ipam_pb2_grpc.IpamStub(channel)
        got = await assign(stub, "h1", v4=4)
        assert sorted(got) == [f"10.1.0.{i}/30" for i in range(4)]
        with pytest.raises(grpc.aio.AioRpcError) as exhausted:
            await assign(stub, "h2")
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "tiny" in (exhausted.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.AssignIP(ipam_pb2.AssignIPRequest(ip="not-an-ip", handle_id="h3"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not-an-ip" in (bad.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as v6:
            await assign(stub, "h4", v4=0, v6=1)
        assert v6.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "IPv6" in (v6.value.details() or "")
        released = await stub.ReleaseByHandle(ipam_pb2.ReleaseByHandleRequest(handle_id="h1"))
        assert len(released.released) == 4


async def test_four_daemons_share_one_address_space(
    datastore: Datastore, datastore_env: dict[str, str]
) -> None:
    for node in SHARED_POOL_NODES:
        await put_node(datastore, node)
    await race_for_a_shared_pool(datastore, datastore_env)
    report = await run_check(datastore)
    assert report.duplicates == [] and report.out_of_block == []
    assert report.handle_mismatches == [] and report.missing_node_blocks == []


async def test_sigkill_mid_allocation_leaves_no_duplicates_and_check_finds_leaks(
    datastore: Datastore, datastore_env: dict[str, str], tmp_path: Path
) -> None:
    for node in ("node-a", "node-b"):
        await put_node(datastore, node)
    acknowledged, leaked_ip = await kill_a_daemon_mid_allocation(datastore, datastore_env)
    ips = [ip for _, ip in acknowledged]
    report = await run_check(datastore)
    assert report.duplicates == [] and report.out_of_block == []
    assert report.handle_mismatches == []

    # Pods that got an answer are live; anything else allocated is a leak.
    for handle, ip in acknowledged:
        cid = handle.rsplit(".", 1)[1]
        await put_workload_endpoint(datastore, "default", f"pod-{cid}", "node-a", cid, ip)

    report_file = tmp_path / "report.json"
    checked = calicoctl(datastore_env, "check", "-o", "json", "--report", str(report_file))
    assert checked.returncode == 0, checked.stderr
    report_json = json.loads(checked.stdout)
    leaks = {leak["ip"] for leak in report_json["leaks"]}
    assert leaked_ip in leaks
    assert not leaks & set(ips)
    assert report_json["duplicates"] == []

    released = calicoctl(datastore_env, "release", "--from-report", str(report_file))
    assert released.returncode == 0, released.stderr
    assert f"released {len(leaks)} of {len(leaks)}" in released.stdout
    after = await run_check(datastore)
    assert after.leaks == [] and after.problem_count == 0
    assert after.summary["allocations"] == len(ips)


async def test_calicoctl_show_release_and_configure(
    datastore: Datastore, datastore_env: dict[str, str]
) -> None:
    await put_pool(datastore, "pool", "10.4.0.0/24", block_size=28)
    async with running_daemons(["node-a"], datastore_env) as (daemon,), daemon.channel() as ch:
        ips = await assign(ipam_pb2_grpc.IpamStub(ch), "shown", v4=2)
    shown = calicoctl(datastore_env, "show", "--show-blocks", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["pools"] == [
        {
            "name": "pool",
            "cidr": "10.4.0.0/24",
            "blockSize": 28,
            "disabled": False,
            "size": 256,
            "inUse": 2,
            "blocks": 1,
        }
    ]
    (block,) = data["blocks"]
    assert block["affinity"] == "host:node-a"
    assert sorted(a["ip"] for a in block["allocations"]) == sorted(i.split("/")[0] for i in ips)
    assert {a["handle"] for a in block["allocations"]} == {"shown"}
    table = calicoctl(datastore_env, "show")
    assert "10.4.0.0/24" in table.stdout and table.returncode == 0

    ip = ips[0].split("/")[0]
    assert calicoctl(datastore_env, "release", "--ip", ip).returncode == 0
    twice = calicoctl(datastore_env, "release", "--ip", ip)
    assert twice.returncode == 1 and "not assigned" in twice.stderr

    conf = calicoctl(datastore_env, "configure", "--strictaffinity=true")
    assert conf.returncode == 0, conf.stderr
    bad = calicoctl(datastore_env, "configure", "--strictaffinity=maybe")
    assert bad.returncode != 0
    assert calicoctl(datastore_env, "configure").returncode == 1  # nothing to change
    negative = calicoctl(datastore_env, "configure", "--max-blocks-per-host=-1")
    assert negative.returncode == 1 and "maxBlocksPerHost" in negative.stderr, negative.stderr
    limit = calicoctl(datastore_env, "configure", "--max-blocks-per-host=2")
    assert limit.returncode == 0 and "maxBlocksPerHost=2" in limit.stdout, limit.stderr
    stored = json.loads(
        (
            await datastore.get("/calico/resources/v3/projectcalico.org/ipamconfigurations/default")
        ).value
    )
    assert stored["spec"]["strictAffinity"] is True
    assert stored["spec"]["maxBlocksPerHost"] == 2
